"""Profile a historian export before writing its spec: per-tag clocks, quality, gaps, ranges.

:func:`profile_export` reads every tag of an export (long or wide, the same readers as the
converter, in chunks) and returns an :class:`ExportProfile`: per tag its median and 95th-percentile
logging interval, its position within the scan cycle (clock skew), the quality mix, gaps, the value
range, and a guess whether it is a stepped signal (setpoints, outputs, modes, counters) or an analog
one. :meth:`ExportProfile.scaffold_spec` turns that into a telemetry spec to edit (control period,
holds sized to each tag's logging interval, ``hold_bad`` when there are bad samples, offsets for
skewed tags, batch/mode/trip tags found by name). No torch: ``dime-offline data profile`` starts fast.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dime_offline.converters.align import INTERVAL_BINS_S, US, TagGaps
from dime_offline.converters.readers import ChunkReader, TagRegistry
from dime_offline.converters.spec import (
    ColumnSpec,
    QualitySpec,
    ReaderSpec,
    default_feature_name,
    spec_from_dict,
)
from dime_offline.errors import ConfigError, DataError

_DISTINCT_CAP = 64
"""Distinct values remembered per tag (beyond that a tag is not a step signal of few levels)."""
_PHASE_SAMPLES = 4096
"""Timestamps per tag kept to estimate its position in the scan cycle."""
_PHASE_CONCENTRATION = 0.8
"""Mean resultant length of the scan-cycle angles above which a tag counts as clocked by the scan."""
_GAP_FACTOR = 5.0
"""An interval longer than this many median intervals counts as a gap."""
_ACTION_NAME = re.compile(r"(\.|_|-)(OP|OUT|OUTPUT|MV|CV)$", re.IGNORECASE)
_SETPOINT_NAME = re.compile(r"(\.|_|-)(SP|SETPOINT)$", re.IGNORECASE)
_TRIP_NAME = re.compile(r"TRIP|ESD|SIS|INTERLOCK", re.IGNORECASE)


@dataclass
class ProfileConfig:
    """What to profile and how to read it (the reading options mean what they mean in a spec)."""

    source: str = ""
    """Historian export: a CSV/Parquet file or a folder of them, long or wide."""
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    """Column names of the export (detected when unset)."""
    quality: QualitySpec = field(default_factory=QualitySpec)
    """How quality codes read; unknown codes count as bad here (the profile never stops on them)."""
    reader: ReaderSpec = field(default_factory=ReaderSpec)
    """Format and chunk size."""
    timezone: str | None = None
    """IANA zone of timestamps without an offset."""
    ambiguous: str = "raise"
    """Local times in a DST fall-back hour: 'raise', 'earliest' or 'latest'."""
    max_tags: int = 1000
    """Profile at most this many tags (the first seen); the rest are counted."""


@dataclass
class TagProfile:
    """What one tag looks like in the export."""

    tag: str
    samples: int
    kind: str
    """'numeric' or 'text' (mostly non-numeric values: batch ids, modes)."""
    signal: str
    """Guess: 'stepped' (few levels or mostly repeated values) or 'analog'."""
    median_interval_s: float | None
    """Typical time between two samples (approximate, 1.2 % bins)."""
    p95_interval_s: float | None
    longest_gap_s: float
    gaps: int
    """Intervals longer than 5 median intervals."""
    phase_s: float | None
    """Where its samples fall in the export's scan cycle (circular mean, in (-P/2, P/2]); a clock
    skew the spec's ``offset: -phase`` removes. None for tags not logged on the scan clock."""
    good: int
    uncertain: int
    bad: int
    """Bad samples (quality or digital states in a numeric tag; not the labels of a text tag)."""
    min: float | None
    max: float | None
    distinct: int | None
    """Distinct values, None when more than 64."""
    repeat_fraction: float
    """Share of consecutive good samples with the same value."""
    units: str | None
    text_states: dict[str, int]


