"""In-memory sources: pandas DataFrames and numpy arrays -> canonical transitions.

A DataFrame may hold vectors as array-valued columns (``obs``, ``action``, ``next_obs``: one list
or array per row) or as wide named columns (``obs.<name>``, ``action.<name>``,
``next_obs.<name>``), the form :meth:`TransitionData.to_wide` produces. Either way it goes through
the same Arrow conversion as Parquet files, so both sources follow identical rules.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from dime_offline.data.arrow import batch_to_transitions, resolve_layout
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.errors import SchemaError

FROM_ARRAYS_FIELDS = (
    "obs", "action", "reward", "next_obs", "terminated", "truncated", "episode_id", "step",
    "timestamp", "obs_valid", "action_valid", "episode_key",
)
"""Keyword names :func:`from_arrays` accepts (also the keys of a dict handed to ``load_dataset``)."""


def from_pandas(df: Any, *, metadata: DatasetMetadata | None = None, name: str = "DataFrame") -> TransitionData:
    """Convert a DataFrame (list or wide layout) into :class:`TransitionData` (not yet validated).

    ``metadata`` overrides what the frame implies (names from wide columns are filled in when
    ``metadata`` has none). Error messages name ``name``, the column and the row position.
    """
    import pandas as pd
    import pyarrow as pa

    if not isinstance(df, pd.DataFrame):
        raise SchemaError(f"expected a pandas DataFrame, got {type(df).__name__}", file=name)
    frame = df.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise SchemaError(f"cannot convert the frame to columns of numbers: {' '.join(str(exc).split())}", file=name) from None
    layout = resolve_layout(table.schema, file=name, first=table)
    if metadata is not None:
        filled = {
            key: getattr(layout.metadata, key)
            for key in ("obs_names", "action_names")
            if getattr(metadata, key) is None and getattr(layout.metadata, key) is not None
        }
        layout.metadata = dataclasses.replace(metadata, **filled)
    return batch_to_transitions(table, layout, file=name)


def _vector(values: Any, column: str, rows: int | None, dtype: type) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError):
        widths = [np.size(v) for v in values]
        ragged = [i for i, w in enumerate(widths) if w != widths[0]]
        if ragged:
            raise SchemaError(
                f"row has {widths[ragged[0]]} values, row 0 has {widths[0]} (same width on every row)",
                column=column, row=ragged[0],
            ) from None
        raise SchemaError(f"cannot be read as a {np.dtype(dtype).name} array", column=column) from None
    if arr.ndim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2:
        raise SchemaError(f"expected a (rows, width) array, got shape {arr.shape}", column=column)
    if rows is not None and arr.shape[0] != rows:
        raise SchemaError(f"has {arr.shape[0]} rows, obs has {rows}", column=column)
    return arr


def _scalar(values: Any, column: str, rows: int, dtype: type) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(-1)
    if arr.ndim != 1 or arr.shape[0] != rows:
        raise SchemaError(f"expected shape ({rows},), got {arr.shape}", column=column)
    if np.dtype(dtype).kind in "bi" and arr.dtype.kind == "f":
        bad = np.flatnonzero(arr != np.round(arr))
        if len(bad):
            raise SchemaError(f"expected whole numbers, got {arr[bad[0]]!r}", column=column, row=int(bad[0]))
    if np.dtype(dtype).kind == "b" and arr.dtype.kind != "b":
        bad = np.flatnonzero((arr != 0) & (arr != 1))
        if len(bad):
            raise SchemaError(f"flags must be 0/1 or true/false, got {arr[bad[0]]!r}", column=column, row=int(bad[0]))
    try:
        return arr.astype(dtype)
    except (TypeError, ValueError):
        raise SchemaError(f"expected {np.dtype(dtype).name} values, got dtype {arr.dtype}", column=column) from None


def steps_from_episode_ids(episode_id: np.ndarray) -> np.ndarray:
    """0-based position of each row inside its run of equal ``episode_id`` values (rows already grouped)."""
    n = len(episode_id)
    if n == 0:
        return np.zeros(0, np.int32)
    starts = np.flatnonzero(np.r_[True, episode_id[1:] != episode_id[:-1]])
    lengths = np.diff(np.r_[starts, n])
    return (np.arange(n) - np.repeat(starts, lengths)).astype(np.int32)


def from_arrays(
    *,
    obs: Any,
    action: Any,
    reward: Any,
    next_obs: Any,
    terminated: Any,
    truncated: Any,
    episode_id: Any | None = None,
    step: Any | None = None,
    timestamp: Any | None = None,
    obs_valid: Any | None = None,
    action_valid: Any | None = None,
    episode_key: Any | None = None,
    metadata: DatasetMetadata | None = None,
) -> TransitionData:
    """Build :class:`TransitionData` from array-likes, casting to the canonical dtypes (not validated).

    Shapes: obs/next_obs (N, O) (or (N,) for O = 1), action (N, A) (or (N,)), the rest (N,).
    ``episode_id`` defaults to a single episode 0; ``step`` defaults to the position inside each
    episode (rows must be grouped by episode). ``timestamp`` is int64 microseconds since the
    epoch (UTC) or numpy datetime64.
    """
    obs_arr = _vector(obs, "obs", None, np.float32)
    n = obs_arr.shape[0]
    ep = np.zeros(n, np.int64) if episode_id is None else _scalar(episode_id, "episode_id", n, np.int64)
    ts = None
    if timestamp is not None:
        raw_ts = np.asarray(timestamp)
        if raw_ts.dtype.kind == "M":
            raw_ts = raw_ts.astype("datetime64[us]").astype(np.int64)
        ts = _scalar(raw_ts, "timestamp", n, np.int64)
    return TransitionData(
        episode_id=ep,
        step=steps_from_episode_ids(ep) if step is None else _scalar(step, "step", n, np.int32),
        obs=obs_arr,
        action=_vector(action, "action", n, np.float32),
        reward=_scalar(reward, "reward", n, np.float32),
        next_obs=_vector(next_obs, "next_obs", n, np.float32),
        terminated=_scalar(terminated, "terminated", n, np.bool_),
        truncated=_scalar(truncated, "truncated", n, np.bool_),
        metadata=metadata or DatasetMetadata(),
        timestamp=ts,
        obs_valid=None if obs_valid is None else _vector(obs_valid, "obs_valid", n, np.bool_),
        action_valid=None if action_valid is None else _vector(action_valid, "action_valid", n, np.bool_),
        episode_key=None if episode_key is None else np.asarray([str(k) for k in np.asarray(episode_key)], dtype=object),
    )


def from_dict(arrays: dict[str, Any], *, metadata: DatasetMetadata | None = None) -> TransitionData:
    """:func:`from_arrays` for a dict of arrays; unknown or missing keys raise :class:`SchemaError`."""
    unknown = sorted(set(arrays) - set(FROM_ARRAYS_FIELDS))
    if unknown:
        raise SchemaError(
            f"unknown key(s) {unknown}; expected obs, action, reward, next_obs, terminated, truncated and"
            " optionally episode_id, step, timestamp, obs_valid, action_valid, episode_key",
            column=unknown[0],
        )
    for key in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        if key not in arrays:
            raise SchemaError(
                f"missing key '{key}'; expected obs, action, reward, next_obs, terminated, truncated;"
                f" got {sorted(arrays)}",
                column=key,
            )
    return from_arrays(**arrays, metadata=metadata)
