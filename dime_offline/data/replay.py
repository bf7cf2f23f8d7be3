"""The replay store: logged (offline) transitions plus a FIFO ring of online ones, in preallocated tensors.

Layout
------
Every field is one contiguous tensor of ``offline_size + online_capacity`` rows:

    rows [0, offline_size)                               offline part, filled once from a dataset
    rows [offline_size, offline_size + online_capacity)  online ring, written by :meth:`ReplayStore.add`

The online ring only ever writes rows at or after ``offline_size`` (slot ``i`` of the ring is row
``offline_size + i``), so online data cannot overwrite or leak into the offline part however often
the ring wraps. Ring slots fill from 0 upwards; once full, the oldest slot is overwritten next.

Per row the store keeps ``obs`` and ``next_obs`` (O float32 each), ``action`` (A float32, scaled to
[-1, 1]), ``reward``, ``mc_return`` and ``mc_horizon`` (float32) and ``terminated``/``truncated``
(bool): 8 bytes more than the raw transition (the Monte-Carlo return-to-go and its discounted
horizon, which calibration needs), nothing else. Loading streams record
batches straight into these tensors; only the (N,) episode ids and steps are held temporarily to
check episode structure and compute returns-to-go.

Online rows get their return-to-go (and horizon) when their episode ends: :meth:`ReplayStore.add`
tracks where the running episode started in the ring and fills the episode's rows that are still
stored once a terminated or truncated row arrives (Cal-QL computes returns for every completed
online episode too). Rows of the running episode stay NaN until then.

Sampling
--------
:meth:`ReplayStore.sample` draws indices with ``torch.randint`` and gathers rows with
``index_select``: its cost grows with the batch size, not with the store size. With an
``offline_fraction`` f the batch holds exactly ``floor(B * f + 0.5)`` offline rows (the nearest
integer, halves rounded up) followed by the online rows; ``Batch.is_offline`` marks them. If the
part asked for is empty the rows come from the other part (so pretraining with f = 0.5 before any
online data exists, or fine-tuning without a dataset, just works); both empty is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dime_offline.data.actions import action_bounds, to_unit_box
from dime_offline.data.normalization import (
    REWARD_SCALINGS,
    NormalizationStats,
    RewardScaling,
    RunningMoments,
)
from dime_offline.data.returns import (
    TRUNCATION_TAILS,
    LoggedEpisodes,
    TruncationTail,
    discounted_horizon,
    discounted_returns_to_go,
    episode_ends_from_ids,
)
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.errors import CheckpointError, DataError, NonFiniteError, SchemaError
from dime_offline.io import atomic_path
from dime_offline.types import Batch

PathLike = str | os.PathLike[str]
T = TypeVar("T")

STORE_FORMAT_VERSION = 2
"""Version of the on-disk layout written by :meth:`ReplayStore.save`."""

_FLOAT_FIELDS = ("obs", "action", "reward", "next_obs", "mc_return", "mc_horizon")
_BOOL_FIELDS = ("terminated", "truncated")
FIELDS = ("obs", "action", "reward", "next_obs", "terminated", "truncated", "mc_return", "mc_horizon")
"""Tensor fields of the store, in the order they are saved."""


@dataclass(frozen=True)
class ReplayConfig:
    """How a :class:`ReplayStore` is built and sampled."""

    online_capacity: int = 1_000_000
    """Rows in the online FIFO ring (0: no online part)."""
    gamma: float = 0.99
    """Discount of the Monte-Carlo returns-to-go computed for the offline part."""
    truncation: TruncationTail = "lower"
    """Tail value of truncated episodes in the returns-to-go: "zero" (the cut ends the episode,
    as in the Cal-QL reference code), "repeat_last_reward" (the last reward continues for ever) or
    "lower" (the lower of the two; see ``data/returns.py``)."""
    offline_fraction: float | None = None
    """Default share of offline rows per batch; None samples uniformly over all stored rows."""
    std_floor: float = 1e-3
    """Smallest observation standard deviation in the normalisation statistics."""
    reward_scaling: RewardScaling = "none"
    """Rule for the saved reward scale: "none", "std" or "return_range" (see NormalizationStats)."""
    chunk_rows: int = 65536
    """Rows per record batch when streaming a Parquet dataset into the store."""

    def __post_init__(self) -> None:
        if self.online_capacity < 0:
            raise ValueError(f"online_capacity must be >= 0, got {self.online_capacity}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.truncation not in TRUNCATION_TAILS:
            raise ValueError(f"truncation must be one of {TRUNCATION_TAILS}, got {self.truncation!r}")
        if self.offline_fraction is not None:
            _check_fraction(self.offline_fraction)
        if self.reward_scaling not in REWARD_SCALINGS:
            raise ValueError(f"reward_scaling must be one of {REWARD_SCALINGS}, got {self.reward_scaling!r}")
        if self.chunk_rows <= 0:
            raise ValueError(f"chunk_rows must be positive, got {self.chunk_rows}")


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"offline_fraction must lie in [0, 1], got {fraction}")


def offline_rows_in_batch(batch_size: int, offline_fraction: float) -> int:
    """Offline rows in a batch: ``floor(batch_size * offline_fraction + 0.5)``, halves rounded up."""
    _check_fraction(offline_fraction)
    return min(batch_size, math.floor(batch_size * offline_fraction + 0.5))


class ReplayStore:
    """Offline transitions plus an online FIFO ring, sampled into :class:`~dime_offline.types.Batch`.

    Build it with :meth:`from_parquet`, :meth:`from_transitions`, :meth:`empty` or :meth:`load`.
    Tensors (R = offline_size + online_capacity rows): ``obs`` (R, O), ``action`` (R, A) in
    [-1, 1], ``reward`` (R,), ``next_obs`` (R, O), ``terminated``/``truncated`` (R,) bool,
    ``mc_return`` (R,) and ``mc_horizon`` (R,) (NaN for online rows until their episode ends).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        *,
        offline_size: int = 0,
        config: ReplayConfig | None = None,
        metadata: DatasetMetadata | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        """Allocate an empty store; prefer the builders, which also fill the offline part."""
        if obs_dim <= 0 or action_dim <= 0:
            raise ValueError(f"obs_dim and action_dim must be positive, got {obs_dim} and {action_dim}")
        self.config = config or ReplayConfig()
        self.obs_dim = obs_dim
        self.action_dim = action_dim
        self.metadata = metadata or DatasetMetadata()
        self.device = torch.device(device)
        self.normalization: NormalizationStats | None = None
        """Statistics of the offline observations and rewards (None while there is no offline data)."""
        self.logged_episodes: LoggedEpisodes | None = None
        """Return, length and ending of each offline episode (None while there is no offline data)."""
        self.offline_size = offline_size
        self.online_size = 0
        """Filled ring slots (grows to ``online_capacity``, then stays there)."""
        self.online_cursor = 0
        """Ring slot the next online transition is written to."""
        self.online_added = 0
        """Online transitions ever added (including overwritten ones)."""
        self.online_episode_start = 0
        """Value of ``online_added`` at the first row of the running online episode."""
        self.last_episode_top_return = float("nan")
        """The highest discounted return-to-go of the last online episode that ended, over its rows the
        ring held then (NaN before one has, or if the ring held none of them): a value the critics must
        be able to hold for the states that episode's policy reached."""
        rows = offline_size + self.config.online_capacity
        kw: dict[str, Any] = {"device": self.device}
        self.obs = torch.empty((rows, obs_dim), dtype=torch.float32, **kw)
        self.action = torch.empty((rows, action_dim), dtype=torch.float32, **kw)
        self.reward = torch.empty(rows, dtype=torch.float32, **kw)
        self.next_obs = torch.empty((rows, obs_dim), dtype=torch.float32, **kw)
        self.terminated = torch.empty(rows, dtype=torch.bool, **kw)
        self.truncated = torch.empty(rows, dtype=torch.bool, **kw)
        self.mc_return = torch.empty(rows, dtype=torch.float32, **kw)
        self.mc_horizon = torch.empty(rows, dtype=torch.float32, **kw)

    # ----------------------------------------------------------------- builders
    @classmethod
    def empty(
        cls,
        obs_dim: int,
        action_dim: int,
        config: ReplayConfig | None = None,
        *,
        metadata: DatasetMetadata | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> "ReplayStore":
        """A store with no offline part (online fine-tuning from scratch)."""
        return cls(obs_dim, action_dim, config=_configure(config, overrides), metadata=metadata, device=device)

    @classmethod
    def from_transitions(
        cls,
        data: TransitionData,
        config: ReplayConfig | None = None,
        *,
        file: str | None = None,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> "ReplayStore":
        """Build a store whose offline part holds ``data`` (actions rescaled to [-1, 1]).

        ``overrides`` are :class:`ReplayConfig` fields, e.g. ``gamma=0.99, online_capacity=10_000``.
        The data is checked as described in :class:`_OfflineFiller`; ``file`` names the source
        in error messages.
        """
        cfg = _configure(config, overrides)
        store = cls(data.obs_dim, data.action_dim, offline_size=len(data), config=cfg, metadata=data.metadata, device=device)
        filler = _OfflineFiller(store, file=file)
        filler.add(data)
        filler.finish()
        return store

    @classmethod
    def from_parquet(
        cls,
        path: PathLike,
        config: ReplayConfig | None = None,
        *,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> "ReplayStore":
        """Stream a canonical Parquet file or directory into a new store, record batch by record batch.

        No pandas and no full intermediate copy: each batch is converted to numpy, checked and
        written into the preallocated tensors, and dropped. Episode structure, returns-to-go and
        normalisation statistics are then computed over the whole offline part, so episodes may
        span record batches. Row numbers in errors count from the first row of the dataset.
        """
        from dime_offline.data.parquet import iter_parquet_chunks, read_parquet_metadata

        cfg = _configure(config, overrides)
        metadata, obs_dim, action_dim, num_rows = read_parquet_metadata(path)
        store = cls(obs_dim, action_dim, offline_size=num_rows, config=cfg, metadata=metadata, device=device)
        filler = _OfflineFiller(store, file=str(path))
        chunks = iter_parquet_chunks(path, batch_rows=cfg.chunk_rows, columns=())
        with contextlib.closing(_prefetch(chunks, depth=2)) as prefetched:
            for chunk in prefetched:
                filler.add(chunk)
        filler.finish()
        return store

    # ------------------------------------------------------------------- sizes
    @property
    def online_capacity(self) -> int:
        return self.config.online_capacity

    def __len__(self) -> int:
        """Rows that can be sampled (offline plus filled online slots)."""
        return self.offline_size + self.online_size

    def nbytes(self) -> int:
        """Bytes held by the store's tensors (offline part plus the whole preallocated ring)."""
        return sum(t.element_size() * t.nelement() for t in self._tensors().values())

    def bytes_per_row(self) -> int:
        """Bytes one row occupies across all tensors."""
        return sum(t.element_size() * (t[0].nelement() if t.ndim > 1 else 1) for t in self._tensors().values())

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name) for name in FIELDS}

    # ------------------------------------------------------------------ online
    def add(
        self,
        obs: Any,
        action: Any,
        reward: Any,
        next_obs: Any,
        terminated: Any,
        truncated: Any,
    ) -> None:
        """Append one transition (obs (O,), scalars) or a vector of them (obs (n, O), (n,) ...) to the ring.

        Actions must already be in [-1, 1]. Inputs may be numpy arrays, tensors or Python numbers.
        Rows are one stream in time order (one environment). A row flagged both terminated and
        truncated (gymnasium allows it) is stored as terminated only: a true terminal state never
        bootstraps. Adding more rows than the capacity keeps the newest ``online_capacity`` of
        them, exactly as adding them one by one would. When a row ends an episode, the episode's
        stored rows get their returns-to-go (module docstring).
        """
        capacity = self.online_capacity
        if capacity == 0:
            raise ValueError("this store has no online part (online_capacity=0)")
        obs_t = self._as_rows(obs, torch.float32, self.obs_dim, "obs")
        n = obs_t.shape[0]
        rows = {
            "obs": obs_t,
            "action": self._as_rows(action, torch.float32, self.action_dim, "action", n),
            "reward": self._as_rows(reward, torch.float32, None, "reward", n),
            "next_obs": self._as_rows(next_obs, torch.float32, self.obs_dim, "next_obs", n),
            "terminated": self._as_rows(terminated, torch.bool, None, "terminated", n),
            "truncated": self._as_rows(truncated, torch.bool, None, "truncated", n),
        }
        rows["truncated"] = rows["truncated"] & ~rows["terminated"]
        rows["mc_return"] = torch.full((n,), float("nan"), dtype=torch.float32, device=self.device)
        rows["mc_horizon"] = rows["mc_return"]
        keep = min(n, capacity)
        start = (self.online_cursor + n - keep) % capacity
        first = min(keep, capacity - start)  # rows before the ring wraps
        for name, values in rows.items():
            target = getattr(self, name)
            values = values[n - keep :]
            base = self.offline_size
            target[base + start : base + start + first] = values[:first]
            if keep > first:
                target[base : base + keep - first] = values[first:]
        first_added = self.online_added
        self.online_cursor = (self.online_cursor + n) % capacity
        self.online_size = min(capacity, self.online_size + n)
        self.online_added += n
        ends = torch.nonzero(rows["terminated"] | rows["truncated"]).flatten().tolist()
        for end in ends:
            self._fill_online_returns(first_added + end + 1)

    def _fill_online_returns(self, episode_stop: int) -> None:
        """Returns-to-go for the online episode that ended with added row ``episode_stop - 1``: for
        its rows still in the ring (the oldest may have been overwritten: their successors' returns
        are exact all the same, since returns run backwards from the end)."""
        capacity = self.online_capacity
        first = max(self.online_episode_start, self.online_added - self.online_size, episode_stop - capacity)
        self.online_episode_start = episode_stop
        if first >= episode_stop:
            self.last_episode_top_return = float("nan")
            return
        rows = self.offline_size + torch.arange(first, episode_stop, device=self.device) % capacity
        reward = self.reward.index_select(0, rows).cpu().numpy()
        terminated = self.terminated.index_select(0, rows).cpu().numpy()
        ends = np.zeros(rows.shape[0], dtype=bool)
        ends[-1] = True
        gamma, tail = self.config.gamma, self.config.truncation
        returns = discounted_returns_to_go(reward, ends, terminated, gamma, truncation=tail)
        self.mc_return[rows] = torch.from_numpy(returns).to(self.mc_return)
        self.last_episode_top_return = float(returns.max())
        self.mc_horizon[rows] = torch.from_numpy(discounted_horizon(ends, terminated, gamma)).to(self.mc_horizon)

    def _as_rows(
        self, value: Any, dtype: torch.dtype, width: int | None, name: str, n: int | None = None
    ) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=dtype, device=self.device)
        if width is None:
            t = t.reshape(-1) if t.ndim <= 1 else t
            expected: tuple[int, ...] = (n if n is not None else t.shape[0],)
        else:
            t = t.unsqueeze(0) if t.ndim == 1 else t
            expected = (n if n is not None else t.shape[0], width)
        if tuple(t.shape) != expected:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {expected}")
        return t

    # ---------------------------------------------------------------- sampling
    def sample(
        self,
        batch_size: int,
        offline_fraction: float | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> Batch:
        """Draw ``batch_size`` rows uniformly with replacement.

        ``offline_fraction`` None uses ``config.offline_fraction``; if that is None too, rows are
        drawn uniformly over everything stored. Otherwise exactly
        :func:`offline_rows_in_batch` rows come from the offline part, first, and the rest from
        the online ring (see the module docstring for what happens when a part is empty).
        ``generator`` (on the store's device, or CPU for a CPU store) makes the draw reproducible.
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if len(self) == 0:
            raise ValueError("cannot sample from an empty replay store")
        fraction = self.config.offline_fraction if offline_fraction is None else offline_fraction
        gen_device = generator.device if generator is not None else self.device
        if fraction is None:
            # Offline rows and filled ring slots are one contiguous block of rows.
            index = torch.randint(len(self), (batch_size,), generator=generator, device=gen_device)
            is_offline = index < self.offline_size
        else:
            n_offline = offline_rows_in_batch(batch_size, fraction)
            if self.online_size == 0:
                n_offline = batch_size
            elif self.offline_size == 0:
                n_offline = 0
            index = torch.cat(
                [
                    torch.randint(max(self.offline_size, 1), (n_offline,), generator=generator, device=gen_device),
                    torch.randint(max(self.online_size, 1), (batch_size - n_offline,), generator=generator, device=gen_device)
                    + self.offline_size,
                ]
            )
            is_offline = torch.arange(batch_size, device=gen_device) < n_offline
        index = index.to(self.device)
        return Batch(
            obs=self.obs.index_select(0, index),
            action=self.action.index_select(0, index),
            reward=self.reward.index_select(0, index),
            next_obs=self.next_obs.index_select(0, index),
            terminated=self.terminated.index_select(0, index).to(torch.float32),
            truncated=self.truncated.index_select(0, index).to(torch.float32),
            mc_return=self.mc_return.index_select(0, index),
            mc_horizon=self.mc_horizon.index_select(0, index),
            is_offline=is_offline.to(device=self.device, dtype=torch.float32),
        )

    # ------------------------------------------------------------- persistence
    def online_state(self) -> dict[str, Any]:
        """The online ring's filled slots (slot order, CPU copies) and position: with
        :meth:`load_online_state`, what a resumed run needs of the store (its offline part is rebuilt
        from the dataset). Tensors and ints only, so ``torch.load(weights_only=True)`` reads it."""
        rows = slice(self.offline_size, self.offline_size + self.online_size)
        return {
            "fields": {name: tensor[rows].cpu().clone() for name, tensor in self._tensors().items()},
            "online_size": self.online_size,
            "online_cursor": self.online_cursor,
            "online_added": self.online_added,
            "online_episode_start": self.online_episode_start,
        }

    def load_online_state(self, state: dict[str, Any]) -> None:
        """Refill the ring from :meth:`online_state` of a store with the same widths, and the same
        capacity or, if the saved ring never wrapped, at least its rows (a run extended with more steps
        gets a larger ring); ValueError, naming the difference, otherwise."""
        size, added = int(state["online_size"]), int(state["online_added"])
        if not 0 <= size <= self.online_capacity:
            raise ValueError(f"the saved ring holds {size} rows, this store's ring only {self.online_capacity}")
        if added > size and size != self.online_capacity:
            raise ValueError(f"the saved ring wrapped at {size} rows; this store's ring holds {self.online_capacity}")
        for name, tensor in self._tensors().items():
            saved = state["fields"][name]
            if tuple(saved.shape) != (size, *tensor.shape[1:]) or saved.dtype != tensor.dtype:
                raise ValueError(f"saved ring field '{name}' is {saved.dtype} {tuple(saved.shape)}, expected {(size, *tensor.shape[1:])}")
            tensor[self.offline_size : self.offline_size + size] = saved.to(self.device)
        self.online_size = size
        self.online_cursor = added % max(self.online_capacity, 1)  # the saved cursor, unless a larger ring took the rows
        self.online_added = added
        self.online_episode_start = int(state["online_episode_start"])

    def save(self, path: PathLike) -> Path:
        """Write the store to directory ``path`` atomically, for an exact resume with :meth:`load`.

        Layout: ``replay.json`` (format version, sizes, ring position, config, dataset metadata,
        normalisation statistics) and one ``<field>.npy`` per tensor holding the
        ``len(self)`` stored rows (ring slots in slot order). The unfilled ring is not written.
        """
        path = Path(path)
        rows = len(self)
        with atomic_path(path) as tmp:
            tmp.mkdir()
            for name, tensor in self._tensors().items():
                np.save(tmp / f"{name}.npy", tensor[:rows].cpu().numpy(), allow_pickle=False)
            header = {
                "format_version": STORE_FORMAT_VERSION,
                "obs_dim": self.obs_dim,
                "action_dim": self.action_dim,
                "offline_size": self.offline_size,
                "online_size": self.online_size,
                "online_cursor": self.online_cursor,
                "online_added": self.online_added,
                "online_episode_start": self.online_episode_start,
                "config": dataclasses.asdict(self.config),
                "metadata": json.loads(self.metadata.to_json()),
                "normalization": None if self.normalization is None else self.normalization.to_dict(),
            }
            (tmp / "replay.json").write_text(json.dumps(header, indent=1))
        return path

    @classmethod
    def load(cls, path: PathLike, *, device: str | torch.device = "cpu") -> "ReplayStore":
        """Rebuild a store written by :meth:`save`; it samples exactly as the saved one did."""
        path = Path(path)
        header_file = path / "replay.json"
        if not header_file.is_file():
            raise CheckpointError("not a saved replay store (replay.json is missing)", file=str(path))
        try:
            header = json.loads(header_file.read_text())
            version = header["format_version"]
            if version != STORE_FORMAT_VERSION:
                raise CheckpointError(
                    f"replay store format {version} is not supported (expected {STORE_FORMAT_VERSION})",
                    file=str(header_file),
                )
            config = ReplayConfig(**header["config"])
            metadata = DatasetMetadata.from_json(json.dumps(header["metadata"]), file=str(header_file))
            store = cls(
                int(header["obs_dim"]), int(header["action_dim"]), offline_size=int(header["offline_size"]),
                config=config, metadata=metadata, device=device,
            )
            store.online_size = int(header["online_size"])
            store.online_cursor = int(header["online_cursor"])
            store.online_added = int(header["online_added"])
            store.online_episode_start = int(header["online_episode_start"])
            stats = header["normalization"]
            store.normalization = None if stats is None else NormalizationStats.from_dict(stats)
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"replay.json is incomplete or invalid ({exc!r})", file=str(header_file)) from None
        if not (0 <= store.online_size <= config.online_capacity and 0 <= store.online_cursor < max(config.online_capacity, 1)):
            raise CheckpointError("ring position or size outside the capacity", file=str(header_file))
        rows = len(store)
        for name, tensor in store._tensors().items():
            file = path / f"{name}.npy"
            try:
                array = np.load(file, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"cannot read saved tensor ({exc})", file=str(file)) from None
            expected = (rows, *tensor.shape[1:])
            if array.shape != expected or array.dtype != _numpy_dtype(tensor.dtype):
                raise CheckpointError(
                    f"holds {array.dtype} {array.shape}, expected {_numpy_dtype(tensor.dtype)} {expected}", file=str(file)
                )
            if tensor.device.type == "cpu":
                np.copyto(tensor[:rows].numpy(), array)
            else:
                tensor[:rows].copy_(torch.from_numpy(np.array(array)))
            del array
        return store


def _prefetch(items: Iterator[T], *, depth: int) -> Iterator[T]:
    """Yield ``items`` while a background thread already produces the next ``depth`` of them.

    Parquet decoding and numpy copies release the GIL, so decoding record batch k+1 overlaps with
    writing batch k into the store. An exception in the producer is re-raised here; closing this
    generator (or an exception in the consumer) stops and joins the producer.
    """
    buffer: queue.Queue[tuple[bool, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, Any]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((False, None))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            put((False, exc))

    thread = threading.Thread(target=produce, name="dime-offline-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            is_item, value = buffer.get()
            if not is_item:
                if value is not None:
                    raise value
                return
            yield value
    finally:
        stop.set()
        thread.join()


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    return np.dtype(np.bool_) if dtype == torch.bool else np.dtype(np.float32)


def _configure(config: ReplayConfig | None, overrides: dict[str, Any]) -> ReplayConfig:
    known = {f.name for f in dataclasses.fields(ReplayConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown ReplayConfig field(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(config or ReplayConfig(), **overrides)


class _OfflineFiller:
    """Writes dataset chunks into a store's offline rows, then finishes returns and statistics.

    Checks are fused into the copy so that each value is touched once while it is in cache:
    non-finite obs/action/reward/next_obs (:class:`NonFiniteError`), actions outside the declared
    bounds (:class:`BoundsError`), and, once all rows are in, the episode structure (sorted by
    ``(episode_id, step)``, steps counting from 0, flags only on an episode's last row) with the
    schema's own validator. Whether ``next_obs`` matches the next row's ``obs`` is not checked
    here: the store keeps ``next_obs`` as given, and ``dime-offline data inspect`` reports gaps.
    Besides the store only (N,) episode ids and steps are held, and freed by :meth:`finish`.
    """

    def __init__(self, store: ReplayStore, *, file: str | None) -> None:
        self.store = store
        self.file = file
        self.rows = 0
        n = store.offline_size
        self.episode_id = np.empty(n, dtype=np.int64)
        self.step = np.empty(n, dtype=np.int32)
        self.bounds = action_bounds(store.metadata, store.action_dim, file=file)
        self.obs_moments = RunningMoments(store.obs_dim)
        self.reward_moments = RunningMoments(1)
        # The chunks are copied into numpy views of the (CPU) tensors, or staged for another device.
        on_cpu = store.device.type == "cpu"
        self.views = {name: getattr(store, name).numpy() if on_cpu else None for name in FIELDS}

    def add(self, chunk: TransitionData) -> None:
        store = self.store
        n = len(chunk)
        lo, hi = self.rows, self.rows + n
        if hi > store.offline_size:
            raise SchemaError(f"holds more rows than its metadata declares ({store.offline_size})", file=self.file)
        if chunk.obs_dim != store.obs_dim or chunk.action_dim != store.action_dim:
            raise SchemaError(
                f"chunk at row {lo} has widths obs {chunk.obs_dim}/action {chunk.action_dim},"
                f" expected {store.obs_dim}/{store.action_dim}", file=self.file, row=lo,
            )
        self.episode_id[lo:hi] = chunk.episode_id
        self.step[lo:hi] = chunk.step
        # The moments double as finiteness checks: a NaN or inf anywhere makes the chunk mean non-finite.
        self.obs_moments.update(chunk.obs)
        self._require_finite("obs", chunk.obs, self.obs_moments.mean, lo)
        self.reward_moments.update(chunk.reward)
        self._require_finite("reward", chunk.reward, self.reward_moments.mean, lo)
        self._require_finite("next_obs", chunk.next_obs, chunk.next_obs.sum(dtype=np.float64), lo)
        self._require_finite("action", chunk.action, chunk.action.sum(dtype=np.float64), lo)
        action_view = self.views["action"]
        scaled = to_unit_box(
            chunk.action, self.bounds, out=None if action_view is None else action_view[lo:hi], file=self.file, first_row=lo
        )
        values = {
            "obs": chunk.obs, "action": scaled, "reward": chunk.reward, "next_obs": chunk.next_obs,
            "terminated": chunk.terminated, "truncated": chunk.truncated,
        }
        for name, array in values.items():
            view = self.views[name]
            if view is None:
                getattr(store, name)[lo:hi].copy_(torch.from_numpy(np.ascontiguousarray(array)))
            elif name != "action":  # actions were scaled straight into the store
                np.copyto(view[lo:hi], array, casting="same_kind")
        self.rows = hi

    def _require_finite(self, name: str, array: np.ndarray, summary: np.ndarray | np.floating, first_row: int) -> None:
        """Raise NonFiniteError naming the first bad row when ``summary`` (a sum or mean of ``array``) is not finite."""
        if np.isfinite(summary).all():
            return
        bad_rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
        row = first_row + int(bad_rows[0])
        raise NonFiniteError(
            f"{len(bad_rows)} row(s) of the record batch starting at row {first_row} hold NaN or inf;"
            f" first at row {row} (drop or repair them before loading)",
            file=self.file, column=name, row=row,
        )

    def finish(self) -> None:
        store = self.store
        n = store.offline_size
        if self.rows != n:
            raise SchemaError(f"holds {self.rows} rows, its metadata declares {n}", file=self.file)
        if n == 0:
            raise DataError(
                "dataset is empty (0 transitions); use ReplayStore.empty for a store without offline data", file=self.file
            )
        host = {
            name: view[:n] if view is not None else getattr(store, name)[:n].cpu().numpy()
            for name, view in self.views.items() if name in ("reward", "terminated", "truncated")
        }
        # Episode structure, with the schema's validator run on the scalar columns only.
        no_features = np.empty((n, 0), dtype=np.float32)
        TransitionData(
            episode_id=self.episode_id, step=self.step, obs=no_features, action=no_features,
            reward=host["reward"], next_obs=no_features, terminated=host["terminated"], truncated=host["truncated"],
            metadata=DatasetMetadata(),
        ).validate(file=self.file, check_continuity=False)
        ends = episode_ends_from_ids(self.episode_id)
        returns = discounted_returns_to_go(
            host["reward"], ends, host["terminated"], store.config.gamma, truncation=store.config.truncation
        )
        store.mc_return[:n].copy_(torch.from_numpy(returns))
        store.mc_horizon[:n].copy_(torch.from_numpy(discounted_horizon(ends, host["terminated"], store.config.gamma)))
        store.logged_episodes = LoggedEpisodes.from_rows(host["reward"], ends, host["terminated"])
        store.normalization = NormalizationStats.from_moments(
            self.obs_moments, self.reward_moments, episode_returns=store.logged_episodes.returns,
            std_floor=store.config.std_floor, reward_scaling=store.config.reward_scaling,
        )
        del self.episode_id, self.step, self.views