@dataclass
class ExportProfile:
    """The per-tag profile of an export."""

    source: str
    files: list[str]
    rows_read: int
    time_start: str | None
    time_end: str | None
    scan_period_s: float | None
    """The export's scan cycle: the fastest median logging interval of an analog tag."""
    tags: list[TagProfile]
    skipped_tags: int
    """Tags beyond ``max_tags``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A plain-text table for terminals."""
        lines = [
            f"source      {self.source}",
            f"rows        {self.rows_read:,}; {len(self.tags)} tags"
            + (f" (+{self.skipped_tags} not profiled)" if self.skipped_tags else ""),
            f"time        {self.time_start} .. {self.time_end}",
            f"scan cycle  {_g(self.scan_period_s)} s (fastest median interval of an analog tag)",
            "",
        ]
        header = (f"{'tag':<24} {'kind':<7} {'signal':<7} {'samples':>9} {'every s':>8} {'p95 s':>8} {'phase s':>7}"
                  f" {'bad%':>6} {'unc%':>6} {'gaps':>5} {'max gap s':>9} {'min':>10} {'max':>10}  text states")
        lines += [header, "-" * len(header)]
        for t in self.tags:
            states = ", ".join(f"{k} x{v}" for k, v in list(t.text_states.items())[:3])
            lines.append(
                f"{t.tag[:24]:<24} {t.kind:<7} {t.signal:<7} {t.samples:>9,} {_g(t.median_interval_s):>8}"
                f" {_g(t.p95_interval_s):>8} {_g(t.phase_s):>7} {_pct(t.bad, t.samples):>6} {_pct(t.uncertain, t.samples):>6}"
                f" {t.gaps:>5,} {t.longest_gap_s:>9.1f} {_g(t.min):>10} {_g(t.max):>10}  {states}"
            )
        return "\n".join(lines)

    # ------------------------------------------------------------------ scaffold
    def scaffold_spec(self) -> dict[str, Any]:
        """A telemetry spec to edit: every numeric tag as a state (outputs as actions), holds sized
        to the logging intervals, ``hold_bad`` when tags have bad samples, offsets for skew, and
        batch/mode/trip tags found by name. It loads as it is; the reward is a placeholder."""
        dt = _nice(self.scan_period_s or 1.0)
        numeric = [t for t in self.tags if t.kind == "numeric" and t.samples]
        text = [t for t in self.tags if t.kind == "text" and t.samples]
        trips = [t for t in numeric if _TRIP_NAME.search(t.tag) and t.signal == "stepped"]
        numeric = [t for t in numeric if t not in trips]
        actions = [t for t in numeric if _ACTION_NAME.search(t.tag)]
        if not actions and numeric:
            actions = [next((t for t in numeric if t.signal == "stepped"), numeric[-1])]
        if not numeric or len(actions) == len(numeric):
            raise DataError("the export has no numeric tag left for the state; a spec needs observations and actions",
                            file=self.source)
        default_gap = 5 * dt
        has_bad = any(t.bad + t.uncertain for t in numeric)
        hold_bad = _nice(3 * dt) if has_bad else 0.0

        def entry(t: TagProfile, *, action: bool = False) -> dict[str, Any]:
            item: dict[str, Any] = {"tag": t.tag, "name": default_feature_name(t.tag),
                                    "alignment": "stepped" if t.signal == "stepped" else "mean"}
            if t.units:
                item["units"] = t.units
            p95 = t.p95_interval_s or dt
            if 1.5 * p95 > default_gap:
                item["max_gap"] = _seconds(_nice(1.5 * p95, up=True))
            if t.bad + t.uncertain and t.median_interval_s and 2 * t.median_interval_s >= hold_bad:
                item["hold_bad"] = _seconds(_nice(2.5 * t.median_interval_s, up=True))
            if t.phase_s is not None and abs(t.phase_s) >= 0.05 * dt:
                item["offset"] = _seconds(-round(t.phase_s, 3))
            if action and t.min is not None and t.max is not None:
                lo, hi = (t.min, t.max) if t.max > t.min else (t.min - 1.0, t.min + 1.0)
                item["low"], item["high"] = float(lo), float(hi)
            return item

        states = [t for t in numeric if t not in actions]
        spec: dict[str, Any] = {
            "name": "scaffold",
            "control_period": _seconds(dt),
            "max_gap": _seconds(default_gap),
            "hold_bad": _seconds(hold_bad),
            "observations": [entry(t) for t in states if not _SETPOINT_NAME.search(t.tag)],
            "extra_state": [entry(t) for t in states if _SETPOINT_NAME.search(t.tag)],
            "actions": [entry(t, action=True) for t in actions],
        }
        if not spec["observations"]:
            spec["observations"], spec["extra_state"] = spec["extra_state"], []
        episodes = {}
        for t in text:
            if "BATCH" in t.tag.upper() and "batch_tag" not in episodes:
                episodes["batch_tag"] = t.tag
            elif "MODE" in t.tag.upper() and "mode_tag" not in episodes:
                episodes["mode_tag"] = t.tag
        if episodes:
            spec["episodes"] = episodes
        if trips:
            spec["terminals"] = [{"tag": t.tag, "above": 0.5} for t in trips]
        first = spec["observations"][0]["name"]
        spec["reward"] = {"expression": f"-abs(next_{first})",
                          "description": "PLACEHOLDER: write the plant's reward (docs/telemetry.md, Reward)"}
        spec_from_dict(spec)  # the scaffold must load as it is
        return spec


