"""The declarative telemetry spec: which historian tags become states, actions, rewards and episodes.

A spec is a tree of dataclasses, loadable from YAML (:func:`load_spec`) or built in Python. Every
rule it can express is documented in ``docs/telemetry.md``; the field docstrings below are the
reference. Durations are given as seconds (a number) or as text with a unit (``"30s"``,
``"5min"``, ``"2h"``, ``"1d"``, ``"250ms"``); they are stored as float seconds after validation.

Validation happens in ``__post_init__`` / :meth:`TelemetrySpec.validate` and raises
:class:`~dime_offline.errors.ConfigError` naming the offending field, e.g.
``field 'observations[2].alignment': expected one of ['stepped', 'mean', 'interpolate']``.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from dime_offline.config import from_dict
from dime_offline.errors import ConfigError

Alignment = Literal["stepped", "mean", "interpolate"]
RewardFunction = Callable[[Mapping[str, np.ndarray]], np.ndarray]
"""A vectorised reward: maps the expression variables (see ``docs/telemetry.md``) to (N,) rewards."""

_DURATION_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z]*)\s*$")
_REMOVED_ALIASES = {"T": "min", "S": "s", "H": "h", "L": "ms", "m": "min", "M": "min", "U": "us"}


def parse_duration(value: Any, where: str, *, allow_zero: bool = False) -> float:
    """Seconds from a number or a ``"<number><unit>"`` string; ConfigError naming ``where``."""
    if isinstance(value, bool):
        raise ConfigError(f"field '{where}': expected a duration like '30s' or '5min', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.match(value)
        if not match:
            raise ConfigError(f"field '{where}': expected a duration like '30s' or '5min', got {value!r}")
        number, unit = float(match.group(1)), match.group(2) or "s"
        if unit not in _DURATION_UNITS:
            hint = f" (pandas 3 removed '{unit}'; write '{_REMOVED_ALIASES[unit]}')" if unit in _REMOVED_ALIASES else ""
            raise ConfigError(
                f"field '{where}': unknown duration unit '{unit}' in {value!r};"
                f" use one of {', '.join(_DURATION_UNITS)}{hint}"
            )
        seconds = number * _DURATION_UNITS[unit]
    else:
        raise ConfigError(f"field '{where}': expected a duration like '30s' or '5min', got {value!r}")
    if not np.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ConfigError(f"field '{where}': duration must be positive, got {value!r}")
    return seconds


def parse_offset(value: Any, where: str) -> float:
    """Signed seconds from a number or ``"[-]<number><unit>"`` (a clock offset may be negative)."""
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:], where, allow_zero=True)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 0:
        return -parse_duration(-value, where, allow_zero=True)
    return parse_duration(value, where, allow_zero=True)


def normalise_label(value: Any) -> str:
    """Text-tag labels compare as stripped strings; integral numbers as integers ('1.0' -> '1')."""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def default_feature_name(tag: str) -> str:
    """A Python-identifier name for a tag (``"TI-101.PV"`` -> ``"TI_101_PV"``), used in expressions."""
    name = re.sub(r"\W", "_", tag.strip())
    if not name or name[0].isdigit():
        name = "tag_" + name
    return name


@dataclass
class TagSpec:
    """One historian tag and how it is put on the control grid."""

    tag: str = ""
    """Tag (point) name exactly as it appears in the export (long format) or the column name (wide)."""
    name: str | None = None
    """Feature name in the dataset and in reward expressions (an identifier); default: the tag with
    non-identifier characters replaced by '_'."""
    units: str | None = None
    """Engineering unit; default: the export's units column, if any."""
    alignment: str = "mean"
    """'stepped' (last value at or before t: setpoints, modes, valve commands, digital states),
    'mean' (time-weighted mean of the held signal over the control interval ending at t; 'analog' is
    an alias) or 'interpolate' (time-weighted mean of the linearly interpolated signal over that
    interval, past samples only). None of them looks past t."""
    max_gap: float | str | None = None
    """A sample is held for at most this long; older data is missing (default: the spec's max_gap)."""
    hold_bad: float | str | None = None
    """Bridge bad samples: a Bad (or unused Uncertain) sample is skipped and the last good value
    keeps holding until it is this old (default: the spec's hold_bad; 0 turns bridging off, so a
    bad sample makes the signal unknown until the next good one). Grid values resting on a bridge
    are flagged (``obs_valid`` False) and counted per tag in the report."""
    offset: float | str = 0.0
    """Clock correction added to this tag's timestamps before alignment (signed, e.g. '-1.5s' for a
    tag whose time stamps lag the scan by 1.5 s), so that readings of one scan line up."""
    kind: str = "numeric"
    """'numeric', or 'text' for tags whose values are labels (batch ids, modes); text tags are stepped."""
    low: float | None = None
    """Lower bound: for actions the action-space bound (values below are clipped and counted); for
    observations the observation-space bound written to the metadata."""
    high: float | None = None
    """Upper bound, as ``low``."""
    valid_min: float | None = None
    """Values below this are bad quality (sensor range, EURange clamp)."""
    valid_max: float | None = None
    """Values above this are bad quality."""
    timing: str = "interval"
    """Actions only: 'interval' (the command applied over [t, t+dt): the last value before t+dt, or
    the mean over the interval) or 'start' (the command in effect at t)."""

    def resolve(self, where: str, default_gap: float, default_hold_bad: float = 0.0) -> None:
        if not isinstance(self.tag, str) or not self.tag.strip():
            raise ConfigError(f"field '{where}.tag': a tag name is required")
        if self.alignment == "analog":
            self.alignment = "mean"
        if self.alignment not in ("stepped", "mean", "interpolate"):
            raise ConfigError(
                f"field '{where}.alignment': expected one of ['stepped', 'mean', 'interpolate'] (or 'analog'),"
                f" got {self.alignment!r}"
            )
        if self.kind not in ("numeric", "text"):
            raise ConfigError(f"field '{where}.kind': expected 'numeric' or 'text', got {self.kind!r}")
        if self.kind == "text" and self.alignment != "stepped":
            raise ConfigError(f"field '{where}.alignment': text tags can only be 'stepped', got {self.alignment!r}")
        if self.timing not in ("interval", "start"):
            raise ConfigError(f"field '{where}.timing': expected 'interval' or 'start', got {self.timing!r}")
        if self.name is None:
            self.name = default_feature_name(self.tag)
        if not self.name.isidentifier() or keyword.iskeyword(self.name):
            raise ConfigError(
                f"field '{where}.name': {self.name!r} is not a valid identifier (letters, digits, '_';"
                " it is used in reward expressions)"
            )
        self.max_gap = default_gap if self.max_gap is None else parse_duration(self.max_gap, f"{where}.max_gap")
        self.offset = parse_offset(self.offset, f"{where}.offset")
        self.hold_bad = (default_hold_bad if self.hold_bad is None
                         else parse_duration(self.hold_bad, f"{where}.hold_bad", allow_zero=True))
        for lo_name, hi_name in (("low", "high"), ("valid_min", "valid_max")):
            lo, hi = getattr(self, lo_name), getattr(self, hi_name)
            if lo is not None and hi is not None and not lo < hi:
                raise ConfigError(f"field '{where}.{lo_name}': {lo} must be below {hi_name} {hi}")


