"""The whole offline-to-online path in one call: pretrain, evaluate, fine-tune, evaluate.

This is what ``dime-offline run --data logs.parquet`` does. The default budgets are sized so the
path finishes in about 3 minutes on a 2-core CPU with the ``cpu`` preset; real runs raise them (or call
:func:`~dime_offline.trainers.offline.pretrain` and :func:`~dime_offline.trainers.online.finetune`
separately, which is what this function does with the stages' own configs).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dime_offline.devices import check_device
from dime_offline.config import check_section
from dime_offline.errors import ConfigError
from dime_offline.io import atomic_write_text
from dime_offline.regularizers import OfflineConfig
from dime_offline.trainers.evaluate import EvaluateConfig, EvaluateResult, evaluate_checkpoint
from dime_offline.trainers.loop import SUMMARY_FILE, RunResult
from dime_offline.trainers.offline import PretrainConfig, PretrainResult, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune


@dataclass(frozen=True)
class PipelineConfig:
    """Everything ``dime-offline run`` does (pretrain -> evaluate -> finetune -> evaluate)."""

    data: str = ""
    """Logged dataset (canonical Parquet file/folder, D4RL-style HDF5 or local Minari dataset)."""
    env_id: str | None = None
    """Environment for evaluation and fine-tuning; None: the dataset's ``env_id`` metadata."""
    out_dir: str = "runs/pipeline"
    """Run directory; holds ``pretrain/``, ``finetune/`` and ``summary.json``."""
    overwrite: bool = False
    """Allow replacing an earlier run in ``out_dir``."""
    pretrain_steps: int = 1500
    """Offline gradient steps (sized with ``finetune_steps`` for about 3 minutes on 2 idle cores with
    the cpu preset: ~14 gradient steps/s offline and ~15 updates/s online, docs/benchmarks.md)."""
    finetune_steps: int = 500
    """Online environment steps after pretraining (``utd`` updates each)."""
    eval_episodes: int = 5
    """Episodes per evaluation (stochastic, as the authors evaluate)."""
    preset: str = "cpu"
    """DIME preset: "cpu" (small networks) or "paper" (authors' hyperparameters)."""
    seed: int = 0
    """Seed of every stage."""
    device: str = "cpu"
    """Torch device of every stage (pretraining, fine-tuning and both evaluations)."""
    torch_threads: int | None = None
    """Intra-op CPU threads for torch; None keeps torch's default."""
    quiet: bool = False
    """No progress bars (set by ``--json``)."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIMEConfig overrides for pretraining (kept by the checkpoint for fine-tuning)."""
    offline: OfflineConfig = field(default_factory=OfflineConfig)
    """Pretraining's regularisation and temperature and their online values, which fine-tuning takes
    from the checkpoint (``--set offline.conservative_weight=0.3``); see ``PretrainConfig.offline``."""

    def __post_init__(self) -> None:
        check_section("offline", self.offline, OfflineConfig)
        for name in ("pretrain_steps", "finetune_steps", "eval_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field '{name}': must be >= 1, got {getattr(self, name)}")
        check_device(self.device)


@dataclass
class PipelineResult:
    """Summaries of every stage and the scores before and after fine-tuning."""

    pretrain: PretrainResult
    offline_eval: EvaluateResult
    finetune: RunResult
    online_eval: EvaluateResult
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        """JSON summary: each stage's own summary plus the before/after comparison."""
        before, after = self.offline_eval.stats, self.online_eval.stats
        return {
            "command": "run",
            "env": self.online_eval.env_id,
            "offline_return_mean": before.return_mean,
            "online_return_mean": after.return_mean,
            "offline_normalized_score": before.normalized_score,
            "online_normalized_score": after.normalized_score,
            "checkpoint": self.finetune.checkpoint,
            "wall_seconds": round(self.wall_seconds, 3),
            "stages": {
                "pretrain": self.pretrain.to_dict(),
                "offline_eval": self.offline_eval.to_dict(),
                "finetune": self.finetune.to_dict(),
                "online_eval": self.online_eval.to_dict(),
            },
        }


def run_pipeline(cfg: PipelineConfig) -> PipelineResult:
    """Pretrain on ``cfg.data``, evaluate, fine-tune online from that checkpoint with the data kept in
    the replay store, evaluate again (same evaluation seeds), and write ``summary.json``."""
    if not cfg.data:
        raise ConfigError("field 'data': a dataset is required (e.g. --data logs.parquet)")
    start = time.perf_counter()
    out = Path(cfg.out_dir)  # each stage refuses to overwrite its own earlier run unless cfg.overwrite
    common = dict(seed=cfg.seed, device=cfg.device, torch_threads=cfg.torch_threads, quiet=cfg.quiet, overwrite=cfg.overwrite)
    pre = pretrain(
        PretrainConfig(
            data=cfg.data, env_id=cfg.env_id, steps=cfg.pretrain_steps, out_dir=str(out / "pretrain"),
            preset=cfg.preset, agent=dict(cfg.agent), offline=cfg.offline, eval_every=0, eval_episodes=cfg.eval_episodes,
            **common,
        )
    )
    env_id = cfg.env_id or pre.env
    if env_id is None:
        raise ConfigError(f"{cfg.data}: the dataset names no env_id; pass --env for fine-tuning")
    evaluation = dict(env_id=env_id, episodes=cfg.eval_episodes, seed=cfg.seed, device=cfg.device)
    offline_eval = evaluate_checkpoint(EvaluateConfig(checkpoint=pre.checkpoint, **evaluation))
    fine = finetune(
        FinetuneConfig(
            env_id=env_id, steps=cfg.finetune_steps, out_dir=str(out / "finetune"), checkpoint=pre.checkpoint,
            data=cfg.data, eval_every=0, eval_episodes=cfg.eval_episodes, **common,
        )
    )
    online_eval = evaluate_checkpoint(EvaluateConfig(checkpoint=fine.checkpoint, **evaluation))
    result = PipelineResult(pre, offline_eval, fine, online_eval, time.perf_counter() - start)
    summary = result.to_dict()
    summary["config"] = dataclasses.asdict(cfg)
    atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return result
