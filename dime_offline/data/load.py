"""One entry point for every source: ``load_dataset`` / ``save_dataset`` / ``convert_dataset``.

Loading = read with the adapter for the source, then the same clean-up and checks for all:

1. Episodes that end with neither flag get ``truncated`` on their last row (the data stopped;
   bootstrapping from ``next_obs`` stays valid). Reported.
2. Non-finite values (NaN/inf in obs, action, reward, next_obs) are counted per column and
   feature. Policy ``"error"`` raises :class:`NonFiniteError` naming the first row; ``"drop"``
   cuts each affected episode just before its first non-finite transition: the rows before it
   are kept and the last of them becomes ``truncated`` (its ``next_obs`` is finite, so it can be
   bootstrapped from); the rest of that episode is dropped, and an episode whose first row is
   bad disappears. Episode ids and steps of the kept rows do not change. Splitting at gaps
   (to keep the rows after a bad one) is the job of the telemetry converters, which know where
   the gaps are.
3. :meth:`TransitionData.validate`: schema, order, flags, action bounds, and continuity
   (``next_obs[t] == obs[t+1]`` inside an episode): an error by default, a reported warning with
   ``check_continuity=False``; it is never "fixed".
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from dime_offline.data.d4rl import read_d4rl_hdf5, write_d4rl_hdf5
from dime_offline.data.frames import from_dict, from_pandas
from dime_offline.data.minari import (
    MinariFormat,
    looks_like_minari_id,
    read_minari,
    write_minari,
)
from dime_offline.data.parquet import read_parquet, write_parquet
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.errors import (
    DataError,
    DatasetNotFoundError,
    NonFiniteError,
    SchemaError,
)

if TYPE_CHECKING:
    import torch

    from dime_offline.data.replay import ReplayConfig, ReplayStore

SourceFormat = Literal["parquet", "hdf5", "minari", "pandas", "arrays", "canonical"]
TargetFormat = Literal["parquet", "hdf5", "minari"]
NonFinitePolicy = Literal["error", "drop", "keep"]

PARQUET_SUFFIXES = (".parquet", ".pq")
HDF5_SUFFIXES = (".hdf5", ".h5")
NUMERIC_FIELDS = ("obs", "action", "reward", "next_obs")


class DataNoteWarning(UserWarning):
    """Something the loader did or noticed that the user should know (dropped rows, ignored columns)."""


@dataclass
class LoadReport:
    """What happened while loading one source."""

    source: str
    """The path, Minari id, or a description of the in-memory object."""
    format: str
    """Which adapter read it (parquet, hdf5, minari, pandas, arrays, canonical)."""
    notes: list[str] = field(default_factory=list)
    """Human-readable notes: skipped episodes, ignored columns, flags set, continuity warnings."""
    nonfinite: dict[str, Any] = field(default_factory=dict)
    """Non-finite values found (see :func:`find_nonfinite`); empty when there were none."""
    dropped_transitions: int = 0
    """Transitions removed by the non-finite ``drop`` policy."""


def detect_format(source: Any) -> SourceFormat:
    """Which adapter reads ``source`` (by type, then suffix, then content)."""
    if isinstance(source, TransitionData):
        return "canonical"
    pandas = sys.modules.get("pandas")  # not imported yet: the source cannot be a DataFrame (and a path needs no pandas)
    if pandas is not None and isinstance(source, pandas.DataFrame):
        return "pandas"
    if isinstance(source, dict):
        return "arrays"
    if not isinstance(source, (str, os.PathLike)):
        raise SchemaError(
            f"cannot load a {type(source).__name__}; expected a path, a Minari id, a pandas DataFrame or a dict of arrays"
        )
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if path.is_dir():
        if (path / "data" / "metadata.json").is_file() or (path / "metadata.json").is_file():
            return "minari"
        if any(path.glob("*.parquet")):
            return "parquet"
        raise DatasetNotFoundError(
            "directory is neither a Parquet dataset (*.parquet files) nor a Minari dataset (data/metadata.json)",
            file=str(path),
        )
    if path.is_file():
        if suffix in PARQUET_SUFFIXES:
            return "parquet"
        if suffix in HDF5_SUFFIXES:
            return "hdf5"
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic.startswith(b"PAR1"):
            return "parquet"
        if magic.startswith(b"\x89HDF"):
            return "hdf5"
        raise SchemaError(
            "cannot tell the format: expected a .parquet or .hdf5/.h5 file, a Parquet or Minari dataset folder",
            file=str(path),
        )
    text = os.fspath(source)
    if suffix in PARQUET_SUFFIXES + HDF5_SUFFIXES or text.startswith((".", "/", "~")):
        raise DatasetNotFoundError("no such file or directory", file=text)
    if looks_like_minari_id(text) or "/" in text:
        return "minari"  # read_minari checks the version suffix and says where it looked
    raise DatasetNotFoundError(
        f"no such file or directory (a Minari dataset id needs a version suffix, e.g. '{text}-v0')", file=text
    )


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return type(source).__name__


def read_source(source: Any, *, format: SourceFormat | None = None) -> tuple[TransitionData, list[str], str]:
    """Read ``source`` with its adapter, without clean-up or checks: ``(data, notes, format)``."""
    fmt = format or detect_format(source)
    name = _source_name(source)
    if fmt == "parquet":
        data, notes = read_parquet(source)
    elif fmt == "hdf5":
        data, notes = read_d4rl_hdf5(source)
    elif fmt == "minari":
        data, notes = read_minari(source)
    elif fmt == "pandas":
        data, notes = from_pandas(source), []
    elif fmt == "arrays":
        data, notes = from_dict(source), []
    elif fmt == "canonical":
        data, notes = source, []
    else:
        raise SchemaError(f"unknown source format '{fmt}'; expected parquet, hdf5, minari, pandas or arrays", file=name)
    if data.metadata.source is None and fmt in ("parquet", "hdf5", "minari"):
        data = dataclasses.replace(data, metadata=dataclasses.replace(data.metadata, source=f"{fmt}:{name}"))
    return data, notes, fmt


def _episode_ends(data: TransitionData) -> np.ndarray:
    starts = data.episode_starts()
    return np.concatenate([starts[1:] - 1, [len(data) - 1]]) if len(data) else np.zeros(0, np.int64)


def flag_unflagged_ends(data: TransitionData) -> tuple[TransitionData, int]:
    """Set ``truncated`` on episode ends that have neither flag; returns the data and how many were set."""
    ends = _episode_ends(data)
    unflagged = ends[~(data.terminated[ends] | data.truncated[ends])]
    if not len(unflagged):
        return data, 0
    truncated = data.truncated.copy()
    truncated[unflagged] = True
    return dataclasses.replace(data, truncated=truncated), len(unflagged)


def _feature_names(data: TransitionData, column: str) -> list[str]:
    if column in ("obs", "next_obs"):
        return data.metadata.obs_names or [str(i) for i in range(data.obs_dim)]
    if column == "action":
        return data.metadata.action_names or [str(i) for i in range(data.action_dim)]
    return ["reward"]


def find_nonfinite(data: TransitionData) -> tuple[np.ndarray, dict[str, Any]]:
    """Rows holding NaN/inf in obs, action, reward or next_obs, and a report of where they are.

    Report: ``{column: {"values", "rows", "first_row", "first_episode", "first_step", "features":
    {name: count}}}`` for each affected column, plus ``"total": {"values", "rows", "episodes"}``.
    """
    n = len(data)
    bad_rows = np.zeros(n, bool)
    report: dict[str, Any] = {}
    for column in NUMERIC_FIELDS:
        values = getattr(data, column).reshape(n, -1)
        bad = ~np.isfinite(values)
        if not bad.any():
            continue
        rows = bad.any(axis=1)
        bad_rows |= rows
        first = int(np.flatnonzero(rows)[0])
        per_feature = bad.sum(axis=0)
        names = _feature_names(data, column)
        report[column] = {
            "values": int(bad.sum()),
            "rows": int(rows.sum()),
            "first_row": first,
            "first_episode": int(data.episode_id[first]),
            "first_step": int(data.step[first]),
            "features": {names[j]: int(c) for j, c in enumerate(per_feature) if c},
        }
    if report:
        report["total"] = {
            "values": sum(r["values"] for r in report.values()),
            "rows": int(bad_rows.sum()),
            "episodes": len(np.unique(data.episode_id[bad_rows])),
        }
    return bad_rows, report


def describe_nonfinite(report: dict[str, Any]) -> str:
    """One line: counts and places of the non-finite values in a :func:`find_nonfinite` report."""
    parts = []
    for column, info in report.items():
        if column == "total":
            continue
        features = ", ".join(f"{k}: {v}" for k, v in list(info["features"].items())[:4])
        more = ", ..." if len(info["features"]) > 4 else ""
        parts.append(
            f"{column} {info['values']} value(s) in {info['rows']} row(s) [{features}{more}], first at row"
            f" {info['first_row']} (episode {info['first_episode']}, step {info['first_step']})"
        )
    total = report["total"]
    return f"{total['values']} non-finite value(s) in {total['rows']} row(s), {total['episodes']} episode(s): " + "; ".join(parts)


def drop_nonfinite(data: TransitionData, bad_rows: np.ndarray) -> tuple[TransitionData, dict[str, int]]:
    """Cut each episode just before its first bad row (policy in the module docstring)."""
    n = len(data)
    episode_index = np.repeat(np.arange(len(data.episode_starts())), data.episode_lengths())
    first_bad = np.full(episode_index[-1] + 1 if n else 0, np.iinfo(np.int64).max)
    np.minimum.at(first_bad, episode_index[bad_rows], np.flatnonzero(bad_rows))
    keep = np.arange(n) < first_bad[episode_index]
    cut = np.flatnonzero(first_bad < np.iinfo(np.int64).max)
    starts = data.episode_starts()
    cut_points = first_bad[cut]
    shortened = cut_points > starts[cut]
    truncated = data.truncated.copy()
    truncated[cut_points[shortened] - 1] = True  # rows before the first bad one carry no flag yet
    result = dataclasses.replace(data, truncated=truncated).select(keep)
    return result, {
        "dropped_transitions": int(n - keep.sum()),
        "nonfinite_transitions": int(bad_rows.sum()),
        "shortened_episodes": int(shortened.sum()),
        "removed_episodes": int((~shortened).sum()),
    }


def load_dataset_with_report(
    source: Any,
    *,
    format: SourceFormat | None = None,
    nonfinite: NonFinitePolicy = "error",
    check_continuity: bool = True,
    validate: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> tuple[TransitionData, LoadReport]:
    """Load any supported source into canonical :class:`TransitionData`, with a report.

    ``metadata``: :class:`DatasetMetadata` fields that replace the source's before the checks (an
    ``env_id`` or action bounds that a foreign file or a DataFrame lacks).

    ``nonfinite``: ``"error"`` (default) raises on NaN/inf, ``"drop"`` cuts affected episodes
    (module docstring), ``"keep"`` leaves them (only useful with ``validate=False``, e.g. to
    inspect a broken file). ``check_continuity``: raise (True) or just report (False) episodes
    whose ``next_obs`` differs from the next row's ``obs``. ``validate=False`` skips
    :meth:`TransitionData.validate` (for inspection; never for training).
    """
    data, notes, fmt = read_source(source, format=format)
    name = _source_name(source)
    if metadata:
        data = dataclasses.replace(data, metadata=_replace_metadata(data.metadata, metadata, name))
    report = LoadReport(source=name, format=fmt, notes=list(notes))
    if len(data) == 0:
        if validate:
            raise DataError("dataset is empty (0 transitions)" + _why_empty(notes), file=name)
        return data, report
    data, flagged = flag_unflagged_ends(data)
    if flagged:
        report.notes.append(f"{flagged} episode(s) ended with neither terminated nor truncated: marked truncated")
    bad_rows, report.nonfinite = find_nonfinite(data)
    if report.nonfinite:
        if nonfinite == "error":
            first_col = next(c for c in NUMERIC_FIELDS if c in report.nonfinite)
            raise NonFiniteError(
                describe_nonfinite(report.nonfinite) + "; use nonfinite='drop' (CLI: --nonfinite drop) to cut the"
                " affected episodes before their first non-finite transition",
                file=name, column=first_col, row=report.nonfinite[first_col]["first_row"],
            )
        if nonfinite == "drop":
            data, summary = drop_nonfinite(data, bad_rows)
            report.dropped_transitions = summary["dropped_transitions"]
            report.notes.append(
                f"dropped {summary['dropped_transitions']} transition(s) ({summary['nonfinite_transitions']}"
                f" non-finite, the rest after them in the same episode): {summary['shortened_episodes']}"
                f" episode(s) cut short and marked truncated, {summary['removed_episodes']} removed;"
                f" {describe_nonfinite(report.nonfinite)}"
            )
            if len(data) == 0:
                raise NonFiniteError("every transition was dropped for non-finite values", file=name)
    if validate:
        report.notes += data.validate(file=name, check_continuity=check_continuity)
    return data, report


def _replace_metadata(base: DatasetMetadata, fields: Mapping[str, Any], name: str) -> DatasetMetadata:
    known = {f.name for f in dataclasses.fields(DatasetMetadata)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise SchemaError(f"unknown metadata field '{unknown[0]}' (known: {', '.join(sorted(known))})", file=name)
    return dataclasses.replace(base, **fields)


def _why_empty(notes: list[str]) -> str:
    return f" ({'; '.join(notes)})" if notes else ""


def load_dataset(
    source: Any,
    *,
    format: SourceFormat | None = None,
    nonfinite: NonFinitePolicy = "error",
    check_continuity: bool = True,
    metadata: Mapping[str, Any] | None = None,
) -> TransitionData:
    """Load and validate a dataset from any supported source (see :func:`load_dataset_with_report`;
    ``metadata`` sets fields of its metadata, e.g. ``{"env_id": ..., "action_low": ..., "action_high": ...}``).

    Sources: a Parquet file or folder, a D4RL-style ``.hdf5``/``.h5`` file, a local Minari
    dataset id (``namespace/name-vN``) or folder, a pandas DataFrame (list or wide columns), or
    a dict of arrays (:func:`dime_offline.data.frames.from_arrays` keys). Notes (skipped
    episodes, dropped rows, ignored columns) are issued as :class:`DataNoteWarning`.
    """
    data, report = load_dataset_with_report(
        source, format=format, nonfinite=nonfinite, check_continuity=check_continuity, metadata=metadata
    )
    for note in report.notes:
        warnings.warn(f"{report.source}: {note}", DataNoteWarning, stacklevel=2)
    return data


def load_replay_store(
    source: Any,
    config: ReplayConfig,
    *,
    nonfinite: NonFinitePolicy = "error",
    device: str | torch.device = "cpu",
) -> ReplayStore:
    """Any dataset source as the offline part of a new replay store: the one path every command uses.

    A canonical Parquet file or folder streams straight into the store (no full intermediate copy)
    when non-finite values are an error; every other source (D4RL-style HDF5, a local Minari id or
    folder, a DataFrame, arrays), and Parquet with ``nonfinite="drop"``, goes through
    :func:`load_dataset`. Continuity is not checked (the store computes episode structure itself).
    """
    from dime_offline.data.replay import ReplayStore

    name = _source_name(source)
    if detect_format(source) == "parquet" and nonfinite == "error":
        return ReplayStore.from_parquet(source, config, device=device)
    data = load_dataset(source, nonfinite=nonfinite, check_continuity=False)
    return ReplayStore.from_transitions(data, config, file=name, device=device)


def target_format(target: str | os.PathLike[str], format: TargetFormat | None = None) -> TargetFormat:
    """The output format for ``target``: explicit, else by suffix, else a Minari id."""
    if format is not None:
        if format not in ("parquet", "hdf5", "minari"):
            raise SchemaError(f"unknown output format '{format}'; expected parquet, hdf5 or minari", file=os.fspath(target))
        return format
    suffix = Path(target).suffix.lower()
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if isinstance(target, str) and looks_like_minari_id(target):
        return "minari"
    raise SchemaError(
        "cannot tell the output format: use a .parquet or .hdf5/.h5 suffix, a Minari id like"
        " 'namespace/name-v0', or choose the format explicitly",
        file=os.fspath(target),
    )


def save_dataset(
    data: TransitionData,
    target: str | os.PathLike[str],
    *,
    format: TargetFormat | None = None,
    minari_format: MinariFormat = "hdf5",
) -> tuple[Path, list[str]]:
    """Write ``data`` atomically as Parquet, D4RL-style HDF5 or a Minari dataset; ``(path, notes)``.

    The format is ``format`` or follows from ``target`` (:func:`target_format`). A Minari
    ``target`` is an id (written under the Minari root) or, as a :class:`Path` or a string starting
    with ``.``, ``/`` or ``~``, a folder.
    """
    fmt = target_format(target, format)
    if fmt == "parquet":
        return write_parquet(data, target), []
    if fmt == "hdf5":
        return write_d4rl_hdf5(data, target)
    return write_minari(data, target, data_format=minari_format)


@dataclass(frozen=True)
class ConvertConfig:
    """Settings of ``dime-offline data convert``."""

    source: str
    """Input: Parquet file/folder, D4RL-style HDF5 file, Minari id or folder."""
    target: str
    """Output path (.parquet, .hdf5/.h5) or Minari id / folder."""
    format: TargetFormat | None = None
    """Output format; None decides from the target's suffix (or a Minari id)."""
    nonfinite: NonFinitePolicy = "error"
    """What to do with NaN/inf values: 'error' stops, 'drop' cuts the affected episodes."""
    check_continuity: bool = True
    """Fail when next_obs differs from the next row's obs inside an episode (False: only report)."""
    minari_format: MinariFormat = "hdf5"
    """Storage backend when writing a Minari dataset."""
    env_id: str | None = None
    """Gymnasium id to record in the output's metadata (replacing the source's); None keeps it."""
    action_low: list[float] | None = None
    """Lower action bounds to record (one per action dimension, checked against the data); None keeps the source's."""
    action_high: list[float] | None = None
    """Upper action bounds to record, as ``action_low``."""


def convert_dataset(config: ConvertConfig) -> dict[str, Any]:
    """Load ``config.source``, check it, and write it to ``config.target``; returns a summary.

    Nothing is written unless loading and checking succeed, and writes are atomic.
    """
    metadata = {k: getattr(config, k) for k in ("env_id", "action_low", "action_high") if getattr(config, k) is not None}
    data, report = load_dataset_with_report(
        config.source, nonfinite=config.nonfinite, check_continuity=config.check_continuity, metadata=metadata
    )
    path, write_notes = save_dataset(data, config.target, format=config.format, minari_format=config.minari_format)
    return {
        "source": report.source,
        "source_format": report.format,
        "target": str(path),
        "target_format": target_format(config.target, config.format),
        "transitions": len(data),
        "episodes": len(data.episode_starts()),
        "dropped_transitions": report.dropped_transitions,
        "notes": report.notes + write_notes,
    }
