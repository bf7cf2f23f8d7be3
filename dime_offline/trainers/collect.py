"""Record rollouts of a policy into a canonical Parquet dataset.

The recorder keeps gymnasium's flags exactly: ``terminated`` where the env reports a true
terminal state, ``truncated`` where it reports a time limit. A step that gymnasium flags both
ways is stored as terminated (a true terminal state never bootstraps; the schema allows one
flag per row). The last, unfinished episode is cut by the step budget, so its final row is
marked truncated. Actions are stored in environment units, as the schema requires.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import dime_offline
from dime_offline.checkpoints import check_checkpoint_fits, load_checkpoint
from dime_offline.config import to_dict
from dime_offline.data.parquet import write_parquet
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.data.spaces import SpaceSpec
from dime_offline.devices import check_device
from dime_offline.envs.make import make_env, spaces_of
from dime_offline.errors import ConfigError
from dime_offline.evaluation.baselines import UniformRandomPolicy
from dime_offline.evaluation.metrics import EpisodeStats, reference_returns
from dime_offline.tracking import ProgressDisplay
from dime_offline.trainers.loop import seed_everything
from dime_offline.types import Policy

RANDOM_POLICY = "random"
PROGRESS_EVERY = 1000
"""Env steps between progress-bar refreshes."""


@dataclass(frozen=True)
class CollectConfig:
    """What ``dime-offline collect`` records."""

    env_id: str = ""
    """Gymnasium id of the environment to roll out in."""
    policy: str = RANDOM_POLICY
    """"random" (uniform actions within the bounds) or a checkpoint / run directory."""
    steps: int = 10_000
    """Transitions to record."""
    out: str = "data.parquet"
    """Parquet file to write (atomically)."""
    action_noise: float = 0.0
    """Standard deviation of Gaussian noise added to the policy's actions in [-1, 1] units before
    clipping (0: none; has no effect on the random policy)."""
    seed: int = 0
    """Seeds the env, the policy's sampling and the noise."""
    deterministic: bool = False
    """Passed to the checkpoint policy's ``act`` (the DIME default ignores it: sampling stays stochastic)."""
    max_episode_steps: int | None = None
    """Overrides the environment's registered time limit."""
    device: str = "cpu"
    """Torch device for a checkpoint policy."""
    quiet: bool = False
    """No progress bar (set by ``--json``)."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"field 'steps': must be >= 1, got {self.steps}")
        if self.action_noise < 0:
            raise ConfigError(f"field 'action_noise': must be >= 0, got {self.action_noise}")
        if not self.out:
            raise ConfigError("field 'out': an output path is required")
        check_device(self.device)


@dataclass
class CollectResult:
    """What :func:`collect` wrote."""

    cfg: CollectConfig
    out: Path
    transitions: int
    episodes: int
    """Episodes in the dataset, the cut-off last one included."""
    completed: EpisodeStats | None
    """Returns of the episodes that ended on their own (None if the budget cut the first one)."""
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON summary; episode statistics cover completed episodes only and use the shared keys."""
        summary: dict[str, Any] = {
            "command": "collect",
            "env": self.cfg.env_id,
            "policy": self.cfg.policy,
            "steps": self.transitions,
            "dataset_episodes": self.episodes,
            "out": str(self.out),
            "wall_seconds": round(self.wall_seconds, 3),
        }
        summary["completed"] = None if self.completed is None else self.completed.to_dict()
        return summary


