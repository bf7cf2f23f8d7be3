"""Decide which grid steps become transitions, where episodes end, and why.

Inputs are per-grid-step masks (all (K+1,) arrays); the output is a :class:`EpisodePlan`: the grid
index of every transition's observation (its ``next_obs`` is the following grid step), the
terminated/truncated flags, each episode's end reason, and a disposition for every grid step so
the report's step accounting adds up exactly:

``grid_steps == transitions + final_states + sum(dropped.values())``

A transition k -> k+1 exists when step k has a usable state and action, is not tripped, and its
interval [t_k, t_{k+1}) has a batch id and an allowed mode (batch and mode are read over the action
interval, like actions), and either

* step k+1 has a usable state and is not tripped (the transition continues), or
* a terminal condition becomes true at k+1 (it terminates; the state at k+1 may be incomplete).

Consecutive transitions form one episode unless the batch id, the mode or the fixed window changes
between them; the shared grid step is then the last next_obs of one episode and the first obs of
the next, so no transition is lost at a boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REASON_ORDER = ("terminal", "end_of_data", "batch_end", "mode_change", "gap", "window")
"""End reasons, most specific first (a terminal reason is written 'terminal:<tag>')."""


@dataclass
class StepMasks:
    """Per-grid-step facts the plan is made from (all (K+1,) arrays)."""

    state_ok: np.ndarray
    """bool: every state feature (and auxiliary/reward feature) is valid or imputed."""
    action_ok: np.ndarray
    """bool: every action is valid."""
    tripped: np.ndarray
    """bool: some terminal condition holds."""
    trip_name: np.ndarray
    """int: index of the first terminal condition that holds (-1 when none)."""
    batch: np.ndarray | None = None
    """int batch code over each step's interval (-1: no batch id), or None without a batch tag."""
    mode: np.ndarray | None = None
    """int mode code over each step's interval (-1: unknown), or None without a mode tag."""
    mode_ok: np.ndarray | None = None
    """bool: the mode is one of the allowed modes."""
    window: np.ndarray | None = None
    """int fixed-window index, or None without windows."""
    reward_ok: np.ndarray | None = None
    """bool: the reward column (read at the step that closes an interval) is valid."""


