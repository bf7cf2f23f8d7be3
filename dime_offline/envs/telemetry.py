"""Historian-style telemetry of the CSTR twin run by its PI controller and operator.

:func:`generate_telemetry` runs the plant batch after batch and returns what a PI/OPC UA historian
export would hold, in long format (``timestamp, tag, value, quality, units``), together with the
simulator's true state at every control step (for tests and demos). What makes it realistic:

* per-tag scan clocks with jitter, sensor noise and quantisation, and exception (deadband)
  reporting with a forced report after ``exc_max_seconds``: irregular, "store on change";
* controller tags (setpoint, output, mode) reported on change with a small latency; the setpoint
  is changed by the operator a few seconds before the controller reads it;
* OPC UA 32-bit status codes in ``quality`` (0 good, 0x40000000 uncertain, 0x80000000 bad) and PI
  digital states in ``value`` ("Bad Input", "I/O Timeout", "Shutdown");
* comm outages per tag, batch ids (``BATCH_ID``), MANUAL periods (``TIC-101.MODE``) and, now and
  then, a high-temperature interlock trip (``SIS-101.TRIP``) followed by a shutdown and restart.

:func:`cstr_telemetry_spec` is the converter spec for these exports (the same as
``datasets/specs/telemetry/cstr.yaml``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dime_offline.data.arrow import arrow_array, string_array
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.cstr import CSTREnv, CSTRParams
from dime_offline.envs.pi_controller import PIConfig, PIController
from dime_offline.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

# The export is built and written with numpy and pyarrow: `data make-telemetry` never imports pandas
# (0.2 s of its start-up); the DataFrame views below import it when asked for.

GOOD, UNCERTAIN, BAD = 0, 0x40000000, 0x80000000
"""OPC UA StatusCode values written to the quality column."""


@dataclass(frozen=True)
class AnalogTag:
    """A measured process value and how the historian records it."""

    tag: str
    units: str
    noise: float
    """Sensor noise standard deviation (engineering units)."""
    deadband: float
    """Exception deviation: a scan is reported when it moved more than this since the last report."""
    scan_seconds: float
    """Nominal scan period."""
    decimals: int
    """Quantisation of the reported value."""


ANALOG_TAGS = (
    AnalogTag("TI-101.PV", "K", 0.05, 0.10, 5.0, 2),       # reactor temperature
    AnalogTag("AI-101.PV", "mol/L", 0.002, 0.004, 15.0, 4),  # concentration analyser
    AnalogTag("TI-102.PV", "K", 0.05, 0.10, 5.0, 2),       # jacket temperature
    AnalogTag("TI-100.PV", "K", 0.05, 0.10, 10.0, 2),      # feed temperature
)
SETPOINT_TAG, OUTPUT_TAG, MODE_TAG, BATCH_TAG, TRIP_TAG = (
    "TIC-101.SP", "TIC-101.OP", "TIC-101.MODE", "BATCH_ID", "SIS-101.TRIP")


@dataclass(frozen=True)
class TelemetryConfig:
    """What to simulate and how imperfect the historian is."""

    hours: float = 3.0
    """Length of the export."""
    seed: int = 0
    """Seeds the plant, the controller/operator and the historian."""
    start: str = "2024-05-01T00:00:00Z"
    """Time of the first control step (UTC)."""
    shutdown_minutes: float = 20.0
    """Downtime after an interlock trip before the next batch starts."""
    exc_max_seconds: float = 300.0
    """Longest time without a report of an analog tag (PI ExcMax)."""
    outages_per_hour: float = 0.4
    """Rate of per-tag communication outages."""
    outage_minutes: tuple[float, float] = (1.0, 8.0)
    """Outage length range."""
    bad_probability: float = 0.002
    """Chance that a reported sample is a 'Bad Input' digital state."""
    uncertain_probability: float = 0.003
    """Chance that a reported sample carries an uncertain status (and a worse reading)."""
    scan_seconds: float | None = None
    """Scan-rate logging: every analog tag and the controller output are stored on every scan of
    this period (a regular clock, no exception reporting) instead of their own exception-reported
    scans; the output reads the command in force at each scan. None: the default historian above."""
    setpoint_log_seconds: float | None = None
    """Log the setpoint on a clock of this period (e.g. 60 s) instead of on change."""
    output_bad_probability: float = 0.0
    """Scan-rate logging: chance that an output scan is stored Bad or Questionable (alternately),
    never two in a row."""
    skew_seconds: float = 0.0
    """Scan-rate logging: each clocked tag's time stamps lag its scan by a fixed amount drawn in
    [0, skew_seconds) (``TelemetryResult.skews``; a spec's ``offset`` undoes it)."""
    comm_outages_per_hour: float = 0.0
    """Rate of plant-wide communication outages (no tag stores anything), placed inside batches."""
    comm_outage_seconds: tuple[float, float] = (30.0, 300.0)
    """Length range of a plant-wide outage."""
    changeover_minutes: tuple[float, float] | None = None
    """Idle time between batches that end normally, during which nothing is logged; None: the next
    batch starts at once."""
    plant: CSTRParams = field(default_factory=CSTRParams)
    """Plant parameters; ``plant.horizon`` is the batch length in control steps."""
    controller: PIConfig = field(default_factory=PIConfig)
    """PI tuning and operator behaviour."""

    @classmethod
    def scan_rate(cls, hours: float = 12.0, seed: int = 0, scan_seconds: float = 2.0) -> TelemetryConfig:
        """A historian logging at the scan rate: every scan stored, setpoints once a minute, 1 % isolated
        bad/questionable output samples, per-tag clock skew up to 1.5 s, plant-wide 30-300 s outages
        (0.2/h) inside batches, 10-30 min changeovers, and no per-tag outages."""
        return cls(hours=hours, seed=seed, scan_seconds=scan_seconds, setpoint_log_seconds=60.0,
                   output_bad_probability=0.01, skew_seconds=1.5, comm_outages_per_hour=0.2,
                   changeover_minutes=(10.0, 30.0), outages_per_hour=0.0)


@dataclass
class TelemetryResult:
    """A generated export and the truth behind it."""

    export: pa.Table
    """Historian rows: timestamp (timestamp[ns, UTC], whole milliseconds), tag, value (string),
    quality (int64), units (string; null for tags without units)."""
    steps: list[dict[str, Any]]
    """One dict per control step: t (seconds since ``start``), batch, the env observation columns,
    action, mode, reward, terminated, truncated."""
    start: datetime
    """Time of the first control step (UTC)."""
    skews: dict[str, float] = field(default_factory=dict)
    """Clocked tag -> the lag of its time stamps behind its scan, seconds (scan-rate logging)."""
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)
    """Plant-wide communication outages (start, end), UTC."""

    @property
    def long(self) -> pd.DataFrame:
        """:attr:`export` as a pandas DataFrame (timestamp datetime64[ns, UTC])."""
        return self.export.to_pandas()

    @property
    def truth(self) -> pd.DataFrame:
        """:attr:`steps` as a pandas DataFrame, ``t`` replaced by a timestamp (datetime64[us, UTC])."""
        import pandas as pd

        frame = pd.DataFrame(self.steps)
        frame.insert(0, "timestamp", pd.Timestamp(self.start).as_unit("us") + pd.to_timedelta(frame.pop("t"), unit="s"))
        return frame


