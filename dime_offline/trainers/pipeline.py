"""The whole offline-to-online path in one call: pretrain, then fine-tune, each evaluated along the way.

This is what ``dime-offline run --data logs.parquet`` does. Each stage evaluates ``evaluations`` times,
evenly spaced, on the same evaluation episodes (seeds); the last evaluation of each stage is *the*
score of its final checkpoint, reported everywhere (summary, printout, figure): the offline score is
the boundary's, the online score the fine-tuned policy's. ``offline_to_online.png`` draws both stages
on one axis with the boundary marked and the data's mean return, over the boundary diagnostics.
The default budgets are sized so the path finishes in about 4 minutes on a 2-core CPU with the
``cpu`` preset; real runs raise them (or call :func:`~dime_offline.trainers.offline.pretrain` and
:func:`~dime_offline.trainers.online.finetune` separately, which is what this function does).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dime_offline.config import check_section
from dime_offline.errors import ConfigError
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.io import atomic_write_text
from dime_offline.regularizers import OfflineConfig
from dime_offline.tracking import plot_offline_to_online
from dime_offline.trainers.handover import HandoverConfig
from dime_offline.trainers.loop import FINETUNE_CONFIG_FILE, PRETRAIN_CONFIG_FILE, SUMMARY_FILE, RunResult
from dime_offline.trainers.offline import PretrainConfig, PretrainResult, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.resume import holds_checkpoint
from dime_offline.trainers.scaffold import RunSettings


@dataclass(frozen=True)
class PipelineConfig(RunSettings):
    """Everything ``dime-offline run`` does (pretrain, then fine-tune, each evaluated ``evaluations``
    times): its own fields below, the settings it hands to both stages in :class:`RunSettings`."""

    data: str = ""
    """Logged dataset (canonical Parquet file/folder, D4RL-style HDF5 or local Minari dataset)."""
    env_id: str | None = None
    """Environment for evaluation and fine-tuning; None: the dataset's ``env_id`` metadata."""
    out_dir: str = "runs/pipeline"
    """Run directory; holds ``pretrain/``, ``finetune/`` and ``summary.json``."""
    pretrain_steps: int = 1500
    """Offline gradient steps (sized with ``finetune_steps`` and the ten evaluations for about 3-4 minutes
    on 2 idle cores with the cpu preset: 185-223 s measured, docs/benchmarks.md "The main job")."""
    finetune_steps: int = 500
    """Online environment steps after pretraining (``utd`` updates each)."""
    evaluations: int = 5
    """Evaluations per stage, evenly spaced (deterministic actions, the stages' default); the last one
    scores the stage's final policy."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIMEConfig overrides for pretraining (kept by the checkpoint for fine-tuning)."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """Pretraining's regularisation and temperature and their online values, which fine-tuning takes
    from the checkpoint (``--set offline.conservative_weight=0.3``); see ``PretrainConfig.offline``."""

    handover: HandoverConfig = field(default_factory=HandoverConfig)
    """How fine-tuning takes over from pretraining: batch composition, the regularisers' online weights
    and their ramp (``--set handover.ramp_steps=100``); see ``FinetuneConfig.handover``."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_section("offline", self.offline, OfflineConfig)
        check_section("handover", self.handover, HandoverConfig)
        for name in ("pretrain_steps", "finetune_steps", "evaluations"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field '{name}': must be >= 1, got {getattr(self, name)}")


@dataclass
class PipelineResult:
    """Summaries of both stages and the scores at the boundary and after fine-tuning."""

    pretrain: PretrainResult
    finetune: RunResult
    wall_seconds: float
    data_return_mean: float | None = None
    """The logged data's mean episode return (the behaviour's score), when known."""
    figure: str | None = None
    """Path of ``offline_to_online.png`` (None when nothing was evaluated)."""

    @property
    def offline_stats(self) -> EpisodeStats:
        """The boundary policy's evaluation (pretraining's last)."""
        assert self.pretrain.loop.final is not None
        return self.pretrain.loop.final.stats

    @property
    def online_stats(self) -> EpisodeStats:
        """The fine-tuned policy's evaluation (fine-tuning's last)."""
        assert self.finetune.loop.final is not None
        return self.finetune.loop.final.stats

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: each stage's own summary plus the boundary/after comparison."""
        before, after = self.offline_stats, self.online_stats
        return {
            "command": "run",
            "env": self.finetune.env,
            "data_return_mean": self.data_return_mean,
            "offline_return_mean": before.return_mean,
            "online_return_mean": after.return_mean,
            "offline_normalized_score": before.normalized_score,
            "online_normalized_score": after.normalized_score,
            "offline_curve": [[r.step, r.stats.return_mean] for r in self.pretrain.loop.evaluations],
            "online_curve": [[r.step, r.stats.return_mean] for r in self.finetune.loop.evaluations],
            "checkpoint": self.finetune.checkpoint,
            "deployed_checkpoint": self.finetune.champion_checkpoint or self.finetune.checkpoint,
            "figure": self.figure,
            "wall_seconds": round(self.wall_seconds, 3),
            "stages": {"pretrain": self.pretrain.to_dict(), "finetune": self.finetune.to_dict()},
        }


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Pretrain on ``cfg.data`` and fine-tune online from that checkpoint with the data kept in the
    replay store, both evaluated ``cfg.evaluations`` times on the same episodes; write the figure and
    ``summary.json``."""
    if not cfg.data:
        raise ConfigError("field 'data': a dataset is required (e.g. --data logs.parquet)")
    if cfg.resume and cfg.overwrite:
        raise ConfigError(f"resume continues the run in {cfg.out_dir} and overwrite would delete it: set only one of them")
    start = time.perf_counter()
    out = Path(cfg.out_dir)  # each stage refuses to overwrite its own earlier run unless cfg.overwrite
    common = {"seed": cfg.seed, "device": cfg.device, "torch_threads": cfg.torch_threads, "quiet": cfg.quiet,
              "trackers": list(cfg.trackers)}
    pre = pretrain(
        PretrainConfig(
            data=cfg.data, env_id=cfg.env_id, steps=cfg.pretrain_steps, out_dir=str(out / "pretrain"),
            preset=cfg.preset, agent=dict(cfg.agent), offline=cfg.offline, eval_episodes=cfg.eval_episodes,
            eval_every=_every(cfg.pretrain_steps, cfg.evaluations), log_every=_every(cfg.pretrain_steps, 4 * cfg.evaluations),
            **common, **_stage_start(cfg, out / "pretrain", PRETRAIN_CONFIG_FILE, cfg.pretrain_steps),
        )
    )
    env_id = cfg.env_id or pre.env
    if env_id is None:
        raise ConfigError(f"{cfg.data}: the dataset names no env_id; pass --env for fine-tuning")
    if pre.loop.final is None:
        raise ConfigError(f"environment '{env_id}' is not registered here, so the pretrained policy cannot be evaluated")
    fine = finetune(
        FinetuneConfig(
            env_id=env_id, steps=cfg.finetune_steps, out_dir=str(out / "finetune"), checkpoint=pre.checkpoint, handover=cfg.handover,
            data=cfg.data, eval_episodes=cfg.eval_episodes, eval_every=_every(cfg.finetune_steps, cfg.evaluations),
            log_every=_every(cfg.finetune_steps, 4 * cfg.evaluations), **common,
            **_stage_start(cfg, out / "finetune", FINETUNE_CONFIG_FILE, cfg.finetune_steps),
        )
    )
    data_return = pre.data_return_mean
    figure = plot_offline_to_online(
        Path(pre.metrics_csv), Path(fine.metrics_csv), out / FIGURE_FILE,
        title=f"DIME offline -> online on {Path(cfg.data).name} ({env_id})", data_return=data_return,
    )
    result = PipelineResult(
        pre, fine, time.perf_counter() - start, data_return_mean=data_return, figure=None if figure is None else str(figure)
    )
    summary = result.to_dict()
    summary["config"] = dataclasses.asdict(cfg)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return result


FIGURE_FILE = "offline_to_online.png"
"""The combined figure in the run directory."""


def _stage_start(cfg: PipelineConfig, stage_dir: Path, config_file: str, steps: int) -> dict[str, bool]:
    """How a stage starts: resumed when ``cfg.resume`` and it saved a checkpoint, else afresh (over
    what a stage that saved nothing left behind, when resuming). A resumed ``run`` takes the first
    command's step counts: a stage started with other ones is refused in one line (fine-tuning from
    an extended pretraining would not be the run's second stage; ``pretrain``/``finetune --resume
    --steps`` extend one stage)."""
    if not cfg.resume:
        return {"overwrite": cfg.overwrite}
    if not holds_checkpoint(stage_dir):
        return {"overwrite": True}
    try:
        started = json.loads((stage_dir / config_file).read_text()).get("steps")
    except (OSError, ValueError):
        started = None  # the stage's own resume names what is missing
    if started is not None and started != steps:
        raise ConfigError(
            f"cannot resume: the stage in {stage_dir} was started with {started} steps, this run asks for {steps};"
            f" resume with the first command's steps (`dime-offline {stage_dir.name} --resume --out {stage_dir} --steps N`"
            " extends that stage alone)"
        )
    return {"resume": True}


def _every(steps: int, times: int) -> int:
    """The interval that gives ``times`` evenly spaced events over ``steps`` (the last at the end)."""
    return max(1, steps // times)