@dataclass
class EpisodePlan:
    """Which grid steps become transitions, grouped into episodes."""

    rows: np.ndarray
    """(N,) int64 grid index of each transition's obs (next_obs is rows + 1)."""
    episode_id: np.ndarray
    """(N,) int64."""
    step: np.ndarray
    """(N,) int32."""
    terminated: np.ndarray
    """(N,) bool."""
    truncated: np.ndarray
    """(N,) bool."""
    end_reasons: list[str] = field(default_factory=list)
    """One per episode, in episode order."""
    dispositions: dict[str, int] = field(default_factory=dict)
    """'transition', 'final_state' and 'dropped:<reason>' -> number of grid steps."""
    short_episodes: int = 0
    """Episodes dropped for having fewer than min_transitions transitions."""
    invalid_steps: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    """(K+1,) bool: grid steps dropped as 'invalid_state' or 'invalid_action' (for the per-tag audit)."""
    gap_ends: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Grid index of the last obs of each episode that ended with a 'gap'."""


def plan_episodes(masks: StepMasks, terminal_names: list[str], *, min_transitions: int = 1) -> EpisodePlan:
    """Build the episode plan (see the module docstring)."""
    n = len(masks.state_ok)
    empty = np.zeros(0, np.int64)
    if n < 2:
        disp, invalid = _dispositions(masks, np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool))
        return EpisodePlan(empty, empty, empty.astype(np.int32), empty.astype(bool), empty.astype(bool),
                           [], disp, 0, invalid)
    tripped = masks.tripped
    base = masks.state_ok & masks.action_ok & ~tripped
    split = np.zeros(n - 1, bool)
    if masks.batch is not None:
        base &= masks.batch >= 0
        split |= masks.batch[1:] != masks.batch[:-1]
    if masks.mode is not None:
        assert masks.mode_ok is not None
        base &= masks.mode_ok
        split |= masks.mode[1:] != masks.mode[:-1]
    if masks.window is not None:
        split |= masks.window[1:] != masks.window[:-1]
    cont = base[:-1] & masks.state_ok[1:] & ~tripped[1:]
    if masks.reward_ok is not None:
        cont &= masks.reward_ok[1:]
    term = base[:-1] & tripped[1:]
    exists = cont | term

    # Transition k starts an episode unless transition k-1 exists, continues into it, and no
    # batch/mode/window change separates them.
    link = np.zeros(n - 1, bool)  # link[k]: transitions k and k+1 are in one episode
    link[:-1] = exists[:-1] & exists[1:] & ~term[:-1] & ~split[:-1]
    starts = exists.copy()
    starts[1:] &= ~link[:-1]
    ends = exists & ~link

    start_idx = np.flatnonzero(starts)
    end_idx = np.flatnonzero(ends)
    assert len(start_idx) == len(end_idx)
    lengths = end_idx - start_idx + 1
    keep_ep = lengths >= min_transitions
    kept = np.zeros(n - 1, bool)
    for s, e in zip(start_idx[keep_ep].tolist(), end_idx[keep_ep].tolist()):
        kept[s:e + 1] = True
    dropped_short = np.zeros(n, bool)
    for s, e in zip(start_idx[~keep_ep].tolist(), end_idx[~keep_ep].tolist()):
        dropped_short[s:e + 2] = True

    start_idx, end_idx, lengths = start_idx[keep_ep], end_idx[keep_ep], lengths[keep_ep]
    rows = np.flatnonzero(kept).astype(np.int64)
    episode_id = np.repeat(np.arange(len(start_idx), dtype=np.int64), lengths)
    step = (rows - np.repeat(start_idx, lengths)).astype(np.int32)
    terminated = term[rows] & np.isin(rows, end_idx)
    truncated = np.isin(rows, end_idx) & ~terminated
    # The first transition at or after each step (n - 1: none), for labelling ends at changeovers.
    next_exists = np.minimum.accumulate(np.where(exists, np.arange(n - 1), n - 1)[::-1])[::-1]
    reasons = [_end_reason(int(k), n, masks, exists, term, terminal_names, next_exists) for k in end_idx.tolist()]

    is_obs = np.zeros(n, bool)
    is_obs[rows] = True
    is_final = np.zeros(n, bool)
    is_final[rows + 1] = True
    is_final &= ~is_obs
    disp, invalid = _dispositions(masks, is_obs, is_final, dropped_short)
    gap_ends = np.array([k for k, r in zip(end_idx.tolist(), reasons) if r == "gap"], np.int64)
    return EpisodePlan(rows, episode_id, step, terminated, truncated, reasons, disp, int((~keep_ep).sum()),
                       invalid, gap_ends)


def _end_reason(
    k: int, n: int, m: StepMasks, exists: np.ndarray, term: np.ndarray, terminal_names: list[str],
    next_exists: np.ndarray,
) -> str:
    nxt = k + 1
    if term[k]:
        i = int(m.trip_name[nxt])
        return f"terminal:{terminal_names[i]}" if 0 <= i < len(terminal_names) else "terminal"
    if nxt == n - 1:
        return "end_of_data"
    if m.batch is not None:
        # Data often stops during a changeover while the batch tag still shows the old id: the
        # episode ended with its batch when the data comes back under another one.
        resume = int(next_exists[nxt]) if nxt < n - 1 else n - 1
        if m.batch[nxt] != m.batch[k] or (resume < n - 1 and m.batch[resume] != m.batch[k]):
            return "batch_end"
    if m.mode is not None and m.mode[nxt] != m.mode[k]:
        return "mode_change"
    if exists[nxt]:
        return "window"
    return "gap"


def _dispositions(
    m: StepMasks, is_obs: np.ndarray, is_final: np.ndarray, dropped_short: np.ndarray,
) -> tuple[dict[str, int], np.ndarray]:
    """Grid steps per disposition, and the mask of steps dropped for invalid states or actions."""
    n = len(m.state_ok)
    invalid = np.zeros(n, bool)
    out = {"transition": int(is_obs.sum()), "final_state": int(is_final.sum())}
    rest = ~is_obs & ~is_final
    reasons: list[tuple[str, np.ndarray]] = [("tripped", m.tripped)]
    if m.mode_ok is not None:
        reasons.append(("out_of_mode", ~m.mode_ok))
    if m.batch is not None:
        reasons.append(("no_batch", m.batch < 0))
    reasons += [
        ("invalid_state", ~m.state_ok),
        ("invalid_action", ~m.action_ok),
        ("short_episode", dropped_short),
        ("boundary", np.ones(n, bool)),
    ]
    for name, mask in reasons:
        hit = rest & mask
        if hit.any():
            out[f"dropped:{name}"] = int(hit.sum())
            if name in ("invalid_state", "invalid_action"):
                invalid |= hit
        rest &= ~hit
    return out, invalid
