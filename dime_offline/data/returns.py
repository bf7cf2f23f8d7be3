"""Discounted Monte-Carlo returns-to-go per episode, vectorised.

Calibrated conservative critics (the Cal-QL idea) clamp the conservative penalty from below by the
value of the behaviour policy, estimated per transition by the discounted return-to-go

    G_t = r_t + gamma r_{t+1} + ... + gamma^(T-1-t) r_{T-1} (+ gamma^(T-t) * tail)

of the episode the transition belongs to (T = episode length).

Episode ends
------------
* **terminated** episodes are exact: nothing follows a true terminal state, the tail is 0.
* **truncated** episodes (time limit, end of a historian batch, data gap, or data that simply stops)
  were cut: the rewards after the cut are unknown. ``truncation`` chooses the tail value:

  - ``"zero"`` (default): treat the cut as the end, i.e. the return of the observed rewards only.
    This is what the Cal-QL reference code and CORL's Cal-QL do for D4RL/Minari data, so numbers
    stay comparable with theirs. Rows near the cut are biased towards zero; with non-negative
    rewards the estimate is a lower bound of the true return-to-go, which is the direction a
    *lower* bound for calibration tolerates.
  - ``"repeat_last_reward"``: assume the last observed reward continues for ever, tail =
    r_{T-1} / (1 - gamma). Closer to the truth for steady-state processes (a plant running at a
    fixed operating point, locomotion at cruise speed); requires ``gamma < 1``.
  - ``"lower"``: the lower of the two tails, min(0, r_{T-1} / (1 - gamma)). Calibration needs a
    *lower* estimate of the behaviour's value, and which of the two is lower depends on the
    rewards' sign: with positive rewards it is the zero tail (the Cal-QL reference), with negative
    rewards (costs, Pendulum, most process rewards) the zero tail sits far *above* the truth (on
    the shipped Pendulum sample by 202 on average, against a mean |return| of 312), so the
    repeated reward is taken. Requires ``gamma < 1``.

:func:`discounted_horizon` gives, per row, sum_{k>=1} gamma^k over the steps the value still
counts after it: what a per-step quantity (the soft value's entropy term) adds up to, discounted.

Algorithm
---------
The returns satisfy the linear recurrence ``G_t = x_t + a_t * G_{t+1}`` with ``a_t = gamma`` inside
an episode and ``a_t = 0`` on its last row (so nothing leaks across episodes). It is solved with a
log-depth parallel scan in float64 (``ceil(log2(longest episode))`` whole-array numpy passes, no
per-row Python), which also makes episodes that span Parquet record batches a non-issue: the scan
runs once over the concatenated rewards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

TruncationTail = Literal["zero", "repeat_last_reward", "lower"]
TRUNCATION_TAILS: tuple[str, ...] = ("zero", "repeat_last_reward", "lower")


def episode_ends_from_ids(episode_id: np.ndarray) -> np.ndarray:
    """(N,) bool marking each episode's last row, given (N,) episode ids sorted by episode."""
    n = episode_id.shape[0]
    ends = np.empty(n, dtype=bool)
    if n:
        np.not_equal(episode_id[1:], episode_id[:-1], out=ends[:-1])
        ends[-1] = True
    return ends


@dataclass(frozen=True)
class LoggedEpisodes:
    """Where each logged episode lies in the data, how long it ran and how it ended, with its return.

    Fine-tuning compares the pretrained policy's evaluation with them (``trainers/handover.py``).
    """

    starts: np.ndarray
    """(E,) int64 first row of each episode."""
    lengths: np.ndarray
    """(E,) int64 number of transitions."""
    terminated: np.ndarray
    """(E,) bool, True where the episode ended in a true terminal state (else it was truncated or cut)."""
    returns: np.ndarray
    """(E,) float64 sum of each episode's rewards."""

    @classmethod
    def from_rows(cls, reward: np.ndarray, episode_end: np.ndarray, terminated: np.ndarray) -> LoggedEpisodes:
        """From (N,) per-row rewards, episode-end marks (:func:`episode_ends_from_ids`) and termination flags."""
        last = np.flatnonzero(episode_end)
        if not len(last):
            return cls(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0))
        starts = np.concatenate([[0], last[:-1] + 1]).astype(np.int64)
        return cls(starts, last - starts + 1, terminated[last].astype(bool), np.add.reduceat(reward, starts, dtype=np.float64))

    def best_return(self, reward: np.ndarray, horizon: int) -> float | None:
        """The best return a logged episode earned in its first ``horizon`` steps, over the episodes that
        terminated or ran at least that long (a fragment cut earlier leaves out rewards an episode of that
        length would have had). ``reward``: the (N,) per-row rewards these episodes index. None when no
        episode qualifies."""
        complete = self.terminated | (self.lengths >= horizon)
        if not complete.any():
            return None
        cumulative = np.concatenate([[0.0], np.cumsum(reward, dtype=np.float64)])
        starts = self.starts[complete]
        stops = starts + np.minimum(self.lengths[complete], horizon)
        return float((cumulative[stops] - cumulative[starts]).max())


