"""Put irregular per-tag samples on the control grid, incrementally and without look-ahead.

The grid is ``t_k = origin + k * dt``. A *channel* is one tag aligned one way and evaluated at one
point of each step:

* ``state`` channels are evaluated at ``t_k`` and use only samples at or before ``t_k``;
* ``interval`` channels (actions by default) describe what was applied over ``[t_k, t_k + dt)``
  and are evaluated at ``t_{k+1} - 1 us``.

Alignment methods (``x`` is the evaluation time, ``w = dt``):

* ``stepped``: the last sample at or before ``x``; missing if it is bad or older than ``max_gap``;
* ``mean``: the time-weighted mean over ``(x - w, x]`` of the sample-and-hold signal (each sample
  holds until the next one, at most ``max_gap``; bad samples hold "unknown");
* ``interpolate``: the same mean of the linearly interpolated signal. A segment is sloped only
  when both of its end samples are at or before ``x``; the stretch after the last sample is held
  flat, because its slope would need a future sample.

``mean``/``interpolate`` need ``min_coverage * w`` of known signal in the window.

*Bridging* (a channel's ``hold_bad_us`` > 0): a bad sample (NaN) taken before the tag's last good
sample is ``hold_bad_us`` old, with no stale stretch (samples further apart than ``max_gap``)
since that good sample, is replaced by the last good value, held until that age. Values that rest
on such a replacement are flagged ``bridged``; past the age the signal is unknown as without
bridging.

:class:`GridAligner` consumes :class:`~dime_offline.converters.readers.SampleChunk`\\ s in (roughly)
time order, finalises every grid step whose evaluation times are behind the data's watermark minus
``lateness``, and keeps per tag only the samples later steps can still need: memory follows the
chunk size. A sample that arrives for an already finalised time raises :class:`OutOfOrderError`
(the pipeline then re-reads the source in one in-memory pass).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dime_offline.converters.readers import SampleChunk

US = 1_000_000


class OutOfOrderError(Exception):
    """A sample arrived for a time the aligner has already finalised (internal signal)."""


@dataclass(frozen=True)
class Channel:
    """One aligned series."""

    key: str
    """Unique key of the channel (e.g. 'obs:TI_101_PV')."""
    tag: int
    """Index of the source tag in the registry."""
    method: str
    """'stepped', 'mean' or 'interpolate'."""
    max_gap_us: int
    """Longest hold of one sample, microseconds."""
    point: str = "state"
    """'state' (evaluate at t_k) or 'interval' (evaluate at t_{k+1} - 1 us)."""
    hold_bad_us: int = 0
    """Age up to which the last good value bridges bad samples (0: no bridging)."""


INTERVAL_BINS_S = np.geomspace(1e-3, 1e7, 2001)
"""Edges (seconds) of the log-spaced histogram of inter-sample intervals (1.2 % wide bins)."""
_BINS_PER_DECADE = 200.0
"""(len(INTERVAL_BINS_S) - 1) / 10 decades."""


@dataclass
class TagGaps:
    """Inter-sample interval statistics of one tag (for the report and the profiler)."""

    longest_us: int = 0
    over_max_gap: int = 0
    intervals: int = 0
    """Number of inter-sample intervals seen."""
    histogram: np.ndarray = field(default_factory=lambda: np.zeros(len(INTERVAL_BINS_S) + 1, np.int64))
    """Counts of intervals per bin of :data:`INTERVAL_BINS_S` (first: shorter, last: longer)."""

    def add(self, diffs_us: np.ndarray, max_gap_us: int | None) -> None:
        """Count intervals (us) between consecutive samples."""
        if not len(diffs_us):
            return
        self.longest_us = max(self.longest_us, int(diffs_us.max()))
        if max_gap_us is not None:
            self.over_max_gap += int((diffs_us > max_gap_us).sum())
        self.intervals += len(diffs_us)
        # The bin of a log-spaced histogram by arithmetic (searchsorted over 2001 edges costs 3x more).
        with np.errstate(divide="ignore", invalid="ignore"):
            position = (np.log10(np.maximum(diffs_us, 1).astype(np.float64)) - 3.0) * _BINS_PER_DECADE + 1.0
        bins = np.clip(position, 0, len(INTERVAL_BINS_S)).astype(np.int64)
        self.histogram += np.bincount(bins, minlength=len(self.histogram))

    def quantile_s(self, q: float) -> float | None:
        """Approximate ``q`` quantile of the intervals in seconds (a bin's geometric centre), None without any."""
        if self.intervals == 0:
            return None
        k = int(np.searchsorted(np.cumsum(self.histogram), q * self.intervals, side="left"))
        edges = np.r_[INTERVAL_BINS_S[0], INTERVAL_BINS_S, INTERVAL_BINS_S[-1]]
        return float(np.sqrt(edges[k] * edges[k + 1]))


@dataclass
class AlignedGrid:
    """Aligned values for grid steps 0..K (K+1 steps)."""

    origin_us: int
    dt_us: int
    times: np.ndarray
    """(K+1,) int64 grid times t_k, microseconds since the epoch (UTC)."""
    values: dict[str, np.ndarray]
    """channel key -> (K+1,) float64 (NaN where invalid)."""
    valid: dict[str, np.ndarray]
    """channel key -> (K+1,) bool."""
    bridged: dict[str, np.ndarray] = field(default_factory=dict)
    """channel key -> (K+1,) bool: the valid value rests on a bridged bad sample."""
    gaps: dict[int, TagGaps] = field(default_factory=dict)
    """tag index -> gap statistics."""
    in_memory: bool = False
    """True when the source was not time-ordered and was aligned in one in-memory pass."""


class _TagBuffer:
    """Time-sorted samples of one tag still needed by future grid steps."""

    def __init__(self, bridge_us: int = 0) -> None:
        self.ts = np.zeros(0, np.int64)
        self.val = np.zeros(0, np.float64)
        self.bridge_us = bridge_us
        """Longest hold_bad of the tag's channels: a good sample younger than this is kept for bridging."""

    def add(self, ts: np.ndarray, val: np.ndarray) -> None:
        if len(ts) > 1 and (np.diff(ts) < 0).any():
            order = np.argsort(ts, kind="stable")
            ts, val = ts[order], val[order]
        if len(self.ts) and len(ts) and ts[0] < self.ts[-1]:
            ts = np.concatenate([self.ts, ts])
            val = np.concatenate([self.val, val])
            order = np.argsort(ts, kind="stable")
            self.ts, self.val = ts[order], val[order]
        else:
            self.ts = np.concatenate([self.ts, ts])
            self.val = np.concatenate([self.val, val])

    def trim(self, before_us: int) -> None:
        """Drop samples not needed for windows starting after ``before_us`` (keep the one holding then,
        and, for bridging, the last good sample before it while it is younger than ``bridge_us``)."""
        keep = max(int(np.searchsorted(self.ts, before_us, side="right")) - 1, 0)
        if keep and self.bridge_us and not np.isfinite(self.val[keep]):
            good = np.flatnonzero(np.isfinite(self.val[:keep]))
            if len(good) and self.ts[good[-1]] >= before_us - self.bridge_us:
                keep = int(good[-1])
        if keep:
            self.ts = self.ts[keep:]
            self.val = self.val[keep:]


def bridge_bad_samples(
    ts: np.ndarray, val: np.ndarray, max_gap_us: int, hold_bad_us: int,
) -> tuple[np.ndarray, int | np.ndarray, np.ndarray | None]:
    """Values, holds (us) and bridged flags with bad samples bridged (module docstring).

    A bad sample is bridged when the tag's last good sample is younger than ``hold_bad_us`` and no
    two samples since it are further apart than ``max_gap_us`` (the signal never went stale).
    Shapes: (n,) values; the hold is the scalar ``max_gap_us`` and the flags None when nothing is
    bridged, else (n,) arrays. The work is per bad sample, so clean data costs one pass.
    """
    if hold_bad_us <= 0 or len(ts) == 0:
        return val, max_gap_us, None
    bad = np.flatnonzero(np.isnan(val))
    if not len(bad):
        return val, max_gap_us, None
    good = np.flatnonzero(~np.isnan(val))
    last_good = np.searchsorted(good, bad) - 1
    has_good = last_good >= 0
    good_at = good[np.maximum(last_good, 0)] if len(good) else np.zeros(len(bad), np.int64)
    stale = np.flatnonzero(np.diff(ts) > max_gap_us) + 1  # samples that follow a stale stretch
    last_stale = stale[np.maximum(np.searchsorted(stale, bad, side="right") - 1, 0)] if len(stale) else None
    ok = has_good & (ts[bad] - ts[good_at] < hold_bad_us)
    if last_stale is not None:
        ok &= (np.searchsorted(stale, bad, side="right") == 0) | (last_stale <= good_at)
    if not ok.any():
        return val, max_gap_us, None
    bad, good_at = bad[ok], good_at[ok]
    val = val.copy()
    val[bad] = val[good_at]
    hold = np.full(len(ts), max_gap_us, np.int64)
    hold[bad] = ts[good_at] + hold_bad_us - ts[bad]
    bridged = np.zeros(len(ts), bool)
    bridged[bad] = True
    return val, hold, bridged


def evaluate(
    ts: np.ndarray, val: np.ndarray, x: np.ndarray, method: str, max_gap_us: int, window_us: int,
    min_coverage: float, *, hold_bad_us: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned values, validity and bridged flags at evaluation times ``x`` from sorted samples (ts, val).

    Shapes: ts, val (n,); x (m,) int64. Returns (m,) float64 values (NaN where invalid), (m,) bool
    valid, (m,) bool bridged (valid, and resting on a bridged bad sample). Only samples with
    ``ts <= x`` influence the value at ``x``.
    """
    m = len(x)
    if len(ts) == 0 or m == 0:
        return np.full(m, np.nan), np.zeros(m, bool), np.zeros(m, bool)
    val, hold_us, bridged = bridge_bad_samples(ts, val, max_gap_us, hold_bad_us)
    per_sample = bridged is not None  # else one hold for all samples (the fast path)
    k = np.searchsorted(ts, x, side="right") - 1
    if method == "stepped":
        kc = np.maximum(k, 0)
        v = val[kc]
        ok = (k >= 0) & (x - ts[kc] <= (hold_us[kc] if per_sample else hold_us)) & np.isfinite(v)
        return np.where(ok, v, np.nan), ok, (ok & bridged[kc]) if per_sample else np.zeros(m, bool)
    base = ts[0]
    t = (ts - base) / US
    hold = hold_us / US
    w = window_us / US
    known = np.isfinite(val)
    vz = np.where(known, val, 0.0)
    seg = np.minimum(np.diff(t), hold[:-1] if per_sample else hold)
    sloped = np.zeros(len(ts) - 1, bool)
    if method == "interpolate":
        # A bridged sample holds the last good value flat: no slope into or out of it.
        real = known & ~bridged if per_sample else known
        sloped = real[:-1] & real[1:] & (np.diff(t) <= (hold[:-1] if per_sample else hold))
    seg_int = np.where(sloped, 0.5 * (vz[:-1] + vz[1:]) * seg, vz[:-1] * seg)
    seg_known = np.where(sloped | known[:-1], seg, 0.0)
    ci = np.concatenate([[0.0], np.cumsum(seg_int)])
    ck = np.concatenate([[0.0], np.cumsum(seg_known)])
    cb = np.concatenate([[0.0], np.cumsum(np.where(bridged[:-1], seg, 0.0))]) if per_sample else None
    xs = (x - base) / US
    ys = xs - w
    j = np.searchsorted(t, ys, side="right") - 1

    def held(idx: np.ndarray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ic = np.maximum(idx, 0)
        d = np.minimum(at - t[ic], hold[ic] if per_sample else hold)
        integral = np.where(idx >= 0, ci[ic] + vz[ic] * d, 0.0)
        cover = np.where(idx >= 0, ck[ic] + known[ic] * d, 0.0)
        bridged_cover = None if cb is None else np.where(idx >= 0, cb[ic] + bridged[ic] * d, 0.0)
        return integral, cover, bridged_cover

    end_int, end_cov, end_br = held(k, xs)
    start_int, start_cov, start_br = held(j, ys)
    if method == "interpolate":
        jc = np.clip(j, 0, len(ts) - 2) if len(ts) > 1 else np.zeros_like(j)
        closed = (j >= 0) & (j < k) & (len(ts) > 1)
        if closed.any() and len(ts) > 1:
            is_sloped = closed & sloped[jc]
            d = ys - t[jc]
            length = np.diff(t)[jc]
            with np.errstate(divide="ignore", invalid="ignore"):
                part = ci[jc] + vz[jc] * d + (vz[np.minimum(jc + 1, len(ts) - 1)] - vz[jc]) * d * d / (2 * length)
            start_int = np.where(is_sloped, part, start_int)
            start_cov = np.where(is_sloped, ck[jc] + d, start_cov)
    cover = end_cov - start_cov
    ok = cover >= min_coverage * w - 1e-9
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (end_int - start_int) / cover
    ok &= np.isfinite(mean)
    on_bridge = np.zeros(m, bool) if end_br is None else ok & (end_br - start_br > 1e-9)
    return np.where(ok, mean, np.nan), ok, on_bridge


class GridAligner:
    """Incremental grid alignment of all channels (see the module docstring)."""

    def __init__(
        self, channels: list[Channel], n_tags: int, dt_us: int, *, lateness_us: int = 0,
        origin_us: int | None = None, min_coverage: float = 0.5, tag_gap_us: dict[int, int] | None = None,
    ) -> None:
        self.channels = channels
        self.dt_us = int(dt_us)
        self.lateness_us = int(lateness_us)
        self.origin_us = origin_us
        self.min_coverage = min_coverage
        bridge_us = [0] * n_tags
        for c in channels:
            bridge_us[c.tag] = max(bridge_us[c.tag], c.hold_bad_us)
        self.buffers = [_TagBuffer(b) for b in bridge_us]
        self.tag_gap_us = tag_gap_us or {}
        self.gaps = {i: TagGaps() for i in range(n_tags)}
        self.last_seen = np.full(n_tags, np.iinfo(np.int64).min, np.int64)
        self.watermark: int | None = None
        self.min_seen: int | None = None
        self.next_step = 0
        self.done_until = np.iinfo(np.int64).min  # latest evaluation time already computed
        self.has_interval = any(c.point == "interval" for c in channels)
        self._times: list[np.ndarray] = []
        self._values: dict[str, list[np.ndarray]] = {c.key: [] for c in channels}
        self._valid: dict[str, list[np.ndarray]] = {c.key: [] for c in channels}
        self._bridged: dict[str, list[np.ndarray]] = {c.key: [] for c in channels}

    # ------------------------------------------------------------------ input
    def push(self, chunk: SampleChunk) -> None:
        """Add a chunk of samples and finalise the grid steps it completes."""
        if len(chunk.ts) == 0:
            return
        first = int(chunk.ts.min())
        self.min_seen = first if self.min_seen is None else min(self.min_seen, first)
        if first <= self.done_until:
            raise OutOfOrderError()
        order = np.argsort(chunk.tag, kind="stable")
        tags = chunk.tag[order]
        bounds = np.flatnonzero(np.diff(tags)) + 1
        starts = np.concatenate([[0], bounds])
        ends = np.concatenate([bounds, [len(tags)]])
        for s, e in zip(starts.tolist(), ends.tolist()):
            idx = order[s:e]
            tag = int(tags[s])
            ts, val = chunk.ts[idx], chunk.value[idx]
            self._gap_stats(tag, ts)
            self.buffers[tag].add(ts, val)
        top = int(chunk.ts.max())
        self.watermark = top if self.watermark is None else max(self.watermark, top)
        self._finalise(self.watermark - self.lateness_us - 1)

    def _gap_stats(self, tag: int, ts: np.ndarray) -> None:
        sorted_ts = np.sort(ts) if len(ts) > 1 and (np.diff(ts) < 0).any() else ts
        prev = self.last_seen[tag]
        series = sorted_ts if prev == np.iinfo(np.int64).min else np.concatenate([[prev], sorted_ts])
        if len(series) > 1:
            self.gaps[tag].add(np.diff(series), self.tag_gap_us.get(tag))
        self.last_seen[tag] = max(prev, int(sorted_ts[-1]))

    # ------------------------------------------------------------------ output
    def _finalise(self, horizon: int, *, last_step: int | None = None) -> None:
        """Evaluate all steps whose evaluation times are <= horizon (or up to ``last_step``)."""
        offset = self.dt_us - 1 if self.has_interval else 0
        origin = self.origin_us
        if origin is None:
            assert self.min_seen is not None
            origin = self.min_seen - self.min_seen % self.dt_us
        if last_step is None:
            last_step = (horizon - offset - origin) // self.dt_us
        if last_step < self.next_step:
            return
        # The origin is fixed at the first finalised step, from the earliest sample so far: a later
        # sample before it is out of order (and triggers the in-memory pass).
        self.origin_us = origin
        steps = np.arange(self.next_step, last_step + 1, dtype=np.int64)
        times = self.origin_us + steps * self.dt_us
        self._times.append(times)
        for ch in self.channels:
            buf = self.buffers[ch.tag]
            x = times + (self.dt_us - 1 if ch.point == "interval" else 0)
            v, ok, bridged = evaluate(buf.ts, buf.val, x, ch.method, ch.max_gap_us, self.dt_us, self.min_coverage,
                                      hold_bad_us=ch.hold_bad_us)
            self._values[ch.key].append(v)
            self._valid[ch.key].append(ok)
            self._bridged[ch.key].append(bridged)
        self.next_step = int(last_step) + 1
        self.done_until = int(times[-1]) + offset
        for buf in self.buffers:
            buf.trim(self.done_until - self.dt_us)

    def finish(self) -> AlignedGrid:
        """Finalise the remaining steps (up to the last sample) and return the grid."""
        if self.watermark is None:
            return AlignedGrid(0, self.dt_us, np.zeros(0, np.int64), {}, {}, {}, self.gaps)
        assert self.min_seen is not None
        origin = self.origin_us if self.origin_us is not None else self.min_seen - self.min_seen % self.dt_us
        self._finalise(self.watermark, last_step=int((self.watermark - origin) // self.dt_us))
        times = np.concatenate(self._times) if self._times else np.zeros(0, np.int64)
        values = {k: np.concatenate(v) if v else np.zeros(0) for k, v in self._values.items()}
        valid = {k: np.concatenate(v) if v else np.zeros(0, bool) for k, v in self._valid.items()}
        bridged = {k: np.concatenate(v) if v else np.zeros(0, bool) for k, v in self._bridged.items()}
        return AlignedGrid(self.origin_us, self.dt_us, times, values, valid, bridged, self.gaps)
