"""Evaluate a saved checkpoint in an environment (the library side of ``dime-offline evaluate``)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from dime_offline.checkpoints import (
    check_checkpoint_fits,
    load_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint_dir,
    stable_path,
)
from dime_offline.devices import check_device
from dime_offline.envs.make import SpaceSpec, make_env, recorded_env_id
from dime_offline.errors import ConfigError
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.evaluation.rollout import evaluate


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``dime-offline evaluate`` runs."""

    checkpoint: str = ""
    """Checkpoint directory, or a run directory (its ``checkpoint/`` is used)."""
    env_id: str | None = None
    """Environment id; None uses the one recorded in the checkpoint."""
    episodes: int = 5
    """Evaluation episodes."""
    seed: int = 0
    """Episode ``i`` starts from ``reset(seed=seed + i)``."""
    deterministic: bool = True
    """Deterministic actions (the checkpoint's ``deterministic_act``); false samples the chain (the
    authors' protocol)."""
    max_episode_steps: int | None = None
    """Override the environment's registered time limit."""
    device: str = "cpu"
    """Torch device for the agent."""

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ConfigError("field 'checkpoint': a checkpoint or run directory is required")
        if self.episodes < 1:
            raise ConfigError(f"field 'episodes': must be >= 1, got {self.episodes}")
        check_device(self.device)


@dataclass
class EvaluateResult:
    """Statistics of a checkpoint's evaluation."""

    env_id: str
    checkpoint: str
    stats: EpisodeStats
    wall_seconds: float
    acting: str = "stochastic"
    """How actions were chosen: "stochastic" (samples) or the deterministic mode ("best_of_k", "noise_free")."""

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: the shared evaluation keys at the top level, plus what was evaluated."""
        return {
            "command": "evaluate",
            "env": self.env_id,
            "checkpoint": self.checkpoint,
            "acting": self.acting,
            **self.stats.to_dict(),
            "wall_seconds": round(self.wall_seconds, 3),
        }


def evaluate_checkpoint(cfg: EvaluateConfig) -> EvaluateResult:
    """Load ``cfg.checkpoint``, refuse an environment that does not match it, and roll it out."""
    started = time.monotonic()
    directory = resolve_checkpoint_dir(cfg.checkpoint)
    meta = read_checkpoint_meta(directory)
    env_id = cfg.env_id or recorded_env_id(meta.env_id, f"checkpoint {cfg.checkpoint}")
    env = make_env(env_id, max_episode_steps=cfg.max_episode_steps)
    try:
        spaces = SpaceSpec.from_env(env)
    finally:
        env.close()
    check_checkpoint_fits(directory, spaces, env_id)
    agent, _, _ = load_checkpoint(directory, device=cfg.device)
    stats = evaluate(
        agent, env_id, cfg.episodes, seed=cfg.seed, deterministic=cfg.deterministic, max_episode_steps=cfg.max_episode_steps
    )
    acting = agent.cfg.deterministic_act if cfg.deterministic else "stochastic"
    return EvaluateResult(
        env_id=env_id, checkpoint=str(stable_path(directory)), stats=stats, wall_seconds=time.monotonic() - started, acting=acting
    )