def generate_telemetry(config: TelemetryConfig | None = None) -> TelemetryResult:
    """Simulate the plant under the PI controller and record it like a historian (module docstring)."""
    cfg = config or TelemetryConfig()
    rng = np.random.default_rng(cfg.seed)
    p = cfg.plant
    env = CSTREnv(p, record_substeps=True)
    pi = PIController(cfg.controller, p, seed=int(rng.integers(2**31)))
    dt = p.dt_seconds
    total = cfg.hours * 3600.0
    events: list[tuple[float, str, str, int]] = []  # (seconds, tag, value, quality)
    traj_t: list[float] = []
    traj: list[tuple[float, float, float, float]] = []  # (T, Ca, Tc, Tf)
    down: list[tuple[float, float]] = []  # shutdown windows (trip time, restart)
    truth: list[dict[str, Any]] = []
    controlled: list[tuple[float, float, float]] = []  # (control instant, setpoint, output) for clocked logging
    t = 0.0
    batch_no = 0
    obs, _ = env.reset(seed=int(rng.integers(2**31)))
    events.append((0.0, TRIP_TAG, "0", GOOD))
    last_mode, last_sp, last_op = None, None, None
    while t < total - 1e-9:
        batch_no += 1
        batch = f"B{batch_no:04d}"
        events.append((t + rng.uniform(0.1, 1.0), BATCH_TAG, batch, GOOD))
        _record_plant(traj_t, traj, t, env)
        tripped = False
        for _ in range(p.horizon):
            if t >= total - 1e-9:
                break
            u = float(pi.command(obs)[0])
            mode = str(pi.mode[0])
            if cfg.setpoint_log_seconds is not None:
                controlled.append((t, float(obs[3]), u))
            elif obs[3] != last_sp:
                events.append((max(t - rng.uniform(1.0, 8.0), 0.0), SETPOINT_TAG, f"{obs[3]:.1f}", GOOD))
                last_sp = obs[3]
            if mode != last_mode:
                events.append((t + rng.uniform(0.05, 0.5), MODE_TAG, mode, GOOD))
                last_mode = mode
            if cfg.scan_seconds is not None:
                if cfg.setpoint_log_seconds is None:
                    controlled.append((t, float(obs[3]), u))
            elif last_op is None or abs(u - last_op) > 0.005:
                events.append((t + rng.uniform(0.05, 2.0), OUTPUT_TAG, f"{u:.3f}", GOOD))
                last_op = u
            next_obs, reward, terminated, truncated, info = env.step(np.array([u]))
            truth.append({
                "t": t, "batch": batch, **{n: float(v) for n, v in zip(env.obs_names, obs)},
                "action": float(info["applied_action"]), "mode": mode, "reward": reward,
                "terminated": terminated, "truncated": truncated,
            })
            h = info["substep_minutes"] * 60.0
            for i, (ca, temp, tc) in enumerate(info["substeps"]):
                traj_t.append(t + (i + 1) * h)
                traj.append((temp, ca, tc, env.feed_temp if i == len(info["substeps"]) - 1 else traj[-1][3]))
            obs = next_obs
            if terminated:
                trip_at = t + len(info["substeps"]) * h
                events.append((trip_at + rng.uniform(0.05, 0.5), TRIP_TAG, "1", GOOD))
                restart = np.ceil((trip_at + cfg.shutdown_minutes * 60.0) / dt) * dt
                down.append((trip_at, restart))
                if controlled:  # clocked logging: the output freezes at its last command and is still scanned
                    t_last, sp_last, u_last = controlled[-1]
                    controlled.extend((float(tt), sp_last, u_last) for tt in np.arange(t_last + dt, restart - 1e-9, dt))
                for tag in ANALOG_TAGS:
                    events.append((trip_at + rng.uniform(2.0, 20.0), tag.tag, "Shutdown", BAD))
                events.append((restart - 1.0, TRIP_TAG, "0", GOOD))
                t = restart
                tripped = True
                break
            t += dt
        if not tripped and cfg.changeover_minutes is not None and t < total - 1e-9:
            idle = np.ceil(60.0 * rng.uniform(*cfg.changeover_minutes) / dt) * dt
            down.append((t, t + idle))
            t += idle
        # Next batch: continue the plant as it is, or restart it after a trip.
        if tripped:
            obs, _ = env.reset(seed=int(rng.integers(2**31)))
            pi.reset()
            last_sp, last_mode, last_op = None, None, None
        else:
            obs, _ = env.reset(options={"state": env.plant_state, "setpoint": env.setpoint,
                                        "feed_temp": env.feed_temp, "u_prev": float(obs[5])})
    times = np.asarray(traj_t)
    values = np.asarray(traj)
    clocked = cfg.scan_seconds is not None
    skews = ({tag: float(np.round(rng.uniform(0.0, cfg.skew_seconds), 3)) if cfg.skew_seconds > 0 else 0.0
              for tag in [a.tag for a in ANALOG_TAGS] + [OUTPUT_TAG, SETPOINT_TAG]} if clocked else {})
    for k, tag in enumerate(ANALOG_TAGS):
        events.extend(_sample_analog(tag, times, values[:, k], total, down, cfg, rng, skews.get(tag.tag, 0.0)))
    events.extend(_clocked_controller(controlled, dt, cfg, rng, skews))
    outages = _comm_outages(truth, dt, cfg, rng) if cfg.comm_outages_per_hour > 0 else []
    if outages:
        events = [e for e in events if e[1] in (BATCH_TAG, TRIP_TAG, MODE_TAG)
                  or not any(a <= e[0] < b for a, b in outages)]
    start = datetime.fromisoformat(cfg.start)
    start = start.replace(tzinfo=timezone.utc) if start.tzinfo is None else start.astimezone(timezone.utc)
    events.sort(key=lambda e: e[0])
    return TelemetryResult(
        export=_export_table(events, start), steps=truth, start=start, skews=skews,
        outages=[(start + timedelta(seconds=a), start + timedelta(seconds=b)) for a, b in outages],
    )