def _g(value: float | None) -> str:
    return "-" if value is None else format(value, ".4g")


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}" if whole else "-"


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _nice(seconds: float, *, up: bool = False) -> float:
    """A round duration near ``seconds`` (1, 2, 5 x 10^k; whole seconds above 1 s), rounded up with ``up``."""
    if seconds <= 0:
        return 0.0
    base = 10.0 ** math.floor(math.log10(seconds))
    steps = [1.0, 2.0, 5.0, 10.0]
    if up:
        return next(s * base for s in steps if s * base >= seconds - 1e-9)
    return min((s * base for s in steps), key=lambda v: abs(math.log(v / seconds)))


class _TagAccumulator:
    """Streaming statistics of one tag's samples."""

    def __init__(self) -> None:
        self.gaps = TagGaps()
        self.last_ts: int | None = None
        self.last_value = np.nan
        self.min = np.inf
        self.max = -np.inf
        self.distinct: set[float] | None = set()
        self.pairs = 0
        self.repeats = 0
        self.stamps: list[np.ndarray] = []
        self.kept_stamps = 0

    def add(self, ts: np.ndarray, val: np.ndarray) -> None:
        order = np.argsort(ts, kind="stable")
        ts, val = ts[order], val[order]
        series = ts if self.last_ts is None else np.r_[self.last_ts, ts]
        self.gaps.add(np.diff(series), None)
        good = val[np.isfinite(val)]
        if len(good):
            self.min = min(self.min, float(good.min()))
            self.max = max(self.max, float(good.max()))
            chain = np.r_[self.last_value, good] if np.isfinite(self.last_value) else good
            self.pairs += len(chain) - 1
            self.repeats += int((np.diff(chain) == 0).sum())
            self.last_value = float(good[-1])
            if self.distinct is not None:
                self.distinct.update(good[:10_000].tolist())  # a set: np.unique would import numpy.ma (~0.03 s)
                if len(self.distinct) > _DISTINCT_CAP:
                    self.distinct = None
        if self.kept_stamps < _PHASE_SAMPLES:
            take = ts[: _PHASE_SAMPLES - self.kept_stamps]
            self.stamps.append(take)
            self.kept_stamps += len(take)
        self.last_ts = int(ts[-1])

    def exact_median_s(self) -> float:
        """Median interval of the kept timestamps (exact, unlike the histogram), snapped to a round
        value within 1 %: the scan period the phases are measured against."""
        stamps = np.concatenate(self.stamps)
        median = float(np.median(np.diff(stamps))) / US
        nice = _nice(median)
        return nice if abs(nice / median - 1) < 0.01 else median

    def phase_s(self, period_s: float | None) -> float | None:
        """Circular mean of the sample times modulo the scan period, in (-P/2, P/2] seconds."""
        if not period_s or not self.stamps:
            return None
        p = round(period_s * US)
        stamps = np.concatenate(self.stamps)
        angle = 2 * np.pi * (stamps % p) / p
        sin, cos = float(np.sin(angle).mean()), float(np.cos(angle).mean())
        if math.hypot(sin, cos) < _PHASE_CONCENTRATION:
            return None  # not logged on the scan clock (exception or on-change reporting): no phase
        return math.atan2(sin, cos) / (2 * np.pi) * period_s


