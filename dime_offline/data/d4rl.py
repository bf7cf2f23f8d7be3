"""D4RL-style HDF5 files <-> canonical transitions, via h5py (never the ``d4rl`` package).

Layout (``data-formats.md`` §2.1): flat datasets of N rows, ``observations (N, O)``,
``actions (N, A)``, ``rewards (N,)`` or ``(N, 1)``, ``terminals (N,)``, optional ``timeouts (N,)``
and ``next_observations (N, O)``. Rules applied when reading (§2.2, documented in
``docs/data-format.md``):

* ``terminals -> terminated``, ``timeouts -> truncated``; a row flagged both is a true
  termination (terminated wins). Episodes end after every flagged row.
* With ``next_observations`` every row is a transition and is kept, timed-out last rows included.
* Without it, ``next_obs[i] = observations[i+1]`` inside an episode. A row whose successor is not
  in the file (a timed-out row, or the unflagged last row of the file) is dropped and the row
  before it becomes the truncated end of its episode. Terminal rows are kept; their ``next_obs``
  is the following row's observation as in D4RL's ``qlearning_dataset`` (never bootstrapped
  from) or, for the file's last row, the row's own observation.
* A trailing segment with neither flag ends truncated.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from dime_offline.data.frames import steps_from_episode_ids
from dime_offline.data.schema import (
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    DatasetMetadata,
    TransitionData,
    empty_like_schema,
)
from dime_offline.errors import DataError, DatasetNotFoundError, SchemaError
from dime_offline.io import atomic_path

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
OPTIONAL_KEYS = ("timeouts", "next_observations")

_KEY_ALIASES: dict[str, tuple[str, ...]] = {
    "observations": ("obs", "observation", "states", "state"),
    "actions": ("action", "act", "acts"),
    "rewards": ("reward", "rews", "rew", "r"),
    "terminals": ("terminal", "dones", "done", "terminated", "terminations"),
}


@dataclasses.dataclass(frozen=True)
class D4RLReference:
    """What D4RL publishes about one gym-mujoco locomotion task (``d4rl/infos.py``)."""

    ref_min_score: float
    """Average return of a random policy."""
    ref_max_score: float
    """Average return of an expert policy."""
    obs_dim: int
    """Observation width of the D4RL files."""
    action_dim: int
    """Action width (all four tasks have actions in [-1, 1])."""
    env_id: str | None
    """A gymnasium id with the same observation layout, for online fine-tuning (None if there is none)."""


D4RL_REFERENCES: dict[str, D4RLReference] = {
    "halfcheetah": D4RLReference(-280.178953, 12135.0, 17, 6, "HalfCheetah-v4"),
    "hopper": D4RLReference(-20.272305, 3234.3, 11, 3, "Hopper-v4"),
    "walker2d": D4RLReference(1.629008, 4592.3, 17, 6, "Walker2d-v4"),
    # D4RL's Ant observation includes contact forces (111 values); no gymnasium id matches by default.
    "ant": D4RLReference(-325.6, 3879.7, 111, 8, None),
}
"""Reference returns of D4RL's locomotion tasks (v1/v2 reuse v0's values; data-formats.md §2.3)."""


def reference_for_filename(name: str) -> tuple[str, D4RLReference] | None:
    """The task whose name is a token of a file name like ``hopper-medium-v2.hdf5``, if any."""
    tokens = re.split(r"[-_.\s]+", Path(name).name.lower())
    for task, ref in D4RL_REFERENCES.items():
        if task in tokens:
            return task, ref
    return None


def _open(path: Path) -> Any:
    import h5py

    if not path.exists():
        raise DatasetNotFoundError("no such file", file=str(path))
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise DataError(f"not a readable HDF5 file (corrupt or truncated?): {_short(exc)}", file=str(path)) from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _read(h5: Any, key: str, file: str) -> np.ndarray:
    import h5py

    node = h5[key]
    if not isinstance(node, h5py.Dataset):
        raise SchemaError(f"'{key}' is a group, expected an array", file=file, column=key)
    try:
        return np.asarray(node[()])
    except (OSError, ValueError, TypeError) as exc:
        raise DataError(f"cannot read '{key}' (corrupt or truncated file?): {_short(exc)}", file=file, column=key) from None


def _as_matrix(values: np.ndarray, key: str, n: int, file: str) -> np.ndarray:
    if values.ndim == 0 or values.shape[0] != n:
        raise SchemaError(f"has {values.shape[0] if values.ndim else 0} rows, observations has {n}", file=file, column=key)
    if values.dtype.kind not in "fiub":
        raise SchemaError(f"expected numbers, got dtype {values.dtype}", file=file, column=key)
    return values.reshape(n, -1).astype(np.float32, copy=False)


def _as_vector(values: np.ndarray, key: str, n: int, file: str) -> np.ndarray:
    if values.ndim == 0 or values.shape[0] != n:
        raise SchemaError(f"has {values.shape[0] if values.ndim else 0} rows, observations has {n}", file=file, column=key)
    if values.ndim > 2 or (values.ndim == 2 and values.shape[1] != 1):
        raise SchemaError(f"expected shape ({n},) or ({n}, 1), got {values.shape}", file=file, column=key)
    if values.dtype.kind not in "fiub":
        raise SchemaError(f"expected numbers, got dtype {values.dtype}", file=file, column=key)
    return values.reshape(n)


def _as_flags(values: np.ndarray, key: str, n: int, file: str) -> np.ndarray:
    flat = _as_vector(values, key, n, file)
    if flat.dtype.kind != "b":
        bad = np.flatnonzero((flat != 0) & (flat != 1))
        if len(bad):
            raise SchemaError(f"flags must be 0/1 or true/false, got {flat[bad[0]]!r}", file=file, column=key, row=int(bad[0]))
    return flat.astype(bool)


def read_d4rl_hdf5(path: str | os.PathLike[str]) -> tuple[TransitionData, list[str]]:
    """Read a D4RL-style HDF5 file into canonical rows (unvalidated) plus notes on what the rules did."""
    path = Path(path)
    file = str(path)
    with _open(path) as h5:
        keys = set(h5.keys())
        for key in REQUIRED_KEYS:
            if key not in keys:
                alias = [k for k in sorted(keys) if k.lower() in _KEY_ALIASES[key]]
                hint = f" (found '{alias[0]}': rename it)" if alias else ""
                if keys and all(k.startswith("episode_") for k in keys):
                    hint = " (this looks like a Minari main_data.hdf5: load its dataset folder instead)"
                raise SchemaError(
                    f"missing dataset '{key}'{hint}; expected {', '.join(REQUIRED_KEYS)} and optionally"
                    f" {', '.join(OPTIONAL_KEYS)}; found {', '.join(sorted(keys)) or 'nothing'}",
                    file=file, column=key,
                )
        raw = {key: _read(h5, key, file) for key in REQUIRED_KEYS + OPTIONAL_KEYS if key in keys}
        raw_meta = h5.attrs.get(METADATA_KEY.decode())
        ignored = sorted(keys - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))

    obs_raw = raw["observations"]
    n = int(obs_raw.shape[0]) if obs_raw.ndim else 0
    obs = _as_matrix(obs_raw, "observations", n, file)
    action = _as_matrix(raw["actions"], "actions", n, file)
    reward = _as_vector(raw["rewards"], "rewards", n, file).astype(np.float32, copy=False)
    terminated = _as_flags(raw["terminals"], "terminals", n, file)
    truncated = _as_flags(raw["timeouts"], "timeouts", n, file) if "timeouts" in raw else np.zeros(n, bool)
    next_given = "next_observations" in raw
    if next_given:
        next_obs = _as_matrix(raw["next_observations"], "next_observations", n, file)
        if next_obs.shape[1] != obs.shape[1]:
            raise SchemaError(
                f"width {next_obs.shape[1]} differs from observations width {obs.shape[1]}",
                file=file, column="next_observations",
            )

    metadata = _metadata(raw_meta, path, obs.shape[1], action.shape[1])
    notes: list[str] = []
    if ignored:
        notes.append(f"ignored HDF5 key(s): {', '.join(ignored)}")
    if "timeouts" not in raw:
        notes.append("no 'timeouts' dataset: episodes end only at terminals (and at the end of the file)")
    both = terminated & truncated
    if both.any():
        truncated = truncated & ~terminated
        notes.append(f"{int(both.sum())} row(s) flagged both terminal and timeout were taken as terminated")
    if n == 0:
        return empty_like_schema(obs.shape[1], action.shape[1], metadata), notes

    if next_given:
        keep = np.ones(n, bool)
        if not (terminated[-1] or truncated[-1]):
            notes.append(_trailing_note(terminated | truncated, n))
            truncated[-1] = True
    else:
        next_obs, keep, truncated = _successors_from_rows(obs, terminated, truncated, notes)
    rows = np.flatnonzero(keep)
    terminated, truncated = terminated[rows], truncated[rows]
    episode_id, step = _episodes(terminated | truncated)
    data = TransitionData(
        episode_id=episode_id, step=step, obs=obs[rows], action=action[rows], reward=reward[rows],
        next_obs=next_obs[rows], terminated=terminated, truncated=truncated, metadata=metadata,
    )
    return data, notes


def _trailing_note(ends: np.ndarray, n: int) -> str:
    flagged = np.flatnonzero(ends)
    length = n - (int(flagged[-1]) + 1 if len(flagged) else 0)
    return f"trailing segment of {length} row(s) has neither terminal nor timeout: its last transition is marked truncated"


def _successors_from_rows(
    obs: np.ndarray, terminated: np.ndarray, truncated: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Without ``next_observations``: ``(next_obs, keep, truncated)`` per the module's rules."""
    n = obs.shape[0]
    next_obs = np.empty_like(obs)
    next_obs[:-1] = obs[1:]
    next_obs[-1] = obs[-1]  # placeholder, only kept when the last row is terminal
    # Rows whose successor is not in the file: timeouts, and an unflagged (or timed-out) last row.
    unknown = truncated.copy()
    trailing = not (terminated[-1] or truncated[-1])
    if trailing:
        unknown[-1] = True
    ends = terminated | unknown
    dropped = np.flatnonzero(unknown)
    previous = dropped - 1
    # The row before a dropped one ends its episode (truncated) unless it already ended one.
    inherits = previous[(previous >= 0) & ~ends[np.maximum(previous, 0)]]
    zero_step = len(dropped) - len(inherits)
    truncated = np.zeros(n, bool)
    truncated[inherits] = True
    keep = ~unknown
    timeouts_dropped = len(dropped) - int(trailing)
    if timeouts_dropped:
        notes.append(
            f"no 'next_observations': dropped {timeouts_dropped} timed-out last transition(s) whose successor is"
            " not in the file; the transition before each ends its episode as truncated"
        )
    if trailing:
        flagged = np.flatnonzero(ends[:-1])
        length = n - (int(flagged[-1]) + 1 if len(flagged) else 0)
        notes.append(
            f"trailing segment of {length} row(s) has neither terminal nor timeout: its last row is dropped (no"
            " successor in the file) and the row before it ends the episode as truncated"
        )
    if zero_step:
        notes.append(f"skipped {zero_step} zero-step episode(s) (a single row whose successor is not in the file)")
    terminal_rows = int(terminated.sum())
    if terminal_rows:
        notes.append(
            f"no 'next_observations': next_obs of {terminal_rows} terminal transition(s) is a placeholder (the"
            " following row's observation, as in D4RL's qlearning_dataset); it is never bootstrapped from"
        )
    return next_obs, keep, truncated


