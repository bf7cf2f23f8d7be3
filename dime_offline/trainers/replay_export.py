"""Export the online transitions of a replay store as a canonical dataset.

This is how a D4RL-style ``medium-replay`` dataset is made: every transition an online run
collected, in the order it collected them, written as canonical Parquet. The store's online ring
keeps no episode ids, so episodes are rebuilt from the ``terminated``/``truncated`` flags, which
the online trainer records exactly as gymnasium reports them:

* an episode ends on a row flagged ``terminated`` or ``truncated``;
* the run's last, unfinished episode (the budget or the stop rule cut it) is marked ``truncated``
  on its last row, as ``dime-offline collect`` does;
* when the ring has wrapped, its oldest retained rows belong to an episode whose start was
  overwritten; those rows up to that episode's end are dropped, so every exported episode starts
  at its true first step.

Actions leave the store in [-1, 1] and are written back in environment units (the schema's rule).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dime_offline.data.actions import unscale_action
from dime_offline.data.parquet import write_parquet
from dime_offline.data.replay import ReplayStore
from dime_offline.data.schema import TransitionData
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import DataError
from dime_offline.trainers.collect import env_dataset_metadata


def online_slots_in_order(store: ReplayStore) -> np.ndarray:
    """(n,) ring slot indices of the stored online rows, oldest first."""
    if store.online_added <= store.online_capacity:
        return np.arange(store.online_size, dtype=np.int64)
    cursor = store.online_cursor
    return np.concatenate([np.arange(cursor, store.online_capacity), np.arange(cursor)]).astype(np.int64)


def online_transitions(
    store: ReplayStore,
    spaces: SpaceSpec,
    *,
    env_id: str | None = None,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
) -> TransitionData:
    """The store's online transitions as canonical :class:`TransitionData` (see the module docstring).

    Args:
        store: a store whose online ring was filled by an online run (offline rows are ignored).
        spaces: the env's spaces; its action bounds map the stored [-1, 1] actions back to env units.
        env_id: gymnasium id written into the metadata (with its D4RL reference returns, if known).
        source: free-text provenance for the metadata.
        extra: more facts for ``metadata.extra`` (e.g. the run config).

    Returns:
        N transitions (N <= ``store.online_size``), episodes numbered from 0.

    Raises:
        DataError: the ring holds no complete episode start (it is empty, or it wrapped inside
            an episode longer than the ring).
    """
    rows = store.offline_size + online_slots_in_order(store)
    terminated = store.terminated[rows].cpu().numpy().astype(bool)
    truncated = store.truncated[rows].cpu().numpy().astype(bool)
    first = 0
    if store.online_added > store.online_capacity:
        ends = np.flatnonzero(terminated | truncated)
        if len(ends) == 0 or ends[0] + 1 >= len(rows):
            raise DataError(
                f"the online ring ({store.online_capacity} rows) wrapped inside one episode;"
                " no episode start is left to export"
            )
        first = int(ends[0]) + 1
    rows, terminated, truncated = rows[first:], terminated[first:], truncated[first:]
    n = len(rows)
    if n == 0:
        raise DataError("the replay store holds no online transitions to export")
    truncated[-1] = not terminated[-1]  # the run stopped inside this episode (or it ended there anyway)

    done = terminated | truncated
    episode_id = np.concatenate([[0], np.cumsum(done[:-1])]).astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(done[:-1]) + 1])
    step = (np.arange(n) - starts[episode_id]).astype(np.int32)

    low = np.asarray(spaces.action_low, dtype=np.float64)
    high = np.asarray(spaces.action_high, dtype=np.float64)
    index = lambda t: t[rows].cpu().numpy()  # noqa: E731
    action = np.clip(unscale_action(index(store.action).astype(np.float64), low, high), low, high).astype(np.float32)
    metadata = env_dataset_metadata(spaces, env_id, source=source, extra={**(extra or {}), "dropped_wrapped_rows": first})
    return TransitionData(
        episode_id=episode_id,
        step=step,
        obs=index(store.obs).astype(np.float32),
        action=action,
        reward=index(store.reward).astype(np.float32),
        next_obs=index(store.next_obs).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        metadata=metadata,
    )


def write_online_replay(
    store: ReplayStore,
    spaces: SpaceSpec,
    path: str | Path,
    *,
    env_id: str | None = None,
    source: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Validate :func:`online_transitions` and write them as canonical Parquet, atomically."""
    data = online_transitions(store, spaces, env_id=env_id, source=source, extra=extra)
    data.validate(file=str(path))
    return write_parquet(data, path)
