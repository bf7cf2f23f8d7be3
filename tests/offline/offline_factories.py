"""Shared pieces of the offline-stage tests: a tiny DIME configuration and a logged contextual bandit."""

from __future__ import annotations

from typing import Any

import numpy as np

from dime_offline.agent.config import DIMEConfig
from dime_offline.data.schema import DatasetMetadata, TransitionData

TINY_AGENT: dict[str, Any] = {
    "critic_hidden": (32, 32),
    "score_hidden": (32, 32),
    "score_frequencies": 8,
    "score_time_hidden": 16,
    "diffusion_steps": 4,
    "batch_size": 32,
}
"""DIMEConfig overrides that keep the algorithm but make an update take milliseconds."""

GOOD_MODE, SLOPED_MODE, MODE_WIDTH = -0.5, 0.5, 0.15
"""The bandit's logged action modes and the half-width of the region around each that has reward."""


def tiny_config(**overrides: Any) -> DIMEConfig:
    return DIMEConfig.preset("cpu", **{**TINY_AGENT, **overrides})


def bandit_reward(action: np.ndarray) -> np.ndarray:
    """(N,) true reward of (N, 1) actions.

    1 within ``MODE_WIDTH`` of the good mode; 0.5 + 2 (a - 0.5) within it of the sloped mode (0.2 to
    0.8, rising toward +1); 0 everywhere else. A critic that extrapolates the sloped mode's rise
    beyond the data expects more than 1 near a = 1, where the true reward is 0.
    """
    a = action.reshape(-1)
    good = np.abs(a - GOOD_MODE) < MODE_WIDTH
    sloped = np.abs(a - SLOPED_MODE) < MODE_WIDTH
    return np.where(good, 1.0, np.where(sloped, 0.5 + 2.0 * (a - SLOPED_MODE), 0.0))


def bandit_dataset(episodes: int = 100, length: int = 20, seed: int = 0) -> TransitionData:
    """A repeated bandit logged by a behaviour policy that picks either mode half the time.

    Contexts s ~ U[-1, 1]^2 (which the reward ignores) are drawn afresh every step (next_obs is the
    next context), episodes never terminate and are truncated after ``length`` steps. Actions are
    the two modes plus N(0, 0.05) noise clipped to +-0.1, so nothing is logged between or beyond
    the modes: every action there is out of distribution, and its true reward is 0. With discount
    gamma the best achievable value is 1 / (1 - gamma) (the good mode every step).
    """
    rng = np.random.default_rng(seed)
    n = episodes * length
    contexts = rng.uniform(-1.0, 1.0, (episodes, length + 1, 2)).astype(np.float32)
    obs = contexts[:, :-1].reshape(n, 2)
    next_obs = contexts[:, 1:].reshape(n, 2)
    modes = rng.choice([GOOD_MODE, SLOPED_MODE], size=n)
    noise = np.clip(0.05 * rng.normal(size=n), -0.1, 0.1)  # every logged action lies inside its mode's region
    action = (modes + noise).astype(np.float32)[:, None]
    truncated = np.zeros(n, bool)
    truncated[length - 1 :: length] = True
    return TransitionData(
        episode_id=np.repeat(np.arange(episodes), length),
        step=np.tile(np.arange(length), episodes).astype(np.int32),
        obs=obs,
        action=action,
        reward=bandit_reward(action).astype(np.float32),
        next_obs=next_obs,
        terminated=np.zeros(n, bool),
        truncated=truncated,
        metadata=DatasetMetadata(action_low=[-1.0], action_high=[1.0]),
    )