def collect(cfg: CollectConfig, policy: Policy | None = None) -> CollectResult:
    """Roll out ``policy`` (or the one ``cfg.policy`` names) for ``cfg.steps`` steps and write Parquet.

    Args:
        cfg: what to record; see :class:`CollectConfig`.
        policy: a ready policy (actions in [-1, 1]) used instead of ``cfg.policy``.
    """
    started = time.monotonic()
    seed_everything(cfg.seed)
    env = make_env(cfg.env_id, seed=cfg.seed, max_episode_steps=cfg.max_episode_steps)
    spaces = spaces_of(env)
    if policy is None:
        policy = _load_policy(cfg, spaces)
    noise_rng = np.random.default_rng(cfg.seed + 1)
    progress = ProgressDisplay(cfg.steps, description=f"collect {cfg.env_id}", enabled=not cfg.quiet)

    n, obs_dim, act_dim = cfg.steps, spaces.obs_dim, spaces.action_dim
    episode_id = np.empty(n, np.int64)
    step = np.empty(n, np.int32)
    obs_buf = np.empty((n, obs_dim), np.float32)
    act_buf = np.empty((n, act_dim), np.float32)
    reward = np.empty(n, np.float32)
    next_obs_buf = np.empty((n, obs_dim), np.float32)
    terminated = np.zeros(n, bool)
    truncated = np.zeros(n, bool)
    completed_returns: list[float] = []
    completed_lengths: list[int] = []
    completed_terminal: list[bool] = []

    try:
        obs, _ = env.reset()
        episode, t, episode_return = 0, 0, 0.0
        for i in range(n):
            action = policy.act(np.asarray(obs, np.float32)[None], deterministic=cfg.deterministic)[0]
            if cfg.action_noise > 0:
                action = action + noise_rng.normal(0.0, cfg.action_noise, size=action.shape)
            action = np.clip(action, -1.0, 1.0)
            next_obs, r, term, trunc, _ = env.step(action)
            episode_id[i], step[i] = episode, t
            obs_buf[i] = np.asarray(obs, np.float32).reshape(-1)
            act_buf[i] = env.action(action)  # what the env received, in its own units
            reward[i] = r
            next_obs_buf[i] = np.asarray(next_obs, np.float32).reshape(-1)
            terminated[i] = term
            truncated[i] = trunc and not term
            episode_return += float(r)
            t += 1
            if term or trunc:
                completed_returns.append(episode_return)
                completed_lengths.append(t)
                completed_terminal.append(bool(term))
                obs, _ = env.reset()
                episode, t, episode_return = episode + 1, 0, 0.0
            else:
                obs = next_obs
            if (i + 1) % PROGRESS_EVERY == 0:
                progress.update(i + 1)
        if t > 0:  # the budget cut the last episode
            truncated[n - 1] = True
        progress.update(n)
    finally:
        progress.close()
        env.close()

    metadata = env_dataset_metadata(
        spaces, cfg.env_id, source=f"dime-offline collect: env {cfg.env_id}, policy {cfg.policy}",
        extra={"collect": to_dict(cfg)}, env=env,
    )
    data = TransitionData(
        episode_id=episode_id, step=step, obs=obs_buf, action=act_buf, reward=reward,
        next_obs=next_obs_buf, terminated=terminated, truncated=truncated, metadata=metadata,
    )
    data.validate(file=cfg.out)
    out = write_parquet(data, cfg.out)
    completed = None
    if completed_returns:
        completed = EpisodeStats(
            tuple(completed_returns), tuple(completed_lengths), tuple(completed_terminal),
            references=reference_returns(cfg.env_id, metadata),
        )
    return CollectResult(
        cfg=cfg, out=out, transitions=n, episodes=int(episode_id[-1]) + 1, completed=completed,
        wall_seconds=time.monotonic() - started,
    )


def env_dataset_metadata(
    spaces: SpaceSpec,
    env_id: str | None,
    *,
    source: str | None,
    extra: dict[str, Any] | None = None,
    env: gym.Env[Any, Any] | None = None,
) -> DatasetMetadata:
    """Metadata for transitions recorded in an env: its bounds (env units), id, D4RL reference
    returns when known, the package version, and the feature names and units ``env`` publishes
    (attributes ``obs_names``, ``action_names``, ``obs_units``, ``action_units``; our process twin
    has them)."""
    references = reference_returns(env_id) if env_id else None

    def names(attribute: str, width: int) -> list[str] | None:
        if env is None:
            return None
        try:
            values = [str(v) for v in env.get_wrapper_attr(attribute)]
        except AttributeError:
            return None
        return values if len(values) == width else None

    return DatasetMetadata(
        obs_names=names("obs_names", spaces.obs_dim),
        action_names=names("action_names", spaces.action_dim),
        obs_units=names("obs_units", spaces.obs_dim),
        action_units=names("action_units", spaces.action_dim),
        action_low=list(spaces.action_low),
        action_high=list(spaces.action_high),
        obs_low=None if spaces.obs_low is None else list(spaces.obs_low),
        obs_high=None if spaces.obs_high is None else list(spaces.obs_high),
        source=source,
        env_id=env_id,
        ref_min_score=None if references is None else references[0],
        ref_max_score=None if references is None else references[1],
        extra={**(extra or {}), "package_version": dime_offline.__version__},
    )


def _load_policy(cfg: CollectConfig, spaces: SpaceSpec) -> Policy:
    if cfg.policy == RANDOM_POLICY:
        return UniformRandomPolicy(spaces.action_dim, seed=cfg.seed)
    check_checkpoint_fits(cfg.policy, spaces, cfg.env_id)
    agent, _, _ = load_checkpoint(cfg.policy, device=cfg.device)
    agent.adopt_acting_average()  # a checkpoint acts with its averaged weights, if kept, in every mode
    return agent