@dataclass
class ColumnSpec:
    """Column names in the export. Unset names are detected (case-insensitively) from common spellings."""

    timestamp: str | None = None
    """Timestamp column (tried: timestamp, time, _time, ts, datetime, date)."""
    tag: str | None = None
    """Long format: tag-name column (tried: tag, tagname, name, point, _field, sensor_id, sensor)."""
    value: str | None = None
    """Long format: value column (tried: value, _value, val)."""
    quality: str | None = None
    """Long format: quality/status column, optional (tried: quality, status, statuscode)."""
    units: str | None = None
    """Long format: units column, optional (tried: units, unit, unitsabbreviation, engunits, uom)."""
    quality_suffix: str = ".quality"
    """Wide format: the quality column of tag X is named X + this suffix (optional)."""
    timestamp_unit: str | None = None
    """For numeric timestamps: 's', 'ms', 'us' or 'ns' since the Unix epoch (required for them)."""
    timestamp_format: str | None = None
    """strptime format for timestamps that are not ISO 8601 (e.g. '%d/%m/%Y %H:%M:%S')."""


@dataclass
class QualitySpec:
    """How source quality codes, text states and sentinel values become good/uncertain/bad."""

    good: list[str | int] = field(default_factory=list)
    """Extra codes/texts meaning good (exact, case-insensitive); checked before the built-in rules."""
    uncertain: list[str | int] = field(default_factory=list)
    """Extra codes/texts meaning uncertain."""
    bad: list[str | int] = field(default_factory=list)
    """Extra codes/texts meaning bad."""
    numeric_codes: str = "opcua"
    """How integer codes are read: 'opcua' (32-bit StatusCode, severity in the top two bits: 0x0...
    good, 0x4... uncertain, 0x8.../0xC... bad) or 'opcda' (OPC DA quality word: 192-255 good, 64-127
    uncertain, else bad)."""
    keep_uncertain: bool = False
    """Use uncertain samples as valid data (default: treat them as bad)."""
    unknown: str = "error"
    """What to do with a quality code no rule recognises: 'error' (stop, naming it) or 'bad'."""
    sentinels: list[float] = field(default_factory=list)
    """Values that mean 'no data' (e.g. -9999); they are bad quality."""
    min_coverage: float = 0.5
    """Mean/interpolate alignment: the fraction of the interval that must be covered by good data."""

    def resolve(self, where: str) -> None:
        if self.numeric_codes not in ("opcua", "opcda"):
            raise ConfigError(f"field '{where}.numeric_codes': expected 'opcua' or 'opcda', got {self.numeric_codes!r}")
        if self.unknown not in ("error", "bad"):
            raise ConfigError(f"field '{where}.unknown': expected 'error' or 'bad', got {self.unknown!r}")
        if not 0.0 < self.min_coverage <= 1.0:
            raise ConfigError(f"field '{where}.min_coverage': expected a fraction in (0, 1], got {self.min_coverage!r}")


