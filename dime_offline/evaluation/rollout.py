"""Policy evaluation by rollouts.

Evaluation is stochastic by default: DIME's authors sample fresh noise at every call, even for
SB3's "deterministic" evaluation, and their published curves come from that protocol
(5 episodes per evaluation).

The episodes are stepped together through a gymnasium vector env, with one batched
``policy.act`` call per vector step: a DIME action is a 16-step diffusion chain whose cost barely
depends on the batch size, so E episodes of length T cost about T policy calls instead of E * T.
Each episode is the one a single env would run from ``reset(seed=seed + i)``, so the batching
changes the cost, not the episodes (a stochastic policy draws its noise in a different order).
"""

from __future__ import annotations

from functools import partial

import gymnasium as gym
import numpy as np

from dime_offline.data.schema import DatasetMetadata
from dime_offline.envs.make import make_env
from dime_offline.evaluation.metrics import EpisodeStats, reference_returns
from dime_offline.types import EpisodicPolicy, Policy

MAX_PARALLEL_EPISODES = 32
"""Default cap on the episodes stepped together: more run in successive waves. It bounds the
envs alive at once (memory, a MuJoCo model each) while a DIME call at batch 32 still costs
about what one at batch 1 does."""


AT_BOUND = 0.999
"""An action component at or beyond this magnitude (in the policy's [-1, 1] box) counts as at its bound."""


def evaluate(
    policy: Policy,
    env_id: str,
    n_episodes: int = 5,
    seed: int = 0,
    *,
    deterministic: bool = False,
    max_episode_steps: int | None = None,
    metadata: DatasetMetadata | None = None,
    max_parallel: int = MAX_PARALLEL_EPISODES,
) -> EpisodeStats:
    """Run ``n_episodes`` full episodes of ``policy``, stepped together, and summarise them.

    Episodes run in waves of at most ``max_parallel``, each wave in fresh envs built by
    :func:`~dime_offline.envs.make.make_env` (and closed afterwards). Within a wave the policy sees
    every row at every step, the finished episodes' included, so row ``i`` is always the same
    episode (per-row memory stays aligned; see :class:`~dime_offline.types.EpisodicPolicy`) and the
    batch shape never changes; a finished episode's row is the env's next, uncounted episode
    (gymnasium's next-step autoreset) and its actions and rewards are ignored. Each episode
    counts its own steps and rewards up to its own termination or truncation.

    Args:
        policy: anything with ``act(obs (n, O), deterministic) -> (n, A)`` actions in [-1, 1], for
            n up to ``max_parallel``. An :class:`~dime_offline.types.EpisodicPolicy` is reset
            before every wave.
        env_id: registered gymnasium id.
        n_episodes: number of episodes E.
        seed: episode ``i`` starts from ``reset(seed=seed + i)``, so two calls with the same seed
            see the same initial states, whatever ``max_parallel``.
        deterministic: passed to ``policy.act``; False reproduces the authors' protocol.
        max_episode_steps: overrides the registered time limit.
        metadata: dataset metadata whose reference returns take precedence over the D4RL table.
        max_parallel: most episodes stepped together; 1 runs them one by one with (1, O) calls,
            for a policy that handles one row only.

    Raises:
        ValueError: ``n_episodes`` or ``max_parallel`` below 1, or the policy returned a number
            of action rows other than the number of observations.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
    if max_parallel < 1:
        raise ValueError(f"max_parallel must be >= 1, got {max_parallel}")
    returns: list[float] = []
    lengths: list[int] = []
    terminals: list[bool] = []
    at_bounds: list[float] = []
    for first in range(0, n_episodes, max_parallel):
        seeds = list(range(seed + first, seed + min(first + max_parallel, n_episodes)))
        wave_returns, wave_lengths, wave_terminals, wave_bound_steps = _run_wave(
            policy, env_id, seeds, deterministic=deterministic, max_episode_steps=max_episode_steps
        )
        returns.extend(float(r) for r in wave_returns)
        lengths.extend(int(n) for n in wave_lengths)
        terminals.extend(bool(t) for t in wave_terminals)
        at_bounds.extend(float(b) / max(int(n), 1) for b, n in zip(wave_bound_steps, wave_lengths))
    return EpisodeStats(
        returns=tuple(returns),
        lengths=tuple(lengths),
        terminated=tuple(terminals),
        at_bounds=tuple(at_bounds),
        references=reference_returns(env_id, metadata),
    )


def _run_wave(
    policy: Policy,
    env_id: str,
    seeds: list[int],
    *,
    deterministic: bool,
    max_episode_steps: int | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One episode per seed, stepped together: (n,) returns, (n,) lengths, (n,) terminated flags and
    (n,) steps with an action component at its bound."""
    n = len(seeds)
    envs = gym.vector.SyncVectorEnv(
        [partial(make_env, env_id, max_episode_steps=max_episode_steps) for _ in seeds],
        copy=False,  # observations are copied into float32 below, before the next step reuses the buffer
        autoreset_mode=gym.vector.AutoresetMode.NEXT_STEP,
    )
    totals = np.zeros(n, dtype=np.float64)
    lengths = np.zeros(n, dtype=np.int64)
    terminated = np.zeros(n, dtype=bool)
    bound_steps = np.zeros(n, dtype=np.int64)
    running = np.ones(n, dtype=bool)
    if isinstance(policy, EpisodicPolicy):
        policy.reset()
    try:
        obs, _ = envs.reset(seed=seeds)
        while running.any():
            actions = np.asarray(policy.act(np.array(obs, dtype=np.float32), deterministic=deterministic))
            if actions.ndim != 2 or actions.shape[0] != n:
                raise ValueError(
                    f"policy.act returned actions of shape {actions.shape} for {n} observations; "
                    f"evaluate steps {n} episodes together (pass max_parallel=1 for a one-row policy)"
                )
            obs, rewards, term, trunc, _ = envs.step(actions)
            totals[running] += rewards[running]
            lengths[running] += 1
            bound_steps[running] += (np.abs(actions[running]) >= AT_BOUND).any(axis=1)
            terminated[running] = term[running]
            running &= ~(term | trunc)
    finally:
        envs.close()
    return totals, lengths, terminated, bound_steps