def _export_table(events: list[tuple[float, str, str, int]], start: datetime) -> pa.Table:
    """The historian rows (time-sorted events) as an Arrow table; times kept to the millisecond."""
    units = {tag.tag: tag.units for tag in ANALOG_TAGS} | {SETPOINT_TAG: "K", OUTPUT_TAG: "K"}
    seconds = np.round(np.array([e[0] for e in events], dtype=np.float64), 3)
    ns = (_epoch_us(start) + np.round(seconds * 1e6).astype(np.int64)) * 1000
    # Few distinct tags: each row takes its tag and units from one small array by index.
    names = list(dict.fromkeys(e[1] for e in events))
    index = {name: i for i, name in enumerate(names)}
    codes = arrow_array(np.array([index[e[1]] for e in events], dtype=np.int64))
    return pa.Table.from_arrays(
        [
            arrow_array(ns).cast(pa.timestamp("ns", tz="UTC")),
            string_array(names).take(codes),
            string_array([e[2] for e in events]),
            arrow_array(np.array([e[3] for e in events], dtype=np.int64)),
            string_array([units.get(name) for name in names]).take(codes),
        ],
        names=["timestamp", "tag", "value", "quality", "units"],
    )


def _epoch_us(moment: datetime) -> int:
    """Whole microseconds since the Unix epoch of an aware time (exact integer arithmetic)."""
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _clocked_controller(
    controlled: list[tuple[float, float, float]], dt: float, cfg: TelemetryConfig, rng: np.random.Generator,
    skews: dict[str, float],
) -> list[tuple[float, str, str, int]]:
    """Output samples on every scan and setpoint samples on their clock, over the control steps run."""
    out: list[tuple[float, str, str, int]] = []
    if not controlled:
        return out
    starts = np.array([c[0] for c in controlled])
    if cfg.scan_seconds is not None:
        previous_bad = False
        for t0, _, u in controlled:
            for s in np.arange(t0, t0 + dt - 1e-9, cfg.scan_seconds):
                stamp = float(s) + skews.get(OUTPUT_TAG, 0.0)
                if not previous_bad and cfg.output_bad_probability > 0 and rng.random() < cfg.output_bad_probability:
                    code = BAD if rng.random() < 0.5 else UNCERTAIN
                    out.append((stamp, OUTPUT_TAG, f"{u + 5 * rng.standard_normal():.3f}", code))
                    previous_bad = True
                    continue
                previous_bad = False
                out.append((stamp, OUTPUT_TAG, f"{u:.3f}", GOOD))
    if cfg.setpoint_log_seconds is not None:
        period = cfg.setpoint_log_seconds
        first, last = np.ceil(starts[0] / period) * period, starts[-1] + dt
        for s in np.arange(first, last, period):
            k = int(np.searchsorted(starts, s, side="right")) - 1
            if k >= 0 and s < starts[k] + dt:  # only while the plant runs (not in a changeover)
                out.append((float(s) + skews.get(SETPOINT_TAG, 0.0), SETPOINT_TAG, f"{controlled[k][1]:.1f}", GOOD))
    return out


