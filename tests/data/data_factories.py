"""Builders and comparisons shared by the adapter tests in tests/data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dime_offline.data.schema import DatasetMetadata, TransitionData

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-random-tiny.parquet"
"""The Parquet sample shipped in datasets/."""


def make_data(
    lengths: Sequence[int],
    ends: Sequence[str] | None = None,
    *,
    obs_dim: int = 3,
    action_dim: int = 2,
    seed: int = 0,
    episode_ids: Sequence[int] | None = None,
    metadata: DatasetMetadata | None = None,
) -> TransitionData:
    """Continuous canonical data: one observation chain per episode, last row flagged by ``ends``.

    ``ends[i]`` is "terminated" or "truncated" (default: alternate, starting with terminated).
    Actions lie in [-1, 1]; observations are a random walk.
    """
    rng = np.random.default_rng(seed)
    ends = list(ends) if ends is not None else ["terminated" if i % 2 == 0 else "truncated" for i in range(len(lengths))]
    ids = list(episode_ids) if episode_ids is not None else list(range(len(lengths)))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("episode_id", "step", "obs", "action", "reward",
                                                          "next_obs", "terminated", "truncated")}
    for ep, length, end in zip(ids, lengths, ends):
        chain = np.cumsum(rng.standard_normal((length + 1, obs_dim)), axis=0).astype(np.float32)
        flag = np.zeros(length, bool)
        flag[-1] = True
        parts["episode_id"].append(np.full(length, ep, np.int64))
        parts["step"].append(np.arange(length, dtype=np.int32))
        parts["obs"].append(chain[:-1])
        parts["next_obs"].append(chain[1:])
        parts["action"].append(rng.uniform(-1, 1, (length, action_dim)).astype(np.float32))
        parts["reward"].append(rng.standard_normal(length).astype(np.float32))
        parts["terminated"].append(flag if end == "terminated" else np.zeros(length, bool))
        parts["truncated"].append(flag if end == "truncated" else np.zeros(length, bool))
    return TransitionData(
        **{k: np.concatenate(v) for k, v in parts.items()},
        metadata=metadata or DatasetMetadata(action_low=[-1.0] * action_dim, action_high=[1.0] * action_dim),
    )


def episode_rank(episode_id: np.ndarray) -> np.ndarray:
    """Episode ids replaced by their order of appearance (0, 1, ...): adapters that renumber compare equal."""
    starts = np.r_[True, episode_id[1:] != episode_id[:-1]]
    return np.cumsum(starts) - 1


def assert_same_transitions(a: TransitionData, b: TransitionData, *, same_ids: bool = True) -> None:
    """Every transition and flag equal, dtypes too; episode ids equal, or equal up to renumbering."""
    assert len(a) == len(b)
    if same_ids:
        np.testing.assert_array_equal(a.episode_id, b.episode_id)
    else:
        np.testing.assert_array_equal(episode_rank(a.episode_id), episode_rank(b.episode_id))
    for name in ("step", "obs", "action", "reward", "next_obs", "terminated", "truncated"):
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