def _episodes(ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(episode_id, step) for rows whose episodes end after each True in ``ends``."""
    episode_id = np.zeros(len(ends), np.int64)
    if len(ends) > 1:
        episode_id[1:] = np.cumsum(ends[:-1])
    return episode_id, steps_from_episode_ids(episode_id)


def _metadata(raw_meta: Any, path: Path, obs_dim: int, action_dim: int) -> DatasetMetadata:
    """Our metadata when we wrote the file; else reference scores and bounds from a recognised task name."""
    if raw_meta is not None:
        text = raw_meta.decode() if isinstance(raw_meta, bytes) else str(raw_meta)
        return DatasetMetadata.from_json(text, file=str(path))
    metadata = DatasetMetadata(source=f"d4rl-hdf5:{path.name}")
    match = reference_for_filename(path.name)
    if match is None:
        return metadata
    task, ref = match
    if (ref.obs_dim, ref.action_dim) != (obs_dim, action_dim):
        return dataclasses.replace(metadata, extra={"d4rl_task_guess": f"{task} (widths differ; not applied)"})
    return dataclasses.replace(
        metadata, ref_min_score=ref.ref_min_score, ref_max_score=ref.ref_max_score, env_id=ref.env_id,
        action_low=[-1.0] * action_dim, action_high=[1.0] * action_dim, extra={"d4rl_task": task},
    )


def write_d4rl_hdf5(data: TransitionData, path: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """Write ``data`` in the D4RL layout (with ``next_observations`` and ``timeouts``), atomically.

    Episodes are implied by the flags, so an episode that ends with neither flag gets
    ``timeouts = True`` on its last row (reported). Returns the path and notes.
    """
    import h5py

    path = Path(path)
    data.validate(check_continuity=False)
    notes = [f"{name} is not stored in D4RL-style HDF5 (dropped)"
             for name in OPTIONAL_COLUMNS if getattr(data, name) is not None]
    timeouts = data.truncated.copy()
    ends = np.concatenate([data.episode_starts()[1:] - 1, [len(data) - 1]])
    unflagged = ends[~(data.terminated[ends] | data.truncated[ends])]
    if len(unflagged):
        timeouts[unflagged] = True
        notes.append(f"{len(unflagged)} episode(s) ending with neither flag were written with timeouts=True")
    # The core driver keeps the file in memory until it is closed: a write that fails (a full disk)
    # then fails once, in close, instead of in the background as each dataset is released.
    with atomic_path(path) as tmp, h5py.File(tmp, "w", driver="core", backing_store=True) as h5:
        h5.create_dataset("observations", data=data.obs)
        h5.create_dataset("actions", data=data.action)
        h5.create_dataset("rewards", data=data.reward)
        h5.create_dataset("next_observations", data=data.next_obs)
        h5.create_dataset("terminals", data=data.terminated)
        h5.create_dataset("timeouts", data=timeouts)
        h5.attrs[METADATA_KEY.decode()] = data.metadata.to_json()
    return path, notes
