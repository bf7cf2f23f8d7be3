"""A jacketed exothermic CSTR (first-order A -> B) with a cooling-jacket temperature loop.

numpy/gymnasium only. Textbook model (Seborg et al.; the parameters pcgym cites as Hedengren
2022), time in minutes::

    dCa/dt = q/V (Caf - Ca) - k(T) Ca
    dT/dt  = q/V (Tf - T) + (-dH)/(rho Cp) k(T) Ca + UA/(V rho Cp) (Tc - T)
    dTc/dt = (u - Tc) / tau_j                  (jacket temperature loop, first-order lag)
    k(T)   = k0 exp(-E/R / T)

The agent (or the PI controller of :mod:`dime_offline.envs.pi_controller`) sets ``u``, the jacket
temperature setpoint, every ``dt_minutes``; the reactor temperature ``T`` should follow the
setpoint schedule ``T_sp``. The plant runs on the stable low-conversion branch (T ~ 315-335 K);
near 338 K it ignites and runs away, and the high-high temperature interlock trips at
``trip_temperature`` (terminated). Episodes are truncated at ``horizon`` steps.

Observation (engineering units, :attr:`CSTREnv.obs_names` / :attr:`CSTREnv.obs_units`)::

    [T (K), Ca (mol/L), Tc (K), T_sp (K), Tf (K), u_prev (K)]

Action: ``[u]``, the jacket temperature setpoint in K, within [u_low, u_high].

Reward per step (K-scaled): ``-|T' - T_sp| - move_weight (u - u_prev)^2 - trip_penalty * trip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import gymnasium as gym
import numpy as np

OBS_NAMES = ("reactor_temp", "concentration_a", "jacket_temp", "temp_setpoint", "feed_temp", "prev_jacket_sp")
OBS_UNITS = ("K", "mol/L", "K", "K", "K", "K")
ACTION_NAMES = ("jacket_sp",)
ACTION_UNITS = ("K",)


@dataclass(frozen=True)
class CSTRParams:
    """Plant, disturbance, task and reward parameters (defaults: the textbook reactor)."""

    q: float = 100.0
    """Feed flow, L/min."""
    volume: float = 100.0
    """Reactor volume V, L."""
    rho: float = 1000.0
    """Density, g/L."""
    cp: float = 0.239
    """Heat capacity, J/(g K)."""
    minus_dh: float = 5.0e4
    """Heat of reaction -dH, J/mol."""
    e_over_r: float = 8750.0
    """Activation energy over the gas constant, K."""
    k0: float = 7.2e10
    """Pre-exponential factor, 1/min."""
    ua: float = 5.0e4
    """Heat-transfer coefficient times area, J/(min K)."""
    caf: float = 1.0
    """Feed concentration, mol/L."""
    tf_nominal: float = 350.0
    """Mean feed temperature, K."""
    tf_sigma: float = 1.5
    """Stationary standard deviation of the feed temperature (Ornstein-Uhlenbeck), K."""
    tf_tau_minutes: float = 30.0
    """Correlation time of the feed temperature, min."""
    tau_jacket: float = 0.5
    """Time constant of the jacket temperature loop, min."""
    dt_minutes: float = 0.5
    """Control period, min (30 s)."""
    substeps: int = 10
    """RK4 substeps per control period."""
    horizon: int = 240
    """Steps per episode (2 h); the episode is truncated there."""
    u_low: float = 280.0
    """Lowest jacket setpoint, K."""
    u_high: float = 310.0
    """Highest jacket setpoint, K."""
    trip_temperature: float = 355.0
    """High-high reactor temperature interlock, K."""
    setpoint_low: float = 316.0
    """Lowest reactor temperature setpoint in the schedule, K."""
    setpoint_high: float = 334.0
    """Highest reactor temperature setpoint in the schedule, K."""
    setpoint_hold_steps: tuple[int, int] = (40, 120)
    """A setpoint holds for a uniform number of steps in this range."""
    move_weight: float = 0.02
    """Weight of the squared jacket-setpoint move in the reward, 1/K."""
    trip_penalty: float = 100.0
    """Reward penalty when the interlock trips."""

    @property
    def dt_seconds(self) -> float:
        return 60.0 * self.dt_minutes


def steady_state(params: CSTRParams, temperature: float, feed_temp: float | None = None) -> tuple[float, float]:
    """(Ca, Tc) that hold the reactor at ``temperature`` in steady state (closed form)."""
    tf = params.tf_nominal if feed_temp is None else feed_temp
    k = params.k0 * math.exp(-params.e_over_r / temperature)
    dil = params.q / params.volume
    ca = params.caf * dil / (dil + k)
    a1 = params.minus_dh / (params.rho * params.cp)
    a2 = params.ua / (params.volume * params.rho * params.cp)
    tc = temperature - (dil * (tf - temperature) + a1 * k * ca) / a2
    return ca, tc


def integrate(
    params: CSTRParams, state: tuple[float, float, float], u: float, feed_temp: float,
    *, record: bool = False,
) -> tuple[tuple[float, float, float], bool, int, list[tuple[float, float, float]] | None]:
    """Advance (Ca, T, Tc) by one control period with RK4.

    Returns (new state, tripped, substeps done, substep states if ``record``). Integration stops
    at the first substep where T exceeds the trip temperature (the interlock acts at once).
    """
    ca, t, tc = state
    n = params.substeps
    h = params.dt_minutes / n
    dil = params.q / params.volume
    a1 = params.minus_dh / (params.rho * params.cp)
    a2 = params.ua / (params.volume * params.rho * params.cp)
    k0, er, caf, tj = params.k0, params.e_over_r, params.caf, params.tau_jacket
    exp = math.exp
    trace: list[tuple[float, float, float]] | None = [] if record else None

    def rhs(ca_: float, t_: float, tc_: float) -> tuple[float, float, float]:
        r = k0 * exp(-er / t_) * ca_
        return dil * (caf - ca_) - r, dil * (feed_temp - t_) + a1 * r + a2 * (tc_ - t_), (u - tc_) / tj

    for i in range(n):
        d1 = rhs(ca, t, tc)
        d2 = rhs(ca + 0.5 * h * d1[0], t + 0.5 * h * d1[1], tc + 0.5 * h * d1[2])
        d3 = rhs(ca + 0.5 * h * d2[0], t + 0.5 * h * d2[1], tc + 0.5 * h * d2[2])
        d4 = rhs(ca + h * d3[0], t + h * d3[1], tc + h * d3[2])
        ca += h / 6.0 * (d1[0] + 2.0 * d2[0] + 2.0 * d3[0] + d4[0])
        t += h / 6.0 * (d1[1] + 2.0 * d2[1] + 2.0 * d3[1] + d4[1])
        tc += h / 6.0 * (d1[2] + 2.0 * d2[2] + 2.0 * d3[2] + d4[2])
        ca = min(max(ca, 0.0), caf)
        if trace is not None:
            trace.append((ca, t, tc))
        if t > params.trip_temperature:
            return (ca, t, tc), True, i + 1, trace
    return (ca, t, tc), False, n, trace


class CSTREnv(gym.Env[np.ndarray, np.ndarray]):
    """The jacketed CSTR as a gymnasium environment (see the module docstring)."""

    metadata = {"render_modes": []}

    def __init__(self, params: CSTRParams | None = None, *, record_substeps: bool = False, **overrides: Any) -> None:
        """Args:
            params: plant parameters; keyword ``overrides`` replace single fields (e.g. horizon=120).
            record_substeps: put the RK4 substep states in ``info['substeps']`` (telemetry generator).
        """
        base = params or CSTRParams()
        self.params = replace(base, **overrides) if overrides else base
        p = self.params
        self.record_substeps = record_substeps
        self.obs_names = list(OBS_NAMES)
        self.obs_units = list(OBS_UNITS)
        self.action_names = list(ACTION_NAMES)
        self.action_units = list(ACTION_UNITS)
        self.dt_seconds = p.dt_seconds
        self.horizon = p.horizon
        self.action_space = gym.spaces.Box(np.float32(p.u_low), np.float32(p.u_high), shape=(1,), dtype=np.float32)
        low = np.array([250.0, 0.0, 250.0, p.setpoint_low, p.tf_nominal - 10 * p.tf_sigma, p.u_low], np.float32)
        high = np.array([500.0, p.caf, 350.0, p.setpoint_high, p.tf_nominal + 10 * p.tf_sigma, p.u_high], np.float32)
        self.observation_space = gym.spaces.Box(low, high, dtype=np.float32)
        self._obs_low, self._obs_high = low.astype(np.float64), high.astype(np.float64)
        self._rng = np.random.default_rng()
        self._state = (0.0, 0.0, 0.0)
        self._setpoint = 0.0
        self._hold = 0
        self._feed_temp = p.tf_nominal
        self._u_prev = 0.0
        self._t = 0
        self._tf_decay = math.exp(-p.dt_minutes / p.tf_tau_minutes)
        self._tf_noise = p.tf_sigma * math.sqrt(1.0 - self._tf_decay ** 2)

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Start at a steady state near a random setpoint.

        ``options`` may continue a plant instead: ``state`` (Ca, T, Tc), ``setpoint``,
        ``feed_temp``, ``u_prev`` (used by the telemetry generator to chain batches).
        """
        super().reset(seed=seed)
        self._rng = self.np_random
        p = self.params
        options = options or {}
        self._setpoint = float(options.get("setpoint", self._draw_setpoint(None)))
        self._hold = self._draw_hold()
        self._feed_temp = float(options.get("feed_temp", p.tf_nominal + p.tf_sigma * self._rng.standard_normal()))
        if "state" in options:
            ca, t, tc = (float(v) for v in options["state"])
        else:
            t = self._setpoint + self._rng.normal(0.0, 0.5)
            ca, tc = steady_state(p, t, self._feed_temp)
        self._state = (ca, t, tc)
        self._u_prev = float(options.get("u_prev", min(max(tc, p.u_low), p.u_high)))
        self._t = 0
        return self._obs(), {"setpoint": self._setpoint}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        p = self.params
        u = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not math.isfinite(u):
            raise ValueError(f"action must be finite, got {action!r}")
        u = min(max(u, p.u_low), p.u_high)
        setpoint = self._setpoint
        state, tripped, done_substeps, trace = integrate(p, self._state, u, self._feed_temp, record=self.record_substeps)
        self._state = state
        move = u - self._u_prev
        reward = -abs(state[1] - setpoint) - p.move_weight * move * move - (p.trip_penalty if tripped else 0.0)
        self._u_prev = u
        self._t += 1
        # Disturbance and schedule evolve between control steps (seen in the next observation).
        self._feed_temp = p.tf_nominal + (self._feed_temp - p.tf_nominal) * self._tf_decay + self._tf_noise * float(
            self._rng.standard_normal())
        self._hold -= 1
        if self._hold <= 0:
            self._setpoint = self._draw_setpoint(self._setpoint)
            self._hold = self._draw_hold()
        truncated = not tripped and self._t >= p.horizon
        info: dict[str, Any] = {"tripped": tripped, "tracking_error": state[1] - setpoint, "applied_action": u}
        if trace is not None:
            info["substeps"] = trace
            info["substep_minutes"] = p.dt_minutes / p.substeps
        return self._obs(), float(reward), bool(tripped), bool(truncated), info

    # ------------------------------------------------------------------ helpers
    def _obs(self) -> np.ndarray:
        ca, t, tc = self._state
        raw = np.array([t, ca, tc, self._setpoint, self._feed_temp, self._u_prev], dtype=np.float64)
        return np.clip(raw, self._obs_low, self._obs_high).astype(np.float32)

    def _draw_setpoint(self, current: float | None) -> float:
        p = self.params
        if current is None:
            return float(np.round(self._rng.uniform(p.setpoint_low + 2.0, p.setpoint_high - 6.0), 1))
        step = self._rng.uniform(2.0, 8.0) * (1.0 if self._rng.random() < 0.5 else -1.0)
        target = current + step
        if not p.setpoint_low <= target <= p.setpoint_high:
            target = current - step
        return float(np.round(min(max(target, p.setpoint_low), p.setpoint_high), 1))

    def _draw_hold(self) -> int:
        lo, hi = self.params.setpoint_hold_steps
        return int(self._rng.integers(lo, hi + 1))

    @property
    def plant_state(self) -> tuple[float, float, float]:
        """(Ca, T, Tc) now."""
        return self._state

    @property
    def setpoint(self) -> float:
        return self._setpoint

    @property
    def feed_temp(self) -> float:
        return self._feed_temp