def _comm_outages(truth: list[dict[str, Any]], dt: float, cfg: TelemetryConfig,
                  rng: np.random.Generator) -> list[tuple[float, float]]:
    """Plant-wide outages placed inside batches, at least 5 min from a batch's start and end."""
    runs: dict[str, list[float]] = {}
    for row in truth:
        runs.setdefault(row["batch"], []).append(row["t"])
    windows = [(min(ts) + 300.0, max(ts) + dt - 300.0) for ts in runs.values()]
    windows = [(a, b) for a, b in windows if b - a > cfg.comm_outage_seconds[1]]
    hours = sum(b - a for a, b in windows) / 3600.0
    out: list[tuple[float, float]] = []
    for _ in range(rng.poisson(cfg.comm_outages_per_hour * hours) if windows else 0):
        a, b = windows[int(rng.integers(len(windows)))]
        length = rng.uniform(*cfg.comm_outage_seconds)
        begin = rng.uniform(a, b - length)
        if all(begin + length + 60.0 < x or begin > y + 60.0 for x, y in out):
            out.append((begin, begin + length))
    return sorted(out)


def _record_plant(traj_t: list[float], traj: list[tuple[float, float, float, float]], t: float, env: CSTREnv) -> None:
    ca, temp, tc = env.plant_state
    traj_t.append(t)
    traj.append((temp, ca, tc, env.feed_temp))


