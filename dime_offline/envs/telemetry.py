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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.cstr import CSTREnv, CSTRParams
from dime_offline.envs.pi_controller import PIConfig, PIController
from dime_offline.io import atomic_path

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
    plant: CSTRParams = field(default_factory=CSTRParams)
    """Plant parameters; ``plant.horizon`` is the batch length in control steps."""
    controller: PIConfig = field(default_factory=PIConfig)
    """PI tuning and operator behaviour."""


@dataclass
class TelemetryResult:
    """A generated export and the truth behind it."""

    long: pd.DataFrame
    """Historian rows: timestamp (datetime64[us, UTC]), tag, value (str), quality (int64), units."""
    truth: pd.DataFrame
    """One row per control step: timestamp, batch, the env observation columns, action, mode,
    reward, terminated, truncated."""


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
            if obs[3] != last_sp:
                events.append((max(t - rng.uniform(1.0, 8.0), 0.0), SETPOINT_TAG, f"{obs[3]:.1f}", GOOD))
                last_sp = obs[3]
            if mode != last_mode:
                events.append((t + rng.uniform(0.05, 0.5), MODE_TAG, mode, GOOD))
                last_mode = mode
            if last_op is None or abs(u - last_op) > 0.005:
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
                for tag in ANALOG_TAGS:
                    events.append((trip_at + rng.uniform(2.0, 20.0), tag.tag, "Shutdown", BAD))
                events.append((restart - 1.0, TRIP_TAG, "0", GOOD))
                t = restart
                tripped = True
                break
            t += dt
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
    for k, tag in enumerate(ANALOG_TAGS):
        events.extend(_sample_analog(tag, times, values[:, k], total, down, cfg, rng))
    start = pd.Timestamp(cfg.start).as_unit("us")
    events.sort(key=lambda e: e[0])
    units = {tag.tag: tag.units for tag in ANALOG_TAGS} | {SETPOINT_TAG: "K", OUTPUT_TAG: "K"}
    long = pd.DataFrame({
        "timestamp": start + pd.to_timedelta(np.round([e[0] for e in events], 3), unit="s"),
        "tag": [e[1] for e in events],
        "value": [e[2] for e in events],
        "quality": np.array([e[3] for e in events], dtype=np.int64),
        "units": [units.get(e[1]) for e in events],
    })
    truth_df = pd.DataFrame(truth)
    truth_df.insert(0, "timestamp", start + pd.to_timedelta(truth_df.pop("t"), unit="s"))
    return TelemetryResult(long=long, truth=truth_df)


def _record_plant(traj_t: list[float], traj: list[tuple[float, float, float, float]], t: float, env: CSTREnv) -> None:
    ca, temp, tc = env.plant_state
    traj_t.append(t)
    traj.append((temp, ca, tc, env.feed_temp))


def _sample_analog(
    tag: AnalogTag, times: np.ndarray, truth: np.ndarray, total: float, down: list[tuple[float, float]],
    cfg: TelemetryConfig, rng: np.random.Generator,
) -> list[tuple[float, str, str, int]]:
    """Scan, add noise, apply exception reporting, outages and bad/uncertain samples."""
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
        if not (was_out or last_value is None or abs(v - last_value) > tag.deadband or s - last_time >= cfg.exc_max_seconds):
            continue
        was_out = False
        draw = rng.random()
        if draw < cfg.bad_probability:
            out.append((s, tag.tag, "Bad Input", BAD))
            last_value = None
            continue
        if draw < cfg.bad_probability + cfg.uncertain_probability:
            out.append((s, tag.tag, f"{v + 10 * tag.noise * rng.standard_normal():.{tag.decimals}f}", UNCERTAIN))
        else:
            out.append((s, tag.tag, f"{v:.{tag.decimals}f}", GOOD))
        last_value, last_time = v, s
    return out


def write_telemetry(long: pd.DataFrame, path: str | Path) -> Path:
    """Write an export as CSV (ISO timestamps with 'Z', ms precision) or Parquet, atomically."""
    path = Path(path)
    frame = long.copy()
    with atomic_path(path) as tmp:
        if path.suffix.lower() in (".parquet", ".pq"):
            frame.to_parquet(tmp, index=False)
        else:
            frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
            frame.to_csv(tmp, index=False)
    return path


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
