"""The canonical transition schema: one row per transition (s_t, a_t, r_t, s_{t+1}).

Every adapter (Parquet, Minari, D4RL HDF5, pandas/numpy, historian telemetry) converts into
:class:`TransitionData` and every writer starts from it. ``docs/data-format.md`` documents the
on-disk form; this module is its single source of truth in code.

Conventions
-----------
* Rows are sorted by ``(episode_id, step)``; ``step`` counts from 0 inside each episode and
  increases by exactly 1.
* ``next_obs`` is explicit. It is never inferred from row adjacency, so the last transition of a
  truncated episode keeps its successor and bootstrapping stays correct.
* ``terminated`` means a true terminal state (no bootstrap); ``truncated`` means the episode was
  cut (time limit, end of batch, data gap) and the value of ``next_obs`` still counts. At most one
  of them is set on a row, only on an episode's last row; an episode may end with neither when the
  data simply stops (adapters then set ``truncated``).
* Actions are stored in environment units. The replay store rescales them to [-1, 1] using the
  action bounds in :class:`DatasetMetadata`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dime_offline.errors import (
    BoundsError,
    ConsistencyError,
    DataError,
    NonFiniteError,
    SchemaError,
)

SCHEMA_VERSION = 1
"""Version of the on-disk canonical schema; bumped on any incompatible change."""

METADATA_KEY = b"dime"
"""Parquet file-level key/value metadata key that holds :class:`DatasetMetadata` as JSON."""

PANDAS_ATTRS_KEY = "dime"
"""Key of :class:`DatasetMetadata` (as a JSON-ready dict) in the ``attrs`` of a DataFrame from
:meth:`TransitionData.to_wide`. pandas keeps ``attrs`` through copies and slices and pyarrow stores
them with a table, so env id and action bounds survive a round trip through pandas (and a
``DataFrame.to_parquet`` file)."""

REQUIRED_COLUMNS = ("episode_id", "step", "obs", "action", "reward", "next_obs", "terminated", "truncated")
OPTIONAL_COLUMNS = ("timestamp", "obs_valid", "action_valid", "episode_key")

CONTINUITY_RTOL = 1e-4
"""Relative tolerance (floor 1 in absolute value) when comparing next_obs with the next row's obs."""


@dataclass
class DatasetMetadata:
    """Dataset-level facts that travel with the transitions (Parquet metadata, checkpoints)."""

    schema_version: int = SCHEMA_VERSION
    """Canonical schema version the data was written with."""
    obs_names: list[str] | None = None
    """One name per observation feature (e.g. historian tag names)."""
    action_names: list[str] | None = None
    """One name per action dimension."""
    obs_units: list[str] | None = None
    """Engineering unit per observation feature."""
    action_units: list[str] | None = None
    """Engineering unit per action dimension."""
    action_low: list[float] | None = None
    """Lower bound of the Box action space, per dimension, in environment units."""
    action_high: list[float] | None = None
    """Upper bound of the Box action space, per dimension, in environment units."""
    obs_low: list[float] | None = None
    """Lower bound of the observation space when it is bounded (else None)."""
    obs_high: list[float] | None = None
    """Upper bound of the observation space when it is bounded (else None)."""
    dt_seconds: float | None = None
    """Control period in seconds, if the data has a clock."""
    reward_description: str | None = None
    """Human-readable definition of the reward."""
    source: str | None = None
    """Where the data came from: file, Minari id, D4RL name, converter spec hash."""
    env_id: str | None = None
    """Gymnasium id of an environment matching the data, for online fine-tuning."""
    ref_min_score: float | None = None
    """Reference return of a random policy (D4RL convention) for normalised scores."""
    ref_max_score: float | None = None
    """Reference return of an expert policy (D4RL convention) for normalised scores."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Anything else worth keeping (converter report, collection settings)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes, *, file: str | None = None) -> DatasetMetadata:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"dataset metadata is not valid JSON ({exc.msg})", file=file) from None
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            # Newer writers may add fields; keep them rather than failing.
            raw.setdefault("extra", {}).update({k: raw.pop(k) for k in unknown})
        version = raw.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise SchemaError(
                f"schema_version {version!r} is newer than this dime-offline supports ({SCHEMA_VERSION});"
                " upgrade dime-offline",
                file=file,
            )
        return cls(**raw)

    def normalized_score(self, episode_return: float) -> float | None:
        """D4RL-style normalised score (x100), or None when no reference returns are known."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