def _sample_analog(
    tag: AnalogTag, times: np.ndarray, truth: np.ndarray, total: float, down: list[tuple[float, float]],
    cfg: TelemetryConfig, rng: np.random.Generator, skew: float = 0.0,
) -> list[tuple[float, str, str, int]]:
    """Scan, add noise, apply exception reporting (not at the scan rate), outages and bad/uncertain samples."""
    if cfg.scan_seconds is not None:
        scans = np.arange(0.0, total, cfg.scan_seconds)
    else:
        n_scans = int(total / tag.scan_seconds) + 2
        scans = np.cumsum(tag.scan_seconds * rng.uniform(0.8, 1.2, n_scans)) - tag.scan_seconds * rng.uniform(0, 1)
        scans = scans[(scans >= 0) & (scans < total)]
    # Never interpolate across a shutdown (the trajectory restarts there).
    blocked = np.zeros(len(scans), bool)
    for a, b in down:
        blocked |= (scans >= a) & (scans < b)
    outages = []
    for _ in range(rng.poisson(cfg.outages_per_hour * total / 3600.0)):
        a = rng.uniform(0, total)
        outages.append((a, a + 60.0 * rng.uniform(*cfg.outage_minutes)))
    in_outage = np.zeros(len(scans), bool)
    for a, b in outages:
        in_outage |= (scans >= a) & (scans < b)
    order = np.argsort(times, kind="stable")
    measured = np.interp(scans, times[order], truth[order]) + tag.noise * rng.standard_normal(len(scans))
    measured = np.round(measured, tag.decimals)
    out: list[tuple[float, str, str, int]] = []
    last_value, last_time = None, -np.inf
    for a, b in outages:
        out.append((a, tag.tag, "I/O Timeout", BAD))
    was_out = False
    for s, v, blk, outg in zip(scans.tolist(), measured.tolist(), blocked.tolist(), in_outage.tolist()):
        if blk or outg:
            was_out = True
            continue
        if cfg.scan_seconds is None and not (was_out or last_value is None or abs(v - last_value) > tag.deadband
                                             or s - last_time >= cfg.exc_max_seconds):
            continue
        was_out = False
        draw = rng.random()
        if draw < cfg.bad_probability:
            out.append((s + skew, tag.tag, "Bad Input", BAD))
            last_value = None
            continue
        if draw < cfg.bad_probability + cfg.uncertain_probability:
            out.append((s + skew, tag.tag, f"{v + 10 * tag.noise * rng.standard_normal():.{tag.decimals}f}", UNCERTAIN))
        else:
            out.append((s + skew, tag.tag, f"{v:.{tag.decimals}f}", GOOD))
        last_value, last_time = v, s
    return out


def write_telemetry(export: pa.Table | pd.DataFrame, path: str | Path) -> Path:
    """Write an export (:attr:`TelemetryResult.export`, or its :attr:`~TelemetryResult.long` frame)
    as CSV (ISO timestamps with 'Z', ms precision) or Parquet, atomically."""
    path = Path(path)
    table = export if isinstance(export, pa.Table) else pa.Table.from_pandas(export, preserve_index=False)
    if path.suffix.lower() in (".parquet", ".pq"):
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp)
        return path
    # To naive UTC milliseconds (truncating, as the historian does), so formatting needs no zone database.
    stamps = table.column("timestamp").cast(pa.timestamp("ms"), safe=False)
    table = table.set_column(0, "timestamp", pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ"))
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        # pyarrow quotes header names (and, by default, every string): write the header here and
        # the rows unquoted (no value holds a comma, a quote or a line break).
        out.write((",".join(table.column_names) + "\n").encode())
        pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="none"))
    return path


