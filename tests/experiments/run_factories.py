"""Synthetic run directories with known scores, laid out as pretrain, finetune and run write them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dime_offline.tracking import CSVSink

TINY_AGENT = {"critic_hidden": [32, 32], "score_hidden": [32, 32], "score_frequencies": 8, "score_time_hidden": 16,
              "diffusion_steps": 4, "batch_size": 32}
"""Agent overrides that keep the algorithm but make an update take milliseconds (for real short runs)."""
REFERENCES = (-1000.0, 0.0)
"""(random, expert) returns of the synthetic datasets: a return R scores 100 * (R + 1000) / 1000."""


def normalized(value: float) -> float:
    low, high = REFERENCES
    return 100.0 * (value - low) / (high - low)


def write_stage(folder: Path, command: str, curve: Sequence[tuple[int, float]], *, with_references: bool, config: dict[str, Any] | None) -> None:
    """One stage's run directory: metrics.csv with the evaluation curve, summary.json whose final block is the curve's last point."""
    folder.mkdir(parents=True, exist_ok=True)
    sink = CSVSink(folder / "metrics.csv")
    for step, value in curve:
        metrics = {"eval/return_mean": value, "train/critic/loss": 1.0}
        if with_references:
            metrics["eval/normalized_score"] = normalized(value)
        sink.write(step, metrics)
    sink.close()
    step, value = curve[-1]
    final = {"step": step, "return_mean": value, "normalized_score": normalized(value) if with_references else None}
    (folder / "summary.json").write_text(json.dumps({"command": command, "env": "Pendulum-v1", "final": final}))
    if config is not None:
        (folder / f"{command}_config.json").write_text(json.dumps(config))


def make_stage_run(
    folder: Path, command: str, final: float, *, seed: int, data: str = "pendulum.parquet", with_references: bool = True,
    **fields: Any,
) -> Path:
    """A pretrain or finetune run whose two evaluations score ``final - 100`` then ``final``."""
    config = {"data": data, "seed": seed, "out_dir": str(folder), "steps": 20, "torch_threads": 1, "agent": {}, **fields}
    write_stage(folder, command, [(10, final - 100.0), (20, final)], with_references=with_references, config=config)
    return folder


def make_pipeline_run(folder: Path, offline: float, online: float, *, seed: int, data: str = "pendulum.parquet", **fields: Any) -> Path:
    """A ``run`` directory: pretrain/ and finetune/ stages and the pipeline's summary with its config."""
    config = {"data": data, "seed": seed, "out_dir": str(folder), "pretrain_steps": 20, "agent": {}, **fields}
    write_stage(folder / "pretrain", "pretrain", [(10, offline - 50.0), (20, offline)], with_references=True, config=None)
    write_stage(folder / "finetune", "finetune", [(20, online - 50.0), (40, online)], with_references=True, config=None)
    (folder / "summary.json").write_text(json.dumps({"command": "run", "env": "Pendulum-v1", "config": config}))
    return folder
