"""The plant's existing controller: an imperfectly tuned PI loop with a human operator on top.

It is the behaviour policy of the CSTR twin: the telemetry generator logs what it does, and the
fine-tuned agent is compared against it. Velocity form with proportional action on the measurement
(no kick on setpoint changes) and the output clamped to the jacket range (no windup)::

    u_t = u_{t-1} - Kc (T_t - T_{t-1}) + Kc dt / tau_I (T_sp - T_t)

The default tuning (Kc = 2 K/K, tau_I = 2 min) is what a plant often has: stable, but it
overshoots on large upward setpoint changes, close to the ignition point. Unless
``deterministic=True``, an operator adds valve/positioner noise and now and then takes the loop
to MANUAL and bumps the output for a while (``mode`` tells which).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dime_offline.envs.cstr import CSTRParams

T_INDEX, SETPOINT_INDEX, U_PREV_INDEX = 0, 3, 5
"""Where the controller finds T, T_sp and the previous output in the twin's observation."""


@dataclass(frozen=True)
class PIConfig:
    """Tuning and operator behaviour."""

    gain: float = 2.0
    """Controller gain Kc, K of jacket setpoint per K of reactor temperature."""
    integral_minutes: float = 2.0
    """Integral time tau_I, min."""
    output_noise: float = 0.3
    """Standard deviation of the noise on the output, K (stochastic mode only)."""
    manual_probability: float = 0.004
    """Chance per step that the operator takes the loop to MANUAL (stochastic mode only)."""
    manual_steps: tuple[int, int] = (10, 40)
    """A MANUAL period lasts a uniform number of steps in this range."""
    manual_bump: tuple[float, float] = (1.0, 4.0)
    """The operator moves the output by a uniform amount in this range (either sign), K."""


class PIController:
    """PI temperature controller usable as a :class:`~dime_offline.types.Policy` (``act``).

    Holds per-row memory (previous temperature, MANUAL countdown) for a batch of B plants; call
    :meth:`reset` at the start of each episode.
    """

    def __init__(self, config: PIConfig | None = None, params: CSTRParams | None = None, *, seed: int | None = None) -> None:
        self.config = config or PIConfig()
        self.params = params or CSTRParams()
        self.rng = np.random.default_rng(seed)
        self.low, self.high = self.params.u_low, self.params.u_high
        self.mode: np.ndarray = np.array(["AUTO"])
        """(B,) 'AUTO' or 'MAN' after the last call."""
        self._t_prev: np.ndarray | None = None
        self._manual_left = np.zeros(0, np.int64)
        self._manual_u = np.zeros(0)

    def reset(self) -> None:
        """Forget the previous measurement and any MANUAL period (new episode)."""
        self._t_prev = None
        self._manual_left = np.zeros(0, np.int64)

    def command(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Jacket setpoints (B,) in K for observations (B, 6) or (6,) in engineering units."""
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        b = obs.shape[0]
        temp, setpoint, u_prev = obs[:, T_INDEX], obs[:, SETPOINT_INDEX], obs[:, U_PREV_INDEX]
        if self._t_prev is None or self._t_prev.shape[0] != b:
            self._t_prev = temp.copy()
            self._manual_left = np.zeros(b, np.int64)
            self._manual_u = u_prev.copy()
        c = self.config
        dt = self.params.dt_minutes
        u = u_prev - c.gain * (temp - self._t_prev) + c.gain * dt / c.integral_minutes * (setpoint - temp)
        self._t_prev = temp.copy()
        if not deterministic:
            start = (self._manual_left == 0) & (self.rng.random(b) < c.manual_probability)
            if start.any():
                k = int(start.sum())
                self._manual_left[start] = self.rng.integers(c.manual_steps[0], c.manual_steps[1] + 1, size=k)
                bump = self.rng.uniform(*c.manual_bump, size=k) * self.rng.choice([-1.0, 1.0], size=k)
                self._manual_u[start] = u_prev[start] + bump
            manual = self._manual_left > 0
            u = np.where(manual, self._manual_u, u + c.output_noise * self.rng.standard_normal(b))
            self._manual_left[manual] -= 1
            self.mode = np.where(manual, "MAN", "AUTO")
        else:
            self.mode = np.full(b, "AUTO")
        return np.clip(u, self.low, self.high)

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions (B, 1) scaled to [-1, 1] (the Policy protocol) for observations (B, 6)."""
        u = self.command(obs, deterministic)
        return (2.0 * (u - self.low) / (self.high - self.low) - 1.0).reshape(-1, 1)