def write_truth(result: TelemetryResult, path: str | Path) -> Path:
    """Write the per-step truth as CSV, atomically, formatted as pandas' ``to_csv`` writes
    :attr:`TelemetryResult.truth` (``2024-05-01 00:00:30+00:00``, float repr, True/False)."""
    path = Path(path)
    columns = ["timestamp"] + [c for c in (result.steps[0] if result.steps else {}) if c != "t"]
    seconds = np.array([row["t"] for row in result.steps], dtype=np.float64)
    whole = seconds.astype(np.int64)
    # As pandas.to_timedelta(seconds, unit="s"): the fraction rounded to 9 digits, then truncated to ns.
    ns = whole * 10**9 + (np.round(seconds - whole, 9) * 1e9).astype(np.int64)
    # pandas gives the whole column the fewest fraction digits (0, 3, 6 or 9) that every time needs.
    fraction = ns % 10**9
    unit = next((u for u, step in (("s", 10**9), ("ms", 10**6), ("us", 10**3)) if not (fraction % step).any()), "ns")
    stamps = np.datetime_as_string((_epoch_us(result.start) * 1000 + ns).astype("datetime64[ns]"), unit=unit)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row, stamp in zip(result.steps, stamps.tolist()):
            writer.writerow([stamp.replace("T", " ") + "+00:00"] + [_csv_cell(row[c]) for c in columns[1:]])
    return path


def _csv_cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return "" if np.isnan(value) else repr(float(value))
    return str(value)


def cstr_telemetry_spec() -> dict[str, Any]:
    """The converter spec for the twin's exports (mirrors datasets/specs/telemetry/cstr.yaml)."""
    p = CSTRParams()
    return {
        "name": "cstr-twin",
        "env_id": CSTR_ENV_ID,
        "control_period": "30s",
        "max_gap": "5min",
        "observations": [
            {"tag": "TI-101.PV", "name": "reactor_temp", "units": "K", "alignment": "stepped"},
            {"tag": "AI-101.PV", "name": "concentration_a", "units": "mol/L", "alignment": "stepped"},
            {"tag": "TI-102.PV", "name": "jacket_temp", "units": "K", "alignment": "stepped"},
        ],
        "extra_state": [
            {"tag": "TIC-101.SP", "name": "temp_setpoint", "units": "K", "alignment": "stepped", "max_gap": "1d"},
            {"tag": "TI-100.PV", "name": "feed_temp", "units": "K", "alignment": "stepped"},
        ],
        "actions": [
            {"tag": "TIC-101.OP", "name": "jacket_sp", "units": "K", "alignment": "stepped", "max_gap": "1d",
             "low": p.u_low, "high": p.u_high},
        ],
        "previous_action": True,
        "quality": {"numeric_codes": "opcua", "keep_uncertain": False},
        "impute": {"max_steps": 2},
        "episodes": {"batch_tag": BATCH_TAG, "mode_tag": MODE_TAG, "modes": ["AUTO", "MAN"]},
        "terminals": [{"tag": TRIP_TAG, "above": 0.5}],
        "reward": {
            "expression": f"-abs(next_reactor_temp - temp_setpoint) - {p.move_weight} * delta_jacket_sp**2"
                          f" - {p.trip_penalty} * terminated",
            "description": "negative absolute temperature tracking error (K) at the end of the step,"
                           " minus a move penalty on the jacket setpoint, minus 100 on an interlock trip",
        },
    }


def cstr_scan_rate_spec(skews: dict[str, float] | None = None, scan_seconds: float = 2.0) -> dict[str, Any]:
    """The converter spec for scan-rate exports (``TelemetryConfig.scan_seconds``): the same plant
    at the scan period, stepped states, ``hold_bad`` bridging isolated bad samples, the setpoint
    held over its once-a-minute logging, and each tag's clock skew undone by an ``offset``."""
    spec = cstr_telemetry_spec()
    skews = skews or {}
    hold = f"{1.5 * scan_seconds:g}s"
    spec.update({
        "name": "cstr-twin-scan-rate",
        "control_period": f"{scan_seconds:g}s",
        "max_gap": hold,
        "hold_bad": f"{2.5 * scan_seconds:g}s",
        "impute": {"max_steps": 0},
    })
    spec["episodes"] = {"batch_tag": BATCH_TAG}
    for group in ("observations", "extra_state", "actions"):
        for entry in spec[group]:
            entry.pop("max_gap", None)
            if entry["tag"] == SETPOINT_TAG:
                entry["max_gap"] = "10min"  # logged once a minute; holds through a comm outage
            if skews.get(entry["tag"]):
                entry["offset"] = f"{-skews[entry['tag']]:g}s"
    return spec
