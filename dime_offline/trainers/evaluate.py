"""Evaluate a saved checkpoint in an environment (the library side of ``dime-offline evaluate``),
optionally beside baselines (:mod:`dime_offline.evaluation.baselines`) on the same episodes."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from dime_offline.agent.config import DETERMINISTIC_MODES, DeterministicMode
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import (
    check_checkpoint_fits,
    load_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint_dir,
    stable_path,
)
from dime_offline.data.load import load_dataset
from dime_offline.data.schema import DatasetMetadata
from dime_offline.devices import check_device
from dime_offline.envs.make import make_env, recorded_env_id, spaces_of
from dime_offline.errors import ConfigError
from dime_offline.evaluation.baselines import (
    DATA_BASELINE,
    BaselineResult,
    check_baselines,
    controller_baseline,
    data_baseline,
)
from dime_offline.evaluation.metrics import REFERENCES_KEY, EpisodeStats
from dime_offline.evaluation.rollout import evaluate


@dataclass(frozen=True)
class EvaluateConfig:
    """What ``dime-offline evaluate`` runs."""

    checkpoint: str = ""
    """Checkpoint directory, or a run directory (its ``checkpoint/`` is used)."""
    env_id: str | None = None
    """Environment id; None uses the one recorded in the checkpoint."""
    episodes: int | None = None
    """Evaluation episodes; None: as many as the run that wrote the checkpoint evaluated (else 5)."""
    seed: int | None = None
    """Episode ``i`` starts from ``reset(seed=seed + i)``; None: the episodes the run that wrote the
    checkpoint evaluated on (its seed + 1000003), so the run's score is reproduced (else 0)."""
    deterministic: bool | None = None
    """Deterministic actions (the checkpoint's ``deterministic_act``); false samples the chain (the
    authors' protocol); None: as the run that wrote the checkpoint evaluated (else deterministic)."""
    max_episode_steps: int | None = None
    """Override the environment's registered time limit; None: the limit of the run that wrote the
    checkpoint (else the registered one)."""
    deterministic_act: DeterministicMode | None = None
    """How deterministic actions are chosen: "best_of_k" (the best of K chain samples by the critics)
    or "noise_free" (the chain's mean path); None: the checkpoint's ``agent.deterministic_act``. Which
    is better depends on the checkpoint (docs/algorithm.md section 9)."""
    device: str = "cpu"
    """Torch device for the agent."""
    baselines: tuple[str, ...] = ()
    """What to compare the policy with: "random" (uniform actions), an environment's own controller
    ("pi", "pi_operator" on the CSTR twin), the same checkpoint acting another way ("best_of_k",
    "noise_free", "stochastic": which mode to deploy), each on the policy's episode seeds, and "data"
    (the logged episodes of ``data``)."""
    data: str | None = None
    """Dataset of the "data" baseline; its reference returns, if it records them, also normalise the
    scores."""
    nonfinite: Literal["error", "drop"] = "error"
    """What to do with rows of ``data`` holding NaN/inf: "error" or "drop"."""

    def __post_init__(self) -> None:
        if not self.checkpoint:
            raise ConfigError("field 'checkpoint': a checkpoint or run directory is required")
        if self.episodes is not None and self.episodes < 1:
            raise ConfigError(f"field 'episodes': must be >= 1, got {self.episodes}")
        if len(set(self.baselines)) != len(self.baselines):
            raise ConfigError(f"field 'baselines': each baseline once, got {list(self.baselines)}")
        if DATA_BASELINE in self.baselines and not self.data:
            raise ConfigError(f"field 'baselines': baseline '{DATA_BASELINE}' needs a dataset (--data logs.parquet)")
        check_device(self.device)


ACTING_BASELINES: tuple[str, ...] = (*DETERMINISTIC_MODES, "stochastic")
"""Baselines that are the evaluated checkpoint itself acting another way: a deterministic mode, or
samples of its chain."""