def discounted_returns_to_go(
    reward: np.ndarray,
    episode_end: np.ndarray,
    terminated: np.ndarray,
    gamma: float,
    *,
    truncation: TruncationTail = "zero",
) -> np.ndarray:
    """Per-row discounted return-to-go within each episode.

    Args:
        reward: (N,) rewards, rows sorted by (episode, step).
        episode_end: (N,) bool, True on the last row of every episode (the last row of the
            array must be True: an episode cannot continue past the data).
        terminated: (N,) bool, True where the episode ended in a true terminal state; an
            ``episode_end`` row that is not terminated counts as truncated.
        gamma: discount factor in [0, 1].
        truncation: tail value of truncated episodes, see the module docstring.

    Returns:
        (N,) float64 returns-to-go.
    """
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must lie in [0, 1], got {gamma}")
    if truncation not in TRUNCATION_TAILS:
        raise ValueError(f"truncation must be one of {TRUNCATION_TAILS}, got {truncation!r}")
    n = reward.shape[0]
    if episode_end.shape != (n,) or terminated.shape != (n,):
        raise ValueError(
            f"reward, episode_end and terminated must all have shape ({n},);"
            f" got {episode_end.shape} and {terminated.shape}"
        )
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if not episode_end[-1]:
        raise ValueError("the last row must end an episode (episode_end[-1] is False)")

    value = reward.astype(np.float64)  # always a fresh array: the scan updates it in place
    if truncation != "zero":
        if gamma >= 1.0:
            raise ValueError(f"truncation={truncation!r} needs gamma < 1 (the tail would be infinite)")
        cut = episode_end & ~terminated.astype(bool, copy=False)
        if truncation == "lower":
            cut &= value < 0  # a non-negative last reward keeps the zero tail, the lower of the two
        # G_{T-1} = r + gamma * r / (1 - gamma) = r / (1 - gamma)
        value[cut] /= 1.0 - gamma

    coef = np.where(episode_end, 0.0, gamma)
    # Hillis-Steele scan for G_t = value_t + coef_t * G_{t+1}: after the pass with offset d,
    # value_t holds the return over rows [t, t + 2d) and coef_t the discount across that span
    # (0 once the span reaches the episode's end; the last row is an end, so spans running past
    # the data are closed too). Stop as soon as no span is still open.
    offset = 1
    while coef.any():
        head = slice(0, n - offset)
        value[head] += coef[head] * value[offset:]
        coef[head] *= coef[offset:]
        offset *= 2
    return value


def discounted_horizon(episode_end: np.ndarray, terminated: np.ndarray, gamma: float) -> np.ndarray:
    """Per row t, sum_{k>=1} gamma^k over the steps after t that a soft value still counts.

    In a terminated episode of length T that is sum_{k=1}^{T-1-t} gamma^k (0 on the last row). A
    truncated episode's value runs on past the cut (a critic bootstraps through truncations), so its
    rows get the infinite sum gamma / (1 - gamma); with ``gamma == 1`` they get the finite sum
    instead. A per-step quantity c that is the same at every step then adds c * horizon to a value.
    """
    ones = np.ones(episode_end.shape[0], dtype=np.float64)
    tail = "repeat_last_reward" if gamma < 1.0 else "zero"
    return discounted_returns_to_go(ones, episode_end, terminated, gamma, truncation=tail) - 1.0


def value_support(
    returns: np.ndarray, reward: np.ndarray, gamma: float, *, margin: float = 0.25, terminated: np.ndarray | None = None,
    hold_rewards: bool = True,
) -> tuple[float, float]:
    """A critic support [v_min, v_max] for values of this data, with a margin.

    The core range covers the returns-to-go and the value of holding the lowest and the highest
    logged reward for ever, r / (1 - gamma) (the range any policy's value stays in while its rewards
    stay in the logged range; with ``gamma == 1`` the returns alone). 0 is always inside (a
    terminal step's value). Each end then moves out by ``margin`` times the core's width: room for
    policies better or worse than the logged ones and for the soft value's entropy term.

    With ``terminated`` (the rows whose step ends its episode) a terminal step's reward counts once,
    as it is earned: the ends are the other rewards held for ever plus the most extreme terminal
    reward once. Without it a rare terminal penalty sets them (a -112 interlock trip among rewards
    of -13 and above: -11 200 at gamma 0.99 instead of -1 400).

    ``hold_rewards=False`` leaves the held rewards out: the core is the returns' range alone.
    """
    if returns.size == 0 or reward.size == 0:
        raise ValueError("value_support needs at least one return and one reward")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    low, high = min(float(np.min(returns)), 0.0), max(float(np.max(returns)), 0.0)
    if hold_rewards and gamma < 1.0:
        ends = reward[terminated] if terminated is not None else reward[:0]
        ongoing = reward[~terminated] if terminated is not None else reward
        once_low, once_high = min(float(np.min(ends, initial=0.0)), 0.0), max(float(np.max(ends, initial=0.0)), 0.0)
        held_low = min(float(np.min(ongoing, initial=0.0)), 0.0) / (1.0 - gamma)
        held_high = max(float(np.max(ongoing, initial=0.0)), 0.0) / (1.0 - gamma)
        low, high = min(low, held_low + once_low), max(high, held_high + once_high)
    width = max(high - low, 1e-6)
    return low - margin * width, high + margin * width
