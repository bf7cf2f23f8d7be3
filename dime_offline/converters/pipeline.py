"""``telemetry_to_transitions``: historian export + spec -> canonical transitions + report.

Stages: read chunks (:mod:`.readers`) -> align on the control grid (:mod:`.align`) -> impute short
gaps (past values only) -> plan episodes (:mod:`.episodes`) -> rewards (:mod:`.reward`) ->
:class:`~dime_offline.data.schema.TransitionData` with names, units, bounds and the spec hash in
its metadata. No torch here: this runs on an ingest host.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dime_offline.converters.align import (
    US,
    AlignedGrid,
    Channel,
    GridAligner,
    OutOfOrderError,
)
from dime_offline.converters.episodes import StepMasks, plan_episodes
from dime_offline.converters.readers import (
    ChunkReader,
    ReadStats,
    SampleChunk,
    SourceTag,
    TagRegistry,
)
from dime_offline.converters.report import ConversionReport, EpisodeReport, TagReport
from dime_offline.converters.reward import evaluate_reward, parse_expression
from dime_offline.converters.spec import (
    TagSpec,
    TelemetrySpec,
    load_spec,
    normalise_label,
    spec_from_dict,
)
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.errors import ConfigError, DataError

_FOREVER_US = 100 * 365 * 86400 * US
"""Hold for batch, mode and trip tags: they report on change only."""


# --------------------------------------------------------------------------- channel plan
@dataclass
class _Plan:
    """Source tags, their roles, and the channels aligned from them."""

    spec: TelemetrySpec
    registry: TagRegistry = field(init=False)
    roles: dict[str, list[str]] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        spec = self.spec
        tags: dict[str, SourceTag] = {}

        def add(tag: str, role: str, kind: str = "numeric", ts: TagSpec | None = None) -> int:
            if tag in tags and tags[tag].kind != kind:
                raise ConfigError(f"tag '{tag}' is used both as a {tags[tag].kind} and a {kind} tag")
            offset = None if ts is None else _us(ts.offset)
            if tag not in tags:
                tags[tag] = SourceTag(tag, kind, None if ts is None else ts.valid_min, None if ts is None else ts.valid_max,
                                      offset_us=offset or 0)
            elif offset is not None and offset != tags[tag].offset_us:
                raise ConfigError(f"tag '{tag}' is given two different offsets; give it one")
            self.roles.setdefault(tag, [])
            if role not in self.roles[tag]:
                self.roles[tag].append(role)
            return list(tags).index(tag)

        def channel(key: str, t: TagSpec, i: int, point: str = "state") -> Channel:
            return Channel(key, i, t.alignment, _us(t.max_gap), point, hold_bad_us=_us(t.hold_bad))

        for group, role in ((spec.observations, "observation"), (spec.extra_state, "extra_state")):
            for t in group:
                self.channels.append(channel(f"state:{t.name}", t, add(t.tag, role, ts=t)))
        for t in spec.actions:
            self.channels.append(channel(f"action:{t.name}", t, add(t.tag, "action", ts=t),
                                         "interval" if t.timing == "interval" else "state"))
        for t in spec.auxiliary:
            self.channels.append(channel(f"aux:{t.name}", t, add(t.tag, "auxiliary", t.kind, ts=t)))
        rtag = spec.reward_column_tag()
        if rtag is not None:
            self.channels.append(channel("reward", rtag, add(rtag.tag, "reward", ts=rtag)))
        ep = spec.episodes
        if ep.batch_tag:
            self.channels.append(Channel("batch", add(ep.batch_tag, "batch", "text"), "stepped", _FOREVER_US, "interval"))
        if ep.mode_tag:
            self.channels.append(Channel("mode", add(ep.mode_tag, "mode", "text"), "stepped", _FOREVER_US, "interval"))
        for k, term in enumerate(spec.terminals):
            i = add(term.tag, "terminal", term.kind)
            self.channels.append(Channel(f"terminal:{k}", i, "stepped", _FOREVER_US))
        self.registry = TagRegistry(list(tags.values()))

    def aligner(self) -> GridAligner:
        spec = self.spec
        origin = None
        if spec.grid_origin is not None:
            origin = _parse_origin(spec.grid_origin)
        tag_gap: dict[int, int] = {}
        for ch in self.channels:
            if ch.max_gap_us < _FOREVER_US:
                tag_gap[ch.tag] = min(tag_gap.get(ch.tag, ch.max_gap_us), ch.max_gap_us)
        return GridAligner(
            self.channels, len(self.registry), round(float(spec.control_period) * US),  # type: ignore[arg-type]
            lateness_us=round(float(spec.reader.lateness) * US),  # type: ignore[arg-type]
            origin_us=origin, min_coverage=spec.quality.min_coverage, tag_gap_us=tag_gap,
        )


def _us(seconds: Any) -> int:
    """Whole microseconds of a resolved duration (seconds)."""
    return round(float(seconds or 0.0) * US)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _parse_origin(text: str) -> int:
    # The standard library rather than pandas (0.2 s to import for one string); Python >= 3.11 reads
    # every ISO 8601 form the spec documents, 'Z' included.
    try:
        stamp = datetime.fromisoformat(str(text))
    except ValueError:
        raise ConfigError(f"field 'grid_origin': not an ISO time: {text!r}") from None
    if stamp.tzinfo is None:
        raise ConfigError(f"field 'grid_origin': give a zone offset (e.g. {text}Z)")
    return (stamp - _EPOCH) // timedelta(microseconds=1)  # exact integer arithmetic


# --------------------------------------------------------------------------- entry point
def telemetry_to_transitions(
    source: Any, spec: TelemetrySpec | Mapping[str, Any] | str | Path,
) -> tuple[TransitionData, ConversionReport]:
    """Convert a historian export into canonical transitions.

    Args:
        source: a CSV/Parquet file, a directory of them, a pandas DataFrame or a pyarrow Table, in
            long (timestamp, tag, value[, quality][, units]) or wide (timestamp + one column per
            tag) format.
        spec: a :class:`TelemetrySpec`, a mapping with the same fields, or a YAML file path.

    Returns:
        ``(data, report)``: validated :class:`TransitionData` (obs (N, O), action (N, A), ...,
        ``timestamp``, ``obs_valid``, ``episode_key`` set) and the :class:`ConversionReport`.

    Raises:
        ConfigError: the spec is invalid (names the field).
        DataError: the source cannot be read or yields no transitions (names file/column/row/tag).
    """
    spec = _as_spec(spec)
    plan = _Plan(spec)
    source_name = _source_name(source)
    grid, stats = _align(source, plan)
    return _assemble(grid, stats, plan, source_name)


def _as_spec(spec: TelemetrySpec | Mapping[str, Any] | str | Path) -> TelemetrySpec:
    if isinstance(spec, TelemetrySpec):
        return spec
    if isinstance(spec, (str, Path)):
        return load_spec(spec)
    if isinstance(spec, Mapping):
        return spec_from_dict(spec)
    raise ConfigError(f"spec must be a TelemetrySpec, a mapping or a YAML path, got {type(spec).__name__}")


def _source_name(source: Any) -> str:
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


def _align(source: Any, plan: _Plan) -> tuple[AlignedGrid, ReadStats]:
    reader = ChunkReader(source, plan.spec, plan.registry)
    aligner = plan.aligner()
    try:
        for chunk in reader:
            aligner.push(chunk)
        return aligner.finish(), reader.stats
    except OutOfOrderError:
        pass
    # Not time-ordered beyond `lateness` (e.g. per-tag exports concatenated): one in-memory pass.
    reader = ChunkReader(source, plan.spec, plan.registry)
    chunks = list(reader)
    aligner = plan.aligner()
    if chunks:
        aligner.push(SampleChunk(
            ts=np.concatenate([c.ts for c in chunks]),
            tag=np.concatenate([c.tag for c in chunks]),
            value=np.concatenate([c.value for c in chunks]),
        ))
    grid = aligner.finish()
    grid.in_memory = True
    return grid, reader.stats


# --------------------------------------------------------------------------- assembly
def _ffill(values: np.ndarray, valid: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Forward-fill invalid entries from the last valid one (past only), at most ``limit`` steps.

    Shapes: values, valid (n, F). Returns (filled (n, F), imputed (n, F) bool).
    """
    n = values.shape[0]
    if n == 0 or limit == 0:
        return values.copy(), np.zeros_like(valid)
    rows = np.arange(n)[:, None]
    last = np.maximum.accumulate(np.where(valid, rows, -1), axis=0)
    can = ~valid & (last >= 0)
    if limit is not None:
        can &= rows - last <= limit
    filled = values.copy()
    r, c = np.nonzero(can)
    filled[r, c] = values[last[r, c], c]
    return filled, can