@dataclass
class EvaluateResult:
    """Statistics of a checkpoint's evaluation, and of its baselines."""

    env_id: str
    checkpoint: str
    stats: EpisodeStats
    wall_seconds: float
    acting: str = "stochastic"
    """How actions were chosen: "stochastic" (samples) or the deterministic mode ("best_of_k", "noise_free")."""
    seed: int = 0
    """Episode ``i`` started from ``reset(seed=seed + i)`` (the paired baselines' too)."""
    baselines: list[BaselineResult] = field(default_factory=list)
    """The baselines, in the order asked for."""
    as_run: bool = False
    """The episodes, acting and time limit were those of the run that wrote the checkpoint, so the score
    is the run's own for this checkpoint."""

    @property
    def episode_seeds(self) -> list[int]:
        return list(range(self.seed, self.seed + self.stats.episodes))

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: the shared evaluation keys at the top level, plus what was evaluated, the episode
        seeds and one block per baseline (its evaluation keys and the policy-minus-baseline difference)."""
        return {
            "command": "evaluate",
            "env": self.env_id,
            "checkpoint": self.checkpoint,
            "acting": self.acting,
            **self.stats.to_dict(),
            "episode_seeds": self.episode_seeds,
            "as_run": self.as_run,
            "baselines": [baseline.to_dict(self.stats) for baseline in self.baselines],
            "wall_seconds": round(self.wall_seconds, 3),
        }

    def table(self) -> str:
        """The policy and its baselines, one row each; then, for the baselines run on the policy's seeds,
        the returns per seed and the paired differences."""
        header = ("", "episodes", "return (mean ± std)", "min", "max", "normalised", "terminated", "at bounds", "length",
                  "policy − baseline")
        rows = [header, _row(f"policy ({self.acting})", self.stats, "")]
        for baseline in self.baselines:
            diff = baseline.difference(self.stats)
            if baseline.paired:
                versus = (f"{diff['return_mean']:+.1f} ± {diff['per_seed_std']:.1f} (paired; policy better on"
                          f" {diff['policy_better']} of {self.stats.episodes})")
            else:
                versus = f"{diff['return_mean']:+.1f} (means of other episodes; per step {diff['return_per_step']:+.2f})"
            rows.append(_row(baseline.name, baseline.stats, versus))
        lines = _columns(rows)
        paired = [b for b in self.baselines if b.paired]
        if paired:
            seed_rows = [("seed", "policy", *[c for b in paired for c in (b.name, f"policy − {b.name}")])]
            for i, seed in enumerate(self.episode_seeds):
                mine = self.stats.returns[i]
                cells = [c for b in paired for c in (f"{b.stats.returns[i]:.1f}", f"{mine - b.stats.returns[i]:+.1f}")]
                seed_rows.append((str(seed), f"{mine:.1f}", *cells))
            lines += ["", *_columns(seed_rows)]
        return "\n".join(lines)


def _row(name: str, stats: EpisodeStats, versus: str) -> tuple[str, ...]:
    score = stats.normalized_score
    bounds = "-" if stats.at_bounds is None else f"{100 * float(np.mean(stats.at_bounds)):.0f} %"
    return (
        name, str(stats.episodes), f"{stats.return_mean:.1f} ± {stats.return_std:.1f}", f"{stats.return_min:.1f}",
        f"{stats.return_max:.1f}", "-" if score is None else f"{score:.1f}", f"{sum(stats.terminated)} of {stats.episodes}",
        bounds, f"{stats.length_mean:.0f}", versus,
    )


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart, a rule under the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return lines


@dataclass(frozen=True)
class EpisodePlan:
    """Which episodes an evaluation runs and how it acts: the config's fields, the unset ones taken from
    the evaluation of the run that wrote the checkpoint."""

    episodes: int
    seed: int
    deterministic: bool
    max_episode_steps: int | None
    references: tuple[float, float] | None
    """Reference returns the run's evaluations normalised with (a dataset's), if any."""
    as_run: bool
    """True when this is exactly the run's own evaluation (episodes, seeds, acting, limit)."""


def episode_plan(cfg: EvaluateConfig, extra: dict[str, Any]) -> EpisodePlan:
    """The episodes ``cfg`` asks for, with what the checkpoint's stage recorded (``extra``) filling the
    unset fields; a checkpoint without a stage config gets 5 episodes from seed 0, deterministic."""
    from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET

    run = extra.get("run_config") or {}
    recorded = {}
    if "eval_episodes" in run and "seed" in run:
        recorded = {
            "episodes": int(run["eval_episodes"]), "seed": int(run["seed"]) + EVAL_SEED_OFFSET,
            "deterministic": bool(run.get("eval_deterministic", True)), "max_episode_steps": run.get("max_episode_steps"),
        }
    fallback = {"episodes": 5, "seed": 0, "deterministic": True, "max_episode_steps": None}
    chosen = {
        name: given if given is not None else recorded.get(name, fallback[name])
        for name, given in (("episodes", cfg.episodes), ("seed", cfg.seed), ("deterministic", cfg.deterministic),
                            ("max_episode_steps", cfg.max_episode_steps))
    }
    references = extra.get(REFERENCES_KEY)
    return EpisodePlan(
        **chosen, references=None if references is None else (float(references[0]), float(references[1])),
        as_run=bool(recorded) and chosen == recorded,
    )


