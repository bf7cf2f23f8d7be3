"""Policy evaluation by rollouts.

Evaluation is stochastic by default: DIME's authors sample fresh noise at every call, even for
SB3's "deterministic" evaluation, and their published curves come from that protocol
(5 episodes per evaluation).
"""

from __future__ import annotations

import numpy as np

from dime_offline.data.schema import DatasetMetadata
from dime_offline.envs.make import make_env
from dime_offline.evaluation.metrics import EpisodeStats, reference_returns
from dime_offline.types import Policy


def evaluate(
    policy: Policy,
    env_id: str,
    n_episodes: int = 5,
    seed: int = 0,
    *,
    deterministic: bool = False,
    max_episode_steps: int | None = None,
    metadata: DatasetMetadata | None = None,
) -> EpisodeStats:
    """Run ``n_episodes`` full episodes of ``policy`` in a fresh env and summarise them.

    Args:
        policy: anything with ``act(obs (1, O), deterministic) -> (1, A)`` actions in [-1, 1].
        env_id: registered gymnasium id; a fresh env is built (and closed) for this call.
        n_episodes: number of episodes E.
        seed: episode ``i`` starts from ``reset(seed=seed + i)``, so two calls with the same seed
            see the same initial states.
        deterministic: passed to ``policy.act``; False reproduces the authors' protocol.
        max_episode_steps: overrides the registered time limit.
        metadata: dataset metadata whose reference returns take precedence over the D4RL table.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    env = make_env(env_id, max_episode_steps=max_episode_steps)
    returns: list[float] = []
    lengths: list[int] = []
    terminals: list[bool] = []
    try:
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, steps, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                action = policy.act(np.asarray(obs, dtype=np.float32)[None], deterministic=deterministic)[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
            returns.append(total)
            lengths.append(steps)
            terminals.append(bool(terminated))
    finally:
        env.close()
    return EpisodeStats(
        returns=tuple(returns),
        lengths=tuple(lengths),
        terminated=tuple(terminals),
        references=reference_returns(env_id, metadata),
    )
