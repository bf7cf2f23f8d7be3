"""Synthetic canonical datasets and reference computations shared by the replay-store tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dime_offline.data.schema import DatasetMetadata, TransitionData


def build_transitions(
    lengths: Sequence[int],
    terminated_episodes: Sequence[bool] | None = None,
    *,
    obs_dim: int = 3,
    action_dim: int = 2,
    action_low: float | None = -2.0,
    action_high: float | None = 3.0,
    seed: int = 0,
) -> TransitionData:
    """Schema-valid episodes of the given lengths with continuous next_obs -> obs chains.

    ``obs[:, 0]`` holds the global row index, so a sampled row can be traced back to its source.
    Episodes end terminated where ``terminated_episodes`` says so, truncated otherwise.
    """
    rng = np.random.default_rng(seed)
    lengths = list(lengths)
    n = int(sum(lengths))
    ends_terminated = list(terminated_episodes) if terminated_episodes is not None else [False] * len(lengths)
    episode_id = np.repeat(np.arange(len(lengths), dtype=np.int64) * 3 + 5, lengths)
    step = np.concatenate([np.arange(k, dtype=np.int32) for k in lengths]) if n else np.zeros(0, np.int32)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    obs[:, 0] = np.arange(n, dtype=np.float32)
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    terminated = np.zeros(n, dtype=bool)
    truncated = np.zeros(n, dtype=bool)
    end_rows = np.cumsum(lengths) - 1
    for row, is_terminal in zip(end_rows, ends_terminated):
        next_obs[row] = rng.normal(size=obs_dim).astype(np.float32)
        (terminated if is_terminal else truncated)[row] = True
    low = -1.0 if action_low is None else action_low
    high = 1.0 if action_high is None else action_high
    action = rng.uniform(low, high, size=(n, action_dim)).astype(np.float32)
    metadata = DatasetMetadata(
        action_low=None if action_low is None else [action_low] * action_dim,
        action_high=None if action_high is None else [action_high] * action_dim,
    )
    return TransitionData(
        episode_id=episode_id, step=step, obs=obs, action=action,
        reward=rng.normal(size=n).astype(np.float32), next_obs=next_obs,
        terminated=terminated, truncated=truncated, metadata=metadata,
    )


def direct_returns_to_go(
    reward: np.ndarray, lengths: Sequence[int], terminated_episodes: Sequence[bool], gamma: float, tail: str
) -> np.ndarray:
    """Per-episode reverse loop in plain Python floats: the reference the vectorised code must match."""
    out = np.zeros(len(reward), dtype=np.float64)
    start = 0
    for length, is_terminal in zip(lengths, terminated_episodes):
        # Value of what follows the episode's last row: nothing after a terminal state; after a cut,
        # nothing ("zero"), the last reward for ever ("repeat_last_reward") or the lower of the two ("lower").
        last = float(reward[start + length - 1])
        following = 0.0 if is_terminal or tail == "zero" else last / (1.0 - gamma)
        if tail == "lower":
            following = min(following, 0.0)
        for row in reversed(range(start, start + length)):
            following = float(reward[row]) + gamma * following
            out[row] = following
        start += length
    return out