@dataclass
class TransitionData:
    """A set of transitions in canonical form, held as contiguous numpy arrays.

    Shapes: N transitions, observation width O, action width A.
    """

    episode_id: np.ndarray
    """(N,) int64 episode identifier, unique within the dataset."""
    step: np.ndarray
    """(N,) int32 0-based index of the transition inside its episode."""
    obs: np.ndarray
    """(N, O) float32 observation at the start of the transition (engineering units)."""
    action: np.ndarray
    """(N, A) float32 action in environment units."""
    reward: np.ndarray
    """(N,) float32 reward r(s_t, a_t, s_{t+1})."""
    next_obs: np.ndarray
    """(N, O) float32 explicit successor observation."""
    terminated: np.ndarray
    """(N,) bool: next_obs is a true terminal state (no bootstrap)."""
    truncated: np.ndarray
    """(N,) bool: the episode was cut after this transition (bootstrap from next_obs)."""
    metadata: DatasetMetadata = field(default_factory=DatasetMetadata)
    """Dataset-level facts (names, units, bounds, source, reference returns)."""
    timestamp: np.ndarray | None = None
    """Optional (N,) int64 microseconds since the Unix epoch (UTC) of ``obs``."""
    obs_valid: np.ndarray | None = None
    """Optional (N, O) bool per-feature validity mask (historian quality)."""
    action_valid: np.ndarray | None = None
    """Optional (N, A) bool per-dimension validity mask of the action (False: held over a bad sample)."""
    episode_key: np.ndarray | None = None
    """Optional (N,) object array of source episode keys (batch ids, Minari episode ids)."""

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.obs.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.action.shape[1])

    @property
    def dones(self) -> np.ndarray:
        """(N,) bool: the episode ends after this transition (terminated or truncated)."""
        return self.terminated | self.truncated

    def episode_starts(self) -> np.ndarray:
        """Row indices where a new episode begins (includes 0 when non-empty)."""
        if len(self) == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.flatnonzero(self.episode_id[1:] != self.episode_id[:-1]) + 1
        return np.concatenate([[0], change]).astype(np.int64)

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each episode, in episode order."""
        starts = self.episode_starts()
        return np.add.reduceat(self.reward.astype(np.float64), starts) if len(starts) else np.zeros(0)

    def episode_lengths(self) -> np.ndarray:
        starts = self.episode_starts()
        return np.diff(np.concatenate([starts, [len(self)]]))

    def select(self, rows: np.ndarray) -> TransitionData:
        """A new TransitionData holding the given rows (boolean mask or indices), same metadata."""
        pick = (lambda a: None if a is None else a[rows])
        return dataclasses.replace(
            self,
            episode_id=self.episode_id[rows], step=self.step[rows], obs=self.obs[rows],
            action=self.action[rows], reward=self.reward[rows], next_obs=self.next_obs[rows],
            terminated=self.terminated[rows], truncated=self.truncated[rows],
            timestamp=pick(self.timestamp), obs_valid=pick(self.obs_valid), action_valid=pick(self.action_valid),
            episode_key=pick(self.episode_key),
        )

    @staticmethod
    def concatenate(parts: list[TransitionData]) -> TransitionData:
        """Join chunks (e.g. Parquet record batches) that share metadata and optional columns."""
        if not parts:
            raise DataError("cannot concatenate an empty list of transition chunks")
        first = parts[0]

        def cat(name: str) -> np.ndarray | None:
            arrays = [getattr(p, name) for p in parts]
            if all(a is None for a in arrays):
                return None
            if any(a is None for a in arrays):
                raise SchemaError("optional column present in some chunks only", column=name)
            return np.concatenate(arrays)

        return TransitionData(
            **{name: cat(name) for name in REQUIRED_COLUMNS},
            metadata=first.metadata,
            **{name: cat(name) for name in OPTIONAL_COLUMNS},
        )

    # ------------------------------------------------------------ conversions
    def to_wide(self) -> Any:
        """A pandas DataFrame with one named column per observation/action feature.

        Columns: episode_id, step, [timestamp], obs.<name>..., action.<name>..., reward,
        next_obs.<name>..., terminated, truncated. Names come from the metadata, else
        ``obs.0``, ``obs.1``, ...
        """
        import pandas as pd

        obs_names = self.metadata.obs_names or [str(i) for i in range(self.obs_dim)]
        act_names = self.metadata.action_names or [str(i) for i in range(self.action_dim)]
        cols: dict[str, Any] = {"episode_id": self.episode_id, "step": self.step}
        if self.timestamp is not None:
            cols["timestamp"] = pd.to_datetime(self.timestamp, unit="us", utc=True)
        cols.update({f"obs.{n}": self.obs[:, i] for i, n in enumerate(obs_names)})
        cols.update({f"action.{n}": self.action[:, i] for i, n in enumerate(act_names)})
        cols["reward"] = self.reward
        cols.update({f"next_obs.{n}": self.next_obs[:, i] for i, n in enumerate(obs_names)})
        cols["terminated"] = self.terminated
        cols["truncated"] = self.truncated
        if self.episode_key is not None:
            cols["episode_key"] = self.episode_key
        frame = pd.DataFrame(cols)
        frame.attrs[PANDAS_ATTRS_KEY] = json.loads(self.metadata.to_json())
        return frame

    # -------------------------------------------------------------- validation
    def continuity_breaks(self) -> tuple[np.ndarray, np.ndarray]:
        """Rows t inside an episode whose ``next_obs`` differs from ``obs[t+1]``, and each row's max abs difference.

        Tolerance: ``CONTINUITY_RTOL`` relative, with a floor of 1 in absolute value; NaN differences count as broken.
        """
        n = len(self)
        if n < 2:
            return np.zeros(0, np.int64), np.zeros(0)
        # Logged data almost always repeats the observation exactly, so a cheap screen for rows
        # that are not exactly equal comes first; only those rows, inside an episode, get the
        # tolerance test. Every other row differs by 0, within any tolerance.
        inexact = _rows_not_surely_equal(self.next_obs[:-1], self.obs[1:])
        candidates = inexact[self.episode_id[inexact + 1] == self.episode_id[inexact]]
        with np.errstate(invalid="ignore"):  # inf - inf: NaN, a break
            diff = np.abs(self.next_obs[candidates].astype(np.float64) - self.obs[candidates + 1])
        scale = CONTINUITY_RTOL * np.maximum(1.0, np.abs(self.obs[candidates + 1].astype(np.float64)))
        rows = (~(diff <= scale)).any(axis=1)
        return candidates[rows], np.nan_to_num(diff[rows], nan=np.inf).max(axis=1, initial=0.0)

    def validate(self, *, file: str | None = None, check_continuity: bool = True) -> list[str]:
        """Check the schema invariants; raise a :class:`DataError` subclass on the first violation.

        Returns a list of warnings (problems that are reported but not fatal), currently the
        episodes whose ``next_obs`` disagrees with the next row's ``obs`` when ``check_continuity``
        is False; with it True that disagreement is an error.
        """
        n = len(self)
        if n == 0:
            raise DataError("dataset is empty (0 transitions)", file=file)
        for name, dtype, ndim in (
            ("episode_id", np.int64, 1), ("step", np.int32, 1), ("obs", np.float32, 2),
            ("action", np.float32, 2), ("reward", np.float32, 1), ("next_obs", np.float32, 2),
            ("terminated", np.bool_, 1), ("truncated", np.bool_, 1),
        ):
            arr = getattr(self, name)
            if arr.dtype != dtype or arr.ndim != ndim:
                raise SchemaError(
                    f"expected {np.dtype(dtype).name} array with {ndim} dimension(s), got {arr.dtype} {arr.shape}",
                    file=file, column=name,
                )
            if arr.shape[0] != n:
                raise SchemaError(f"has {arr.shape[0]} rows, expected {n}", file=file, column=name)
        if self.next_obs.shape[1] != self.obs.shape[1]:
            raise SchemaError(
                f"width {self.next_obs.shape[1]} differs from obs width {self.obs.shape[1]}",
                file=file, column="next_obs",
            )
        for name in ("obs", "action", "reward", "next_obs"):
            arr = getattr(self, name)
            bad = ~np.isfinite(arr)
            if bad.any():
                rows = np.flatnonzero(bad.reshape(n, -1).any(axis=1))
                raise NonFiniteError(
                    f"{int(bad.sum())} non-finite value(s) in {len(rows)} row(s); first at row {rows[0]}"
                    " (load with nonfinite='drop' or --nonfinite drop to drop them)",
                    file=file, column=name, row=int(rows[0]),
                )
        order_bad = np.flatnonzero(
            (self.episode_id[1:] < self.episode_id[:-1])
            | ((self.episode_id[1:] == self.episode_id[:-1]) & (self.step[1:] != self.step[:-1] + 1))
        )
        if len(order_bad):
            r = int(order_bad[0]) + 1
            raise SchemaError(
                "rows must be sorted by (episode_id, step) with steps increasing by 1 inside an episode",
                file=file, column="step", row=r,
            )
        starts = self.episode_starts()
        if (self.step[starts] != 0).any():
            r = int(starts[np.flatnonzero(self.step[starts] != 0)[0]])
            raise SchemaError("episode does not start at step 0", file=file, column="step", row=r)
        both = np.flatnonzero(self.terminated & self.truncated)
        if len(both):
            raise SchemaError("a row is both terminated and truncated", file=file, column="terminated", row=int(both[0]))
        ends = np.concatenate([starts[1:] - 1, [n - 1]])
        is_end = np.zeros(n, dtype=bool)
        is_end[ends] = True
        early = np.flatnonzero(self.dones & ~is_end)
        if len(early):
            raise SchemaError(
                "terminated/truncated set before the episode's last row", file=file, column="terminated", row=int(early[0])
            )
        if self.metadata.action_low is not None and self.metadata.action_high is not None:
            low = np.asarray(self.metadata.action_low, dtype=np.float32)
            high = np.asarray(self.metadata.action_high, dtype=np.float32)
            if low.shape != (self.action_dim,) or high.shape != (self.action_dim,):
                raise SchemaError(
                    f"action bounds have {low.shape[0] if low.ndim else 0} entries, actions have {self.action_dim}",
                    file=file, column="action",
                )
            tol = 1e-5 * np.maximum(1.0, np.abs(high - low))
            outside = (self.action < low - tol) | (self.action > high + tol)
            if outside.any():
                rows = np.flatnonzero(outside.any(axis=1))
                raise BoundsError(
                    f"{len(rows)} row(s) have actions outside the declared bounds [{low.tolist()}, {high.tolist()}];"
                    f" first at row {rows[0]}",
                    file=file, column="action", row=int(rows[0]),
                )
        # Continuity: inside an episode, next_obs[t] should equal obs[t+1].
        warnings: list[str] = []
        broken, _ = self.continuity_breaks()
        if len(broken):
            msg = (
                f"{len(broken)} transition(s) in {len(np.unique(self.episode_id[broken]))} episode(s) have"
                f" next_obs different from the next row's obs; first at row {broken[0]}"
            )
            if check_continuity:
                raise ConsistencyError(msg, file=file, column="next_obs", row=int(broken[0]))
            warnings.append(msg)
        return warnings


SCREEN_ROWS = 65536
"""Rows compared at a time by :func:`_rows_not_surely_equal` (bounds its temporary mask)."""


def _rows_not_surely_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted indices of the rows of two (N, O) arrays that are not exactly equal and finite in ``b``:
    every row outside them differs by exactly 0 (NaN never equals; equal infinities differ by NaN)."""
    width = max(a.shape[1], 1)
    found = [np.zeros(0, np.int64)]
    for start in range(0, a.shape[0], SCREEN_ROWS):
        a_part, b_part = a[start:start + SCREEN_ROWS], b[start:start + SCREEN_ROWS]
        # Marking rows from flatnonzero of the element mask is far cheaper than .any(axis=1) over a
        # narrow row, and linear however many rows differ (episode boundaries always do).
        differing = np.zeros(len(a_part), dtype=bool)
        differing[np.flatnonzero(np.not_equal(a_part, b_part)) // width] = True
        with np.errstate(over="ignore"):
            total = b_part.sum()
        if not np.isfinite(total):  # rare (inf, or an overflowing sum): find the rows themselves
            differing |= ~np.isfinite(b_part).all(axis=1)
        found.append(start + np.flatnonzero(differing))
    return np.concatenate(found)


def empty_like_schema(obs_dim: int, action_dim: int, metadata: DatasetMetadata | None = None) -> TransitionData:
    """A zero-row TransitionData of the given widths (useful as a concatenation seed)."""
    return TransitionData(
        episode_id=np.zeros(0, np.int64), step=np.zeros(0, np.int32),
        obs=np.zeros((0, obs_dim), np.float32), action=np.zeros((0, action_dim), np.float32),
        reward=np.zeros(0, np.float32), next_obs=np.zeros((0, obs_dim), np.float32),
        terminated=np.zeros(0, bool), truncated=np.zeros(0, bool),
        metadata=metadata or DatasetMetadata(),
    )