def evaluate_checkpoint(cfg: EvaluateConfig) -> EvaluateResult:
    """Load ``cfg.checkpoint``, refuse an environment (or dataset) that does not match it, roll it out on
    the episodes of :func:`episode_plan`, then each baseline of ``cfg.baselines`` on the same episodes."""
    started = time.monotonic()
    directory = resolve_checkpoint_dir(cfg.checkpoint)
    meta = read_checkpoint_meta(directory)
    env_id = cfg.env_id or recorded_env_id(meta.env_id, f"checkpoint {cfg.checkpoint}")
    check_baselines(cfg.baselines, env_id, cfg.data, also_known=ACTING_BASELINES)
    plan = episode_plan(cfg, meta.extra)
    env = make_env(env_id, max_episode_steps=plan.max_episode_steps)
    try:
        spaces = spaces_of(env)
    finally:
        env.close()
    check_checkpoint_fits(directory, spaces, env_id)
    # the dataset's reference returns normalise the scores, else those the run's evaluations used
    metadata = None if plan.references is None else DatasetMetadata(ref_min_score=plan.references[0], ref_max_score=plan.references[1])
    logged = None
    if cfg.data:  # read and checked before any rollout, so a bad file costs nothing
        data = load_dataset(cfg.data, nonfinite=cfg.nonfinite, check_continuity=False)
        metadata, logged = data.metadata, data_baseline(data, env_id, spaces, source=cfg.data)
    agent, _, _ = load_checkpoint(directory, device=cfg.device)
    recorded_act = agent.cfg.deterministic_act
    if cfg.deterministic_act is not None:
        agent.set_deterministic_act(cfg.deterministic_act)
    agent.adopt_acting_average()  # a checkpoint acts with its averaged weights, if kept, in every mode
    episodes = {"max_episode_steps": plan.max_episode_steps, "metadata": metadata}
    stats = evaluate(agent, env_id, plan.episodes, seed=plan.seed, deterministic=plan.deterministic, **episodes)
    acting = agent.cfg.deterministic_act if plan.deterministic else "stochastic"
    baselines = [
        logged if name == DATA_BASELINE and logged is not None
        else acting_baseline(agent, name, env_id, plan.episodes, plan.seed, **episodes) if name in ACTING_BASELINES
        else controller_baseline(name, env_id, spaces, plan.episodes, plan.seed, **episodes)
        for name in cfg.baselines
    ]
    return EvaluateResult(
        env_id=env_id, checkpoint=str(stable_path(directory)), stats=stats, wall_seconds=time.monotonic() - started,
        acting=acting, seed=plan.seed, baselines=baselines,
        as_run=plan.as_run and (not plan.deterministic or agent.cfg.deterministic_act == recorded_act),
    )


def acting_baseline(agent: DIMEAgent, acting: str, env_id: str, n_episodes: int, seed: int, **episodes: Any) -> BaselineResult:
    """``agent`` acting as ``acting`` (one of :data:`ACTING_BASELINES`) on the episodes of an evaluation
    with ``n_episodes`` and ``seed``: paired with the policy's, so the table says per seed which way of
    acting did better. The agent's own mode is left as it was."""
    if acting == "stochastic":
        stats = evaluate(agent, env_id, n_episodes, seed=seed, deterministic=False, **episodes)
    else:
        with agent.acting_as(acting):
            stats = evaluate(agent, env_id, n_episodes, seed=seed, deterministic=True, **episodes)
    description = {
        "best_of_k": f"this checkpoint, the best of {agent.cfg.act_candidates} chain samples by its critics",
        "noise_free": "this checkpoint, the chain's noise-free mean path",
        "stochastic": "this checkpoint, samples of its chain",
    }[acting]
    return BaselineResult(acting, description, stats, paired=True)