def profile_export(config: ProfileConfig) -> ExportProfile:
    """Read the whole export in chunks and profile every tag (see the module docstring)."""
    if config.max_tags < 1:
        raise ConfigError(f"field 'max_tags': expected >= 1, got {config.max_tags}")
    config.quality.resolve("quality")
    config.quality.unknown = "bad"
    registry = TagRegistry([], grow_to=min(config.max_tags, np.iinfo(np.int16).max))
    reader = ChunkReader(config.source, config, registry)
    acc: list[_TagAccumulator] = []
    t_min, t_max = None, None
    for chunk in reader:
        while len(acc) < len(registry):
            acc.append(_TagAccumulator())
        t_min = int(chunk.ts.min()) if t_min is None else min(t_min, int(chunk.ts.min()))
        t_max = int(chunk.ts.max()) if t_max is None else max(t_max, int(chunk.ts.max()))
        order = np.argsort(chunk.tag, kind="stable")
        tags = chunk.tag[order]
        bounds = np.r_[0, np.flatnonzero(np.diff(tags)) + 1, len(tags)]
        for s, e in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            idx = order[s:e]
            acc[int(tags[s])].add(chunk.ts[idx], chunk.value[idx])
    stats = reader.stats
    if not acc:
        raise DataError("no samples in the export", file=stats.files[0] if len(stats.files) == 1 else config.source)
    profiles = []
    for i, a in enumerate(acc):
        st = stats.per_tag[registry.tags[i].tag]
        text_values = sum(st.text_states.values())
        kind = "text" if st.samples and text_values >= 0.5 * st.samples else "numeric"
        stepped = kind == "text" or (a.distinct is not None and len(a.distinct) <= 20) or (
            a.pairs > 0 and a.repeats / a.pairs >= 0.5)
        median = a.gaps.quantile_s(0.5)
        profiles.append(TagProfile(
            tag=registry.tags[i].tag, samples=st.samples, kind=kind, signal="stepped" if stepped else "analog",
            median_interval_s=median, p95_interval_s=a.gaps.quantile_s(0.95),
            longest_gap_s=a.gaps.longest_us / US,
            gaps=_count_longer(a.gaps, _GAP_FACTOR * median) if median else 0, phase_s=None,
            good=st.good, uncertain=st.uncertain, bad=st.bad - (text_values if kind == "text" else 0),
            min=float(a.min) if np.isfinite(a.min) else None, max=float(a.max) if np.isfinite(a.max) else None,
            distinct=None if a.distinct is None else len(a.distinct),
            repeat_fraction=a.repeats / a.pairs if a.pairs else 0.0,
            units=st.units.most_common(1)[0][0] if st.units else None,
            text_states=dict(st.text_states.most_common(10)),
        ))
    timed = [(p.median_interval_s, p.kind == "numeric" and p.signal == "analog", i)
             for i, p in enumerate(profiles) if p.median_interval_s]
    analog = [x for x in timed if x[1]] or timed
    scan = acc[min(analog)[2]].exact_median_s() if analog else None
    for p, a in zip(profiles, acc):
        if p.kind == "numeric":
            p.phase_s = a.phase_s(scan)
    return ExportProfile(
        source=config.source, files=list(stats.files), rows_read=stats.rows_read,
        time_start=None if t_min is None else str(np.datetime64(t_min, "us")) + "Z",
        time_end=None if t_max is None else str(np.datetime64(t_max, "us")) + "Z",
        scan_period_s=scan, tags=profiles, skipped_tags=max(len(stats.tags_seen) - len(registry), 0),
    )


def _count_longer(gaps: TagGaps, seconds: float) -> int:
    """Intervals longer than ``seconds`` (to the histogram's resolution)."""
    first = int(np.searchsorted(INTERVAL_BINS_S, seconds, side="right"))
    return int(gaps.histogram[first:].sum())