def _stack(grid: AlignedGrid, keys: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values, valid, bridged), each (K+1, len(keys)), of the given channels."""
    n = len(grid.times)
    if not keys:
        return np.zeros((n, 0)), np.zeros((n, 0), bool), np.zeros((n, 0), bool)
    return tuple(np.stack([table[k] for k in keys], axis=1)  # type: ignore[return-value]
                 for table in (grid.values, grid.valid, grid.bridged))


def _codes(grid: AlignedGrid, key: str) -> np.ndarray:
    v = grid.values[key]
    return np.where(grid.valid[key] & np.isfinite(v), v, -1).astype(np.int64)


def _iso(us: int) -> str:
    return str(np.datetime64(int(us), "us")) + "Z"


def _assemble(grid: AlignedGrid, stats: ReadStats, plan: _Plan, source_name: str) -> tuple[TransitionData, ConversionReport]:
    spec = plan.spec
    registry = plan.registry
    where = stats.files[0] if len(stats.files) == 1 else source_name
    if len(grid.times) == 0 and not stats.tags_seen:
        raise DataError("no samples of the spec's tags found (the source has no rows)", file=where)
    for tag, roles in plan.roles.items():
        if stats.per_tag[tag].samples == 0:
            problem = ("has no samples in the export" if tag in stats.tags_seen
                       else f"is not in the export; {_closest(tag, stats.tags_seen)}")
            raise DataError(f"tag '{tag}' ({roles[0]}) {problem}", file=where)
    n = len(grid.times)
    dt = float(spec.control_period)  # type: ignore[arg-type]
    state_names = [str(t.name) for t in spec.state_tags]
    action_names = spec.action_names
    aux_names = [str(t.name) for t in spec.auxiliary]
    S, Sv, Sb = _stack(grid, [f"state:{k}" for k in state_names])
    A, Av, Ab = _stack(grid, [f"action:{k}" for k in action_names])
    X, Xv, _ = _stack(grid, [f"aux:{k}" for k in aux_names])
    R, Rv, _ = _stack(grid, ["reward"] if "reward" in grid.values else [])
    if spec.previous_action:
        P = np.vstack([np.full((1, A.shape[1]), np.nan), A[:-1]])
        Pv = np.vstack([np.zeros((1, A.shape[1]), bool), Av[:-1]])
        Pb = np.vstack([np.zeros((1, A.shape[1]), bool), Ab[:-1]])
        S, Sv, Sb = np.hstack([S, P]), np.hstack([Sv, Pv]), np.hstack([Sb, Pb])
    limit = spec.impute.max_steps
    S_f, S_imp = _ffill(S, Sv, limit)
    X_f, X_imp = _ffill(X, Xv, limit)
    R_f, R_imp = _ffill(R, Rv, limit)
    state_ok = (Sv | S_imp).all(axis=1) & (Xv | X_imp).all(axis=1)
    action_ok = Av.all(axis=1)

    tripped = np.zeros(n, bool)
    trip_name = np.full(n, -1, np.int64)
    for k in range(len(spec.terminals) - 1, -1, -1):
        cond = _terminal_condition(spec, plan, grid, k)
        tripped |= cond
        trip_name[cond] = k
    masks = StepMasks(state_ok=state_ok, action_ok=action_ok, tripped=tripped, trip_name=trip_name,
                      reward_ok=(Rv | R_imp).all(axis=1))
    if spec.episodes.batch_tag:
        masks.batch = _codes(grid, "batch")
    if spec.episodes.mode_tag:
        masks.mode = _codes(grid, "mode")
        if spec.episodes.modes is None:
            masks.mode_ok = np.ones(n, bool)
        else:
            labels = registry.tags[registry.index[spec.episodes.mode_tag]].labels
            allowed = [labels[m] for m in spec.episodes.modes if m in labels]
            masks.mode_ok = np.isin(masks.mode, allowed)
    if spec.episodes.window is not None:
        masks.window = (grid.times - grid.origin_us) // round(float(spec.episodes.window) * US)
    plan_ = plan_episodes(masks, [t.tag for t in spec.terminals], min_transitions=spec.episodes.min_transitions)
    rows = plan_.rows
    if len(rows) == 0:
        raise DataError(
            "no transitions could be formed; grid steps: "
            + ", ".join(f"{k} {v}" for k, v in sorted(plan_.dispositions.items()))
            + _worst_tag_hint(grid, plan),
            file=where,
        )
    nxt = rows + 1

    # Terminal transitions may have an unreadable next state (the trip): fill it from the past.
    S_any, _ = _ffill(S, Sv, None)
    X_any, _ = _ffill(X, Xv, None)
    next_S = S_f[nxt].copy()
    next_X = X_f[nxt].copy()
    bad_next = ~np.isfinite(next_S)
    terminal_fills = int(bad_next.sum())
    next_S = np.where(bad_next, S_any[nxt], next_S)
    next_S = np.where(np.isfinite(next_S), next_S, S_f[rows])
    next_X = np.where(np.isfinite(next_X), next_X, X_any[nxt])
    next_X = np.where(np.isfinite(next_X), next_X, X_f[rows])
    next_R = R_f[nxt].copy()
    next_R = np.where(np.isfinite(next_R), next_R, _ffill(R, Rv, None)[0][nxt])

    # Actions: bounds from the spec, else from the data.
    acts = A[rows].copy()
    low = np.array([a.low if a.low is not None else np.nan for a in spec.actions], dtype=np.float64)
    high = np.array([a.high if a.high is not None else np.nan for a in spec.actions], dtype=np.float64)
    warnings: list[str] = []
    inferred = np.isnan(low)
    if inferred.any():
        low[inferred] = acts[:, inferred].min(axis=0)
        high[inferred] = acts[:, inferred].max(axis=0)
        same = inferred & (high <= low)
        high[same] = low[same] + 1.0
        warnings.append(
            "action bounds inferred from the data for " + ", ".join(np.array(action_names)[inferred].tolist())
            + " (declare low/high in the spec to match the plant)"
        )
    # Time-weighted means of a signal sitting exactly on a bound come out a few ulps beyond it: not clipping.
    slack = 1e-9 * np.maximum(np.abs(low), np.abs(high)) + 1e-12
    clipped = int(((acts < low - slack) | (acts > high + slack)).sum())
    acts = np.clip(acts, low, high)
    prev_rows = rows - 1
    prev_ok = (prev_rows >= 0) & Av[np.maximum(prev_rows, 0)].all(axis=1)
    prev_acts = np.where(prev_ok[:, None], np.clip(A[np.maximum(prev_rows, 0)], low, high), acts)
    if spec.previous_action:
        # The previous-action features are actions too: same bounds.
        na = len(action_names)
        S_f[:, -na:] = np.clip(S_f[:, -na:], low, high)
        next_S[:, -na:] = np.clip(next_S[:, -na:], low, high)

    terminated = plan_.terminated
    variables: dict[str, Any] = {"terminated": terminated.astype(np.float64), "dt": np.float64(dt)}
    feature_names = spec.obs_names[: len(state_names)]
    for i, name in enumerate(feature_names):
        variables[name] = S_f[rows, i]
        variables[f"next_{name}"] = next_S[:, i]
    for i, name in enumerate(aux_names):
        variables[name] = X_f[rows, i]
        variables[f"next_{name}"] = next_X[:, i]
    for i, name in enumerate(action_names):
        variables[name] = acts[:, i]
        variables[f"prev_{name}"] = prev_acts[:, i]
        variables[f"delta_{name}"] = acts[:, i] - prev_acts[:, i]
    reward, description = _rewards(spec, variables, next_R, len(rows))
    bad = np.flatnonzero(~np.isfinite(reward))
    if len(bad):
        raise DataError(
            f"reward is not finite at {_iso(int(grid.times[rows[bad[0]]]))} ({len(bad)} transition(s));"
            " check reward.expression / the reward tag",
            column="reward",
        )

    obs = S_f[rows]
    obs_valid = Sv[rows] & ~Sb[rows]  # a value held over a bad sample is not a measurement
    imputed_values = int(S_imp[rows].sum())
    imputed_steps = int(S_imp[rows].any(axis=1).sum())

    episode_key = _episode_keys(spec, plan, grid, rows, plan_.episode_id)
    units = _units(spec, plan, stats, warnings)
    obs_units = [units.get(t.tag) for t in spec.state_tags] + (
        [units.get(a.tag) for a in spec.actions] if spec.previous_action else [])
    action_units = [units.get(a.tag) for a in spec.actions]
    obs_low = obs_high = None
    bounds_tags = list(spec.state_tags)
    if all(t.low is not None and t.high is not None for t in bounds_tags):
        obs_low = [float(t.low) for t in bounds_tags] + (low.tolist() if spec.previous_action else [])  # type: ignore[arg-type]
        obs_high = [float(t.high) for t in bounds_tags] + (high.tolist() if spec.previous_action else [])  # type: ignore[arg-type]
    spec_hash = spec.spec_hash()

    bridged = {str(t.tag): int(Sb[rows, i].sum()) for i, t in enumerate(spec.state_tags)}
    for i, t in enumerate(spec.actions):
        bridged[str(t.tag)] = bridged.get(str(t.tag), 0) + int(Ab[rows, i].sum())
    column_tags = [str(t.tag) for t in spec.state_tags] + ([str(a.tag) for a in spec.actions] if spec.previous_action else [])
    missing = [(column_tags, ~(Sv | S_imp)), ([str(a.tag) for a in spec.actions], ~Av),
               ([str(t.tag) for t in spec.auxiliary], ~(Xv | X_imp))]
    rtag = spec.reward_column_tag()
    if rtag is not None:
        missing.append(([str(rtag.tag)], ~(Rv | R_imp)))
    audit = _audit(missing, plan_)
    report = _report(grid, stats, plan, plan_, source_name, spec_hash, rows, episode_key, warnings,
                     imputed_values, imputed_steps, terminal_fills, clipped, units, bridged, audit)
    metadata = DatasetMetadata(
        obs_names=spec.obs_names,
        action_names=action_names,
        obs_units=[u or "" for u in obs_units],
        action_units=[u or "" for u in action_units],
        action_low=low.tolist(),
        action_high=high.tolist(),
        obs_low=obs_low,
        obs_high=obs_high,
        dt_seconds=dt,
        reward_description=description,
        source=f"telemetry:{source_name} spec:{spec_hash}",
        env_id=spec.env_id,
        extra={"telemetry": {"spec_hash": spec_hash, "spec": spec.to_dict(), "report": report.summary()}},
    )
    data = TransitionData(
        episode_id=plan_.episode_id,
        step=plan_.step,
        obs=obs.astype(np.float32),
        action=acts.astype(np.float32),
        reward=reward.astype(np.float32),
        next_obs=next_S.astype(np.float32),
        terminated=terminated.copy(),
        truncated=plan_.truncated.copy(),
        metadata=metadata,
        timestamp=grid.times[rows].astype(np.int64),
        obs_valid=obs_valid.astype(bool),
        action_valid=~Ab[rows],  # actions of transitions are valid; False where held over a bad sample
        episode_key=episode_key,
    )
    data.validate()
    return data, report


def _some(names: set[str], k: int = 12) -> str:
    listed = sorted(names)[:k]
    return ", ".join(listed) + (" ..." if len(names) > k else "") if listed else "none"


def _closest(tag: str, names: set[str]) -> str:
    """'closest names in it: ...' (difflib), or a sample of the names when none is close."""
    import difflib

    close = difflib.get_close_matches(tag, sorted(names), n=5, cutoff=0.6)
    if close:
        return "closest names in it: " + ", ".join(close)
    return f"tags in it include: {_some(names)}"


def _worst_tag_hint(grid: AlignedGrid, plan: _Plan) -> str:
    worst, frac = None, 0.0
    for ch in plan.channels:
        if ch.key.startswith(("state:", "action:", "aux:")):
            missing = 1.0 - float(grid.valid[ch.key].mean()) if len(grid.times) else 1.0
            if missing > frac:
                worst, frac = plan.registry.tags[ch.tag].tag, missing
    return f"; tag '{worst}' is missing at {100 * frac:.0f}% of grid steps" if worst else ""


def _terminal_condition(spec: TelemetrySpec, plan: _Plan, grid: AlignedGrid, k: int) -> np.ndarray:
    term = spec.terminals[k]
    v = grid.values[f"terminal:{k}"]
    ok = grid.valid[f"terminal:{k}"]
    with np.errstate(invalid="ignore"):
        if term.above is not None:
            return ok & (v > term.above)
        if term.below is not None:
            return ok & (v < term.below)
        if term.kind == "text":
            labels = plan.registry.tags[plan.registry.index[term.tag]].labels
            code = labels.get(normalise_label(term.equals))
            return ok & (v == code) if code is not None else np.zeros(len(v), bool)
        try:
            target = float(term.equals)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ConfigError(f"field 'terminals[{k}].equals': {term.equals!r} is not a number (set kind: text)") from None
        return ok & (v == target)


def _rewards(spec: TelemetrySpec, variables: dict[str, Any], next_R: np.ndarray, n: int) -> tuple[np.ndarray, str]:
    rw = spec.reward
    if rw.column is not None:
        return next_R[:, 0].astype(np.float64), rw.description or f"value of tag {rw.column} over each interval"
    if rw.expression is not None:
        evaluator = parse_expression(rw.expression, spec.expression_variables(), aliases=spec.expression_aliases())
        return evaluate_reward(evaluator, variables, n), rw.description or rw.expression
    assert rw.function is not None
    out = evaluate_reward(rw.function, variables, n)
    name = getattr(rw.function, "__qualname__", repr(rw.function))
    return out, rw.description or f"python function {name}"


def _episode_keys(spec: TelemetrySpec, plan: _Plan, grid: AlignedGrid, rows: np.ndarray,
                  episode_id: np.ndarray) -> np.ndarray:
    keys = np.empty(len(rows), dtype=object)
    starts = np.flatnonzero(np.r_[True, episode_id[1:] != episode_id[:-1]])
    ends = np.r_[starts[1:], len(rows)]
    batch = None
    if spec.episodes.batch_tag:
        source = plan.registry.tags[plan.registry.index[spec.episodes.batch_tag]]
        batch = _codes(grid, "batch")
    for s, e in zip(starts.tolist(), ends.tolist()):
        if batch is not None:
            label = source.label(float(batch[rows[s]]))
            keys[s:e] = label if label is not None else _iso(int(grid.times[rows[s]]))
        else:
            keys[s:e] = _iso(int(grid.times[rows[s]]))
    return keys


def _units(spec: TelemetrySpec, plan: _Plan, stats: ReadStats, warnings: list[str]) -> dict[str, str | None]:
    declared: dict[str, str | None] = {}
    for t in spec.state_tags + spec.actions + spec.auxiliary:
        if t.units is not None:
            declared.setdefault(t.tag, t.units)
    out: dict[str, str | None] = {}
    for tag in plan.roles:
        seen: Counter[str] = stats.per_tag[tag].units if tag in stats.per_tag else Counter()
        if len(seen) > 1:
            warnings.append(f"tag '{tag}' has several units in the source: {dict(seen)}")
        data_unit = seen.most_common(1)[0][0] if seen else None
        if tag in declared:
            if data_unit is not None and declared[tag] != data_unit:
                warnings.append(f"tag '{tag}': spec says units '{declared[tag]}', the source says '{data_unit}'")
            out[tag] = declared[tag]
        else:
            out[tag] = data_unit
    return out


def _audit(missing: list[tuple[list[str], np.ndarray]], ep: Any) -> dict[str, tuple[int, int]]:
    """Per tag: (grid steps dropped for invalid data while the tag was missing, 'gap' episode ends it caused).

    ``missing`` pairs the tag of each column with its (K+1, F) missing mask. A gap end after
    transition k is blamed on the tags missing at step k+1 (the step that could not continue), or
    at k+2 when none is (the next state of that step).
    """
    n = len(ep.invalid_steps)
    by_tag: dict[str, np.ndarray] = {}
    for tags, mask in missing:
        for i, tag in enumerate(tags):
            by_tag[tag] = by_tag.get(tag, np.zeros(n, bool)) | mask[:, i]
    if not by_tag:
        return {}
    names = list(by_tag)
    table = np.stack([by_tag[t] for t in names], axis=1)  # (K+1, T)
    dropped = (table & ep.invalid_steps[:, None]).sum(axis=0)
    after = np.minimum(ep.gap_ends + 1, n - 1)
    blamed = table[after]
    later = table[np.minimum(ep.gap_ends + 2, n - 1)]
    blamed = np.where(blamed.any(axis=1, keepdims=True), blamed, later)
    splits = blamed.sum(axis=0)
    return {t: (int(d), int(c)) for t, d, c in zip(names, dropped, splits)}


def _tag_warnings(plan: _Plan, grid: AlignedGrid, stats: ReadStats) -> list[str]:
    """Tags whose logging interval is longer than their hold (max_gap) or their hold_bad."""
    max_gap: dict[int, int] = {}
    hold_bad: dict[int, int] = {}
    for ch in plan.channels:
        if ch.max_gap_us < _FOREVER_US:
            max_gap[ch.tag] = min(max_gap.get(ch.tag, ch.max_gap_us), ch.max_gap_us)
            hold_bad[ch.tag] = max(hold_bad.get(ch.tag, 0), ch.hold_bad_us)
    out = []
    for i, gap_us in max_gap.items():
        gaps = grid.gaps.get(i)
        if gaps is None or gaps.intervals == 0:
            continue
        tag = plan.registry.tags[i].tag
        typical = gaps.quantile_s(0.5)
        share = gaps.over_max_gap / gaps.intervals
        if share >= 0.1:
            out.append(
                f"tag '{tag}' is logged every {typical:.2g} s (median) and {100 * share:.0f}% of its sample intervals"
                f" are longer than its max_gap {gap_us / US:g} s: it is missing at those steps; raise its max_gap"
                " (stepped tags such as setpoints are often logged once a minute or on change)"
            )
        st = stats.per_tag[tag]
        if hold_bad[i] and st.bad + st.uncertain and typical is not None and typical >= hold_bad[i] / US:
            out.append(f"tag '{tag}': hold_bad {hold_bad[i] / US:g} s is not longer than its logging interval"
                       f" ({typical:.2g} s): a bad sample of it can never be bridged")
    return out


def _report(
    grid: AlignedGrid, stats: ReadStats, plan: _Plan, ep: Any, source_name: str, spec_hash: str,
    rows: np.ndarray, episode_key: np.ndarray, warnings: list[str], imputed_values: int, imputed_steps: int,
    terminal_fills: int, clipped: int, units: dict[str, str | None], bridged: dict[str, int],
    audit: dict[str, tuple[int, int]],
) -> ConversionReport:
    spec = plan.spec
    n = len(grid.times)
    first_channel: dict[int, str] = {}
    for ch in plan.channels:
        first_channel.setdefault(ch.tag, ch.key)
    tags = []
    for i, st in enumerate(plan.registry.tags):
        s = stats.per_tag[st.tag]
        key = first_channel[i]
        gaps = grid.gaps.get(i)
        tags.append(TagReport(
            tag=st.tag, role="+".join(plan.roles[st.tag]), units=units.get(st.tag),
            samples=s.samples, good=s.good, uncertain=s.uncertain, bad=s.bad,
            bad_fraction=s.bad / s.samples if s.samples else 0.0,
            uncertain_fraction=s.uncertain / s.samples if s.samples else 0.0,
            missing_fraction=float(1.0 - grid.valid[key].mean()) if n else 1.0,
            text_states=dict(s.text_states.most_common()), sentinels=s.sentinels, out_of_range=s.out_of_range,
            longest_gap_s=(gaps.longest_us / US) if gaps else 0.0,
            gaps_over_max_gap=gaps.over_max_gap if gaps else 0, bridged=bridged.get(st.tag, 0),
            median_interval_s=gaps.quantile_s(0.5) if gaps else None,
            dropped_steps=audit.get(st.tag, (0, 0))[0], splits=audit.get(st.tag, (0, 0))[1],
        ))
    warnings.extend(_tag_warnings(plan, grid, stats))
    starts = np.flatnonzero(np.r_[True, ep.episode_id[1:] != ep.episode_id[:-1]])
    ends = np.r_[starts[1:], len(rows)] - 1
    episodes = [
        EpisodeReport(
            episode_id=int(ep.episode_id[s]), key=str(episode_key[s]), start=_iso(int(grid.times[rows[s]])),
            end=_iso(int(grid.times[rows[e] + 1])), transitions=int(e - s + 1), end_reason=reason,
        )
        for s, e, reason in zip(starts.tolist(), ends.tolist(), ep.end_reasons)
    ]
    if grid.in_memory:
        warnings.append("the source is not time-ordered: it was aligned in one in-memory pass"
                        " (sort it by time, or raise reader.lateness, to stream it in bounded memory)")
    return ConversionReport(
        source=source_name, spec_hash=spec_hash, files=list(stats.files), rows_read=stats.rows_read,
        rows_used=stats.rows_used, time_start=_iso(int(grid.times[0])) if n else None,
        time_end=_iso(int(grid.times[-1])) if n else None, dt_seconds=float(spec.control_period),  # type: ignore[arg-type]
        grid_steps=n, transitions=int(ep.dispositions.get("transition", 0)),
        final_states=int(ep.dispositions.get("final_state", 0)),
        dropped_steps={k.split(":", 1)[1]: v for k, v in ep.dispositions.items() if k.startswith("dropped:")},
        imputed_values=imputed_values, imputed_steps=imputed_steps, terminal_fills=terminal_fills,
        clipped_actions=clipped, bridged_values=sum(bridged.values()), short_episodes_dropped=ep.short_episodes, episode_count=len(episodes),
        end_reasons=dict(Counter(e.end_reason for e in episodes)), tags=tags, episodes=episodes,
        in_memory=grid.in_memory, warnings=warnings,
    )


def convert_telemetry(
    source: Any, spec: TelemetrySpec | Mapping[str, Any] | str | Path, out: str | Path,
    *, rows_per_file: int | None = None,
) -> ConversionReport:
    """Convert and write canonical Parquet to ``out`` atomically (nothing is written on error)."""
    from dime_offline.data.parquet import write_parquet

    data, report = telemetry_to_transitions(source, spec)
    write_parquet(data, out, rows_per_file=rows_per_file)
    return report