@dataclass
class ImputeSpec:
    """Short invalid stretches of state features are bridged; longer ones split episodes."""

    max_steps: int = 0
    """Hold an observation feature's last valid grid value for at most this many steps (its
    ``obs_valid`` entry is False there); 0 disables imputation."""


@dataclass
class EpisodeSpec:
    """Where episodes begin and end (besides data gaps and terminal conditions)."""

    batch_tag: str | None = None
    """Text (or numeric) tag holding the batch id: each run of one id is one episode; steps with no
    batch id are dropped."""
    mode_tag: str | None = None
    """Tag holding the loop mode (e.g. 'AUTO', 'CAS', 'MAN'); a mode change ends the episode."""
    modes: list[str | float] | None = None
    """Modes (labels, or numeric codes) in which the logged actions mean what the action tags say; steps in other modes are
    dropped (default: every mode is kept)."""
    window: float | str | None = None
    """Cut continuous operation into fixed windows of this length (truncated at each window end)."""
    min_transitions: int = 1
    """Episodes with fewer transitions are dropped (and counted in the report)."""


@dataclass
class TerminalSpec:
    """A trip/interlock condition: when it becomes true the episode terminates (no bootstrap)."""

    tag: str = ""
    """The interlock/trip/ESD tag (stepped)."""
    above: float | None = None
    """True when the value is above this."""
    below: float | None = None
    """True when the value is below this."""
    equals: str | float | None = None
    """True when the value equals this (a number, or a label for text tags)."""
    kind: str = "numeric"
    """'numeric' or 'text' (labels such as 'TRIPPED')."""


@dataclass
class RewardSpec:
    """The reward of each transition: exactly one of column, expression, function."""

    column: str | None = None
    """A tag whose value over the interval (aligned at t+dt) is the reward."""
    expression: str | None = None
    """A safe arithmetic expression over feature names (see docs/telemetry.md), e.g.
    ``-abs(next_T - T_sp) - 0.01 * delta_u**2 - 100 * terminated``."""
    function: RewardFunction | None = None
    """Python API only: a callable mapping the expression variables to (N,) rewards."""
    description: str | None = None
    """Human-readable definition for the dataset metadata (default: the expression or column)."""


@dataclass
class ReaderSpec:
    """How sources are read."""

    format: str = "auto"
    """'long' (timestamp, tag, value[, quality][, units]), 'wide' (timestamp + one column per tag)
    or 'auto' (long when a tag and a value column exist)."""
    chunk_rows: int = 500_000
    """Rows per chunk read from Parquet / approximate rows per CSV block: bounds peak memory."""
    lateness: float | str = 60.0
    """Rows may arrive this much out of time order across chunks; more disorder than that switches
    to an in-memory pass (reported)."""


