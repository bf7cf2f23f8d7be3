"""Gymnasium wrappers that put every environment into the agent's conventions.

The agent, the replay store and the critic all work with actions in [-1, 1] (tanh space); the
environment receives the affine image of that box on its own bounds (DIME ``common/policies.py``
does the same: clip to [-1, 1], then unscale). Observations stay in raw units: normalisation is
the agent's job, so it is applied identically offline and online.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dime_offline.errors import EnvironmentMismatchError


class UnitBoxAction(gym.ActionWrapper):
    """Expose a Box action space as [-1, 1]^A and map actions affinely onto the env's bounds.

    ``a_env = low + (a + 1) / 2 * (high - low)`` after clipping ``a`` to [-1, 1], so an
    out-of-range action from a noisy or buggy policy can never leave the env's bounds.
    The original bounds stay readable as :attr:`env_low` / :attr:`env_high`.
    """

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        super().__init__(env)
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise EnvironmentMismatchError(
                f"action space is {space}; dime-offline needs a continuous Box action space"
            )
        low = np.asarray(space.low, dtype=np.float64).reshape(-1)
        high = np.asarray(space.high, dtype=np.float64).reshape(-1)
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise EnvironmentMismatchError(
                f"action bounds [{low.tolist()}, {high.tolist()}] are not finite; "
                "an affine map from [-1, 1] needs finite bounds"
            )
        if (high <= low).any():
            raise EnvironmentMismatchError(
                f"action bounds [{low.tolist()}, {high.tolist()}] have an empty or degenerate dimension"
            )
        self.env_low = low
        """(A,) lower action bounds of the wrapped env, float64."""
        self.env_high = high
        """(A,) upper action bounds of the wrapped env, float64."""
        self._env_shape = space.shape
        self._env_dtype = space.dtype
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(low.size,), dtype=np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        """(A,) action in [-1, 1] -> action in env units, shaped and typed like the env's space."""
        unit = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        scaled = self.env_low + 0.5 * (unit + 1.0) * (self.env_high - self.env_low)
        scaled = np.clip(scaled, self.env_low, self.env_high)
        return scaled.reshape(self._env_shape).astype(self._env_dtype, copy=False)
