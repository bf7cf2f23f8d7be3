"""Tiny agents and toy environments shared by the trainer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.trainers.offline import PretrainConfig, pretrain

TINY_AGENT: dict[str, Any] = {
    "critic_hidden": [32, 32],
    "score_hidden": [32, 32],
    "score_frequencies": 8,
    "score_time_hidden": 16,
    "diffusion_steps": 4,
    "batch_size": 32,
    "learning_starts": 50,
}
"""DIMEConfig overrides that keep the algorithm but make an update take milliseconds."""

COUNTDOWN_ID = "DimeTest/Countdown-v0"
COUNTDOWN_LIMIT = 6


def tiny_agent_config() -> DIMEConfig:
    return DIMEConfig.preset("cpu", **{k: tuple(v) if isinstance(v, list) else v for k, v in TINY_AGENT.items()})


def tiny_agent(obs_dim: int, act_dim: int, seed: int = 0) -> DIMEAgent:
    return DIMEAgent(obs_dim, act_dim, tiny_agent_config(), seed=seed)


PENDULUM_SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"


def pretrained_pendulum(out: Path) -> Path:
    """A tiny agent pretrained 3 steps on the Pendulum sample into run directory ``out``: observation
    normalisation inside, torque bounds +-2, no acting average."""
    pretrain(PretrainConfig(
        data=str(PENDULUM_SAMPLE), steps=3, out_dir=str(out), agent=dict(TINY_AGENT), eval_every=0, eval_episodes=1,
        max_episode_steps=5, tensorboard=False, quiet=True,
    ))
    return out


class CountdownEnv(gym.Env[np.ndarray, np.ndarray]):
    """A 2-D state with a 1-D action in [0, 4]; the k-th reset (from 0) starts an episode that ends
    in a true terminal state after ``k % 4 + 3`` steps (3, 4, 5 or 6), so with the registered time
    limit of 6 the 6-step episodes are both terminated and truncated at once.

    ``info["applied_action"]`` echoes the action the env received, in env units.
    """

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 4.0, shape=(1,), dtype=np.float32)
        self._episodes = -1
        self._t = 0
        self._length = 3

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._episodes += 1
        self._t = 0
        self._length = self._episodes % 4 + 3
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        reward = float(np.asarray(action).reshape(-1)[0])
        terminated = self._t >= self._length
        return self._obs(), reward, terminated, False, {"applied_action": np.array(action, copy=True)}

    def _obs(self) -> np.ndarray:
        return np.array([self._t, self._length + self.np_random.uniform(-0.1, 0.1)], dtype=np.float32)


if COUNTDOWN_ID not in gym.registry:
    gym.register(id=COUNTDOWN_ID, entry_point=CountdownEnv, max_episode_steps=COUNTDOWN_LIMIT)