@dataclass
class TelemetrySpec:
    """Everything needed to turn a historian export into canonical transitions."""

    control_period: float | str = 0.0
    """The decision period dt of the grid (e.g. '30s'); required."""
    observations: list[TagSpec] = field(default_factory=list)
    """Process values forming the state, in order."""
    actions: list[TagSpec] = field(default_factory=list)
    """What the agent commands: setpoints of the basic control layer or controller outputs."""
    extra_state: list[TagSpec] = field(default_factory=list)
    """Appended to the state after ``observations``: disturbances, measured feeds, setpoints."""
    previous_action: bool = False
    """Append the previous step's action (named ``prev_<action>``) to the state."""
    auxiliary: list[TagSpec] = field(default_factory=list)
    """Tags read for rewards only (not part of the state)."""
    max_gap: float | str | None = None
    """Default per-tag maximum hold of a sample (default: 5 control periods)."""
    hold_bad: float | str = 0.0
    """Default per-tag bridging of bad samples (see :attr:`TagSpec.hold_bad`): the age up to which
    the last good value holds over Bad/Questionable samples; 0 (the default) bridges nothing."""
    timezone: str | None = None
    """IANA zone of timestamps without an offset (e.g. 'UTC', 'Europe/Berlin'); required for them."""
    ambiguous: str = "raise"
    """Local-time timestamps in a DST fall-back hour: 'raise', 'earliest' or 'latest'."""
    grid_origin: str | None = None
    """ISO time with a zone the grid is aligned to (default: the first sample, floored to a multiple
    of dt); an unquoted YAML time or a ``datetime`` is accepted."""
    columns: ColumnSpec = field(default_factory=ColumnSpec)
    """Column names of the export."""
    quality: QualitySpec = field(default_factory=QualitySpec)
    """Quality policy."""
    impute: ImputeSpec = field(default_factory=ImputeSpec)
    """Bridging of short invalid stretches."""
    episodes: EpisodeSpec = field(default_factory=EpisodeSpec)
    """Episode boundaries."""
    terminals: list[TerminalSpec] = field(default_factory=list)
    """Trip/interlock conditions (terminated)."""
    reward: RewardSpec = field(default_factory=RewardSpec)
    """Reward definition."""
    reader: ReaderSpec = field(default_factory=ReaderSpec)
    """Reading options."""
    env_id: str | None = None
    """Gymnasium id of a simulator of this plant (written to the dataset metadata)."""
    name: str | None = None
    """A short name for the plant / dataset."""

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Resolve durations/names and check every rule; ConfigError naming the field."""
        self._normalise_sections()
        if self.control_period in (0, 0.0, None, ""):
            raise ConfigError("field 'control_period': required (the decision period, e.g. '30s')")
        self.control_period = parse_duration(self.control_period, "control_period")
        self.max_gap = (
            5.0 * self.control_period if self.max_gap is None else parse_duration(self.max_gap, "max_gap")
        )
        self.hold_bad = parse_duration(self.hold_bad, "hold_bad", allow_zero=True)
        if isinstance(self.grid_origin, datetime.date):
            self.grid_origin = self.grid_origin.isoformat()
        if not self.observations:
            raise ConfigError("field 'observations': at least one observation tag is required")
        if not self.actions:
            raise ConfigError("field 'actions': at least one action tag is required")
        for group in ("observations", "actions", "extra_state", "auxiliary"):
            for i, tag in enumerate(getattr(self, group)):
                tag.resolve(f"{group}[{i}]", self.max_gap, self.hold_bad)
                if group != "auxiliary" and tag.kind != "numeric":
                    raise ConfigError(f"field '{group}[{i}].kind': state and action tags must be numeric")
        for i, action in enumerate(self.actions):
            if action.low is not None and action.high is None or action.low is None and action.high is not None:
                raise ConfigError(f"field 'actions[{i}]': give both low and high, or neither (bounds from the data)")
        names = [t.name for t in self.state_tags + self.actions + self.auxiliary]
        if self.previous_action:
            names += [f"prev_{a.name}" for a in self.actions]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ConfigError(f"duplicate feature name '{name}' (set 'name:' on one of the tags)")
            seen.add(name)
        reserved = {"terminated", "dt"}
        own_prev = {f"prev_{a}" for a in self.action_names} if self.previous_action else set()
        clash = sorted(
            n for n in seen
            if n in reserved
            or any(n.startswith(p) and n[len(p):] in seen for p in ("next_", "delta_"))
            or (n.startswith("prev_") and n[5:] in self.action_names and n not in own_prev)
        )
        if clash:
            raise ConfigError(f"feature name '{clash[0]}' clashes with a reward-expression variable; rename it")
        if self.ambiguous not in ("raise", "earliest", "latest"):
            raise ConfigError(f"field 'ambiguous': expected 'raise', 'earliest' or 'latest', got {self.ambiguous!r}")
        if self.timezone is not None:
            _check_timezone(self.timezone)
        self.quality.resolve("quality")
        if not isinstance(self.impute.max_steps, int) or self.impute.max_steps < 0:
            raise ConfigError(f"field 'impute.max_steps': expected a non-negative integer, got {self.impute.max_steps!r}")
        ep = self.episodes
        if ep.window is not None:
            ep.window = parse_duration(ep.window, "episodes.window")
            if ep.window < 2 * self.control_period:
                raise ConfigError(f"field 'episodes.window': must span at least two control periods, got {ep.window}s")
        if ep.min_transitions < 1:
            raise ConfigError(f"field 'episodes.min_transitions': expected >= 1, got {ep.min_transitions}")
        if ep.modes is not None and not ep.mode_tag:
            raise ConfigError("field 'episodes.modes': needs episodes.mode_tag")
        if ep.modes is not None:
            ep.modes = [normalise_label(m) for m in ep.modes]
        for i, term in enumerate(self.terminals):
            where = f"terminals[{i}]"
            if not term.tag:
                raise ConfigError(f"field '{where}.tag': a tag name is required")
            if term.kind not in ("numeric", "text"):
                raise ConfigError(f"field '{where}.kind': expected 'numeric' or 'text', got {term.kind!r}")
            given = [k for k in ("above", "below", "equals") if getattr(term, k) is not None]
            if len(given) != 1:
                raise ConfigError(f"field '{where}': give exactly one of above, below, equals")
            if term.kind == "text" and given[0] != "equals":
                raise ConfigError(f"field '{where}': text terminal tags need 'equals'")
        rw = self.reward
        given = [k for k in ("column", "expression", "function") if getattr(rw, k) is not None]
        if len(given) != 1:
            raise ConfigError("field 'reward': give exactly one of column, expression (or function in Python)")
        if rw.function is not None and not callable(rw.function):
            raise ConfigError("field 'reward.function': must be callable")
        if rw.expression is not None:
            from dime_offline.converters.reward import parse_expression

            parse_expression(rw.expression, self.expression_variables(), aliases=self.expression_aliases(),
                             where="reward.expression")
        if self.reader.format not in ("auto", "long", "wide"):
            raise ConfigError(f"field 'reader.format': expected 'auto', 'long' or 'wide', got {self.reader.format!r}")
        if self.reader.chunk_rows < 1:
            raise ConfigError(f"field 'reader.chunk_rows': expected >= 1, got {self.reader.chunk_rows}")
        self.reader.lateness = parse_duration(self.reader.lateness, "reader.lateness", allow_zero=True)
        if self.columns.timestamp_unit not in (None, "s", "ms", "us", "ns"):
            raise ConfigError(
                f"field 'columns.timestamp_unit': expected 's', 'ms', 'us' or 'ns', got {self.columns.timestamp_unit!r}"
            )

    def _normalise_sections(self) -> None:
        """Accept a bare tag name for a tag entry and an empty (null) section for its defaults."""
        for group in ("observations", "actions", "extra_state", "auxiliary", "terminals"):
            items = getattr(self, group)
            if items is None:
                items = []
            if not isinstance(items, list):
                raise ConfigError(f"field '{group}': expected a list, got {items!r}")
            cls = TerminalSpec if group == "terminals" else TagSpec
            fixed = []
            for i, item in enumerate(items):
                if isinstance(item, str) and cls is TagSpec:
                    item = TagSpec(tag=item)
                if not isinstance(item, cls):
                    raise ConfigError(f"field '{group}[{i}]': expected a mapping with a 'tag', got {item!r}")
                fixed.append(item)
            setattr(self, group, fixed)
        for name, cls in (
            ("columns", ColumnSpec), ("quality", QualitySpec), ("impute", ImputeSpec),
            ("episodes", EpisodeSpec), ("reward", RewardSpec), ("reader", ReaderSpec),
        ):
            value = getattr(self, name)
            if value is None:
                setattr(self, name, cls())
            elif not isinstance(value, cls):
                raise ConfigError(f"field '{name}': expected a mapping, got {value!r}")

    # -------------------------------------------------------------- derived
    @property
    def state_tags(self) -> list[TagSpec]:
        """Observation tags followed by extra-state tags (the state order, before previous actions)."""
        return list(self.observations) + list(self.extra_state)

    @property
    def obs_names(self) -> list[str]:
        names = [str(t.name) for t in self.state_tags]
        if self.previous_action:
            names += [f"prev_{a.name}" for a in self.actions]
        return names

    @property
    def action_names(self) -> list[str]:
        return [str(a.name) for a in self.actions]

    def reward_column_tag(self) -> TagSpec | None:
        """The reward column as a tag (mean-aligned over the interval), if the reward is a column."""
        if self.reward.column is None:
            return None
        for tag in self.state_tags + self.auxiliary:
            if tag.tag == self.reward.column:
                return tag
        return TagSpec(tag=self.reward.column, name=default_feature_name(self.reward.column) + "_reward",
                       alignment="mean", max_gap=self.max_gap, hold_bad=self.hold_bad)

    def expression_variables(self) -> list[str]:
        """Names a reward expression may use (see docs/telemetry.md, "Reward")."""
        values = [str(t.name) for t in self.state_tags + self.auxiliary]
        names = values + [f"next_{n}" for n in values]
        for a in self.action_names:
            names += [a, f"prev_{a}", f"delta_{a}"]
        return sorted(set(names) | {"terminated", "dt"})

    def expression_aliases(self) -> dict[str, str]:
        """Tag spellings a reward expression may use for its variables: ``"TIC101.PV"`` ->
        ``TIC101_PV``, ``"next_TIC101.PV"`` -> ``next_TIC101_PV`` (and prev_/delta_ for actions)."""
        aliases: dict[str, str] = {}
        for t in self.state_tags + self.auxiliary:
            aliases[t.tag] = str(t.name)
            aliases[f"next_{t.tag}"] = f"next_{t.name}"
        for a in self.actions:
            aliases[a.tag] = str(a.name)
            for prefix in ("prev_", "delta_"):
                aliases[f"{prefix}{a.tag}"] = f"{prefix}{a.name}"
        return aliases

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the resolved spec (a reward function appears by its qualified name)."""
        data = dataclasses.asdict(self)
        fn = self.reward.function
        name = None if fn is None else f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        data["reward"]["function"] = name
        return data

    def spec_hash(self) -> str:
        """SHA-256 (first 16 hex digits) of the resolved spec: identifies the conversion recipe."""
        text = json.dumps(self.to_dict(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_timezone(name: str) -> None:
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"field 'timezone': unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin')") from None


def spec_from_dict(data: Mapping[str, Any], *, file: str | None = None) -> TelemetrySpec:
    """Build and validate a spec from a plain mapping (parsed YAML/JSON)."""
    if not isinstance(data, Mapping):
        raise ConfigError("a telemetry spec must be a mapping at the top level", file=file)
    data = dict(data)
    reward = data.get("reward")
    if isinstance(reward, Mapping) and reward.get("function") is not None and not callable(reward["function"]):
        raise ConfigError("field 'reward.function': a Python callable (from Python only); in files use"
                          " reward.expression", file=file)
    if isinstance(data.get("grid_origin"), datetime.date):  # YAML reads an unquoted ISO time as a datetime
        data["grid_origin"] = data["grid_origin"].isoformat()
    try:
        return from_dict(TelemetrySpec, data)
    except ConfigError as err:
        raise ConfigError(err.message, file=file) from None
    except TypeError as exc:  # a list item or section that is not a mapping
        raise ConfigError(f"malformed spec ({exc})", file=file) from None


def load_spec(path: str | Path) -> TelemetrySpec:
    """Read a YAML (or JSON) telemetry spec; errors name the file and the field."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("spec file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read spec ({exc.strerror})", file=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({' '.join(str(exc).split())})", file=str(path)) from None
    return spec_from_dict(data if data is not None else {}, file=str(path))
