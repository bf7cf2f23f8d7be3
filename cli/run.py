"""`dime-offline run`: the whole offline-to-online path (pretrain, then fine-tune, each evaluated along the way)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dime_offline.config_docs import ConfigSource

from .common import (
    DeviceOption,
    JsonFlag,
    app,
    describe_evaluation,
    path_text,
    print_json,
    user_errors_exit_2,
)

PIPELINE = ConfigSource("trainers/pipeline.py", "PipelineConfig")


@app.command("run")
@user_errors_exit_2
def run_command(
    data: Annotated[Path, typer.Option("--data", help="Logged dataset: Parquet file/folder, D4RL HDF5 or local Minari id.")],
    env: Annotated[str | None, typer.Option("--env", help="Gymnasium id (default: the dataset's env_id).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help=PIPELINE.help("out_dir", "Run directory."))] = None,
    pretrain_steps: Annotated[
        int | None, typer.Option("--pretrain-steps", help=PIPELINE.help("pretrain_steps", "Offline gradient steps."))
    ] = None,
    finetune_steps: Annotated[
        int | None, typer.Option("--finetune-steps", help=PIPELINE.help("finetune_steps", "Online environment steps."))
    ] = None,
    preset: Annotated[str | None, typer.Option("--preset", help=PIPELINE.help("preset", "DIME preset: cpu or paper."))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=PIPELINE.help("seed", "Random seed."))] = None,
    device: DeviceOption = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with PipelineConfig fields (all of them, documented: dime-offline config show run).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: key=value, offline.<field>=value, agent.<field>=value (repeatable)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an earlier run in --out.")] = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a stopped run in --out (give the first command's settings again).")
    ] = False,
    json_output: JsonFlag = False,
) -> None:
    """Pretrain on logged data, fine-tune online, and compare the two evaluations (a few minutes by default)."""
    from dime_offline.config import load_run_config
    from dime_offline.trainers.pipeline import PipelineConfig, run_pipeline

    cfg = load_run_config(
        PipelineConfig,
        None if config is None else str(config),
        overrides,
        data=path_text(data),
        env_id=env,
        out_dir=path_text(out),
        pretrain_steps=pretrain_steps,
        finetune_steps=finetune_steps,
        preset=preset,
        seed=seed,
        device=device,
        overwrite=overwrite or None,
        resume=resume or None,
        quiet=json_output or None,
    )
    result = run_pipeline(cfg)
    summary = result.to_dict()
    if json_output:
        print_json(summary)
        return
    stages = summary["stages"]
    if summary["data_return_mean"] is not None:
        typer.echo(f"logged data: mean episode return {summary['data_return_mean']:.1f}")
    for name, stage, unit in (("offline", "pretrain", "gradient steps"), ("online ", "finetune", "env steps")):
        curve = " -> ".join(f"{value:.0f}" for _, value in summary[f"{name.strip()}_curve"])
        typer.echo(f"{name} (after {stages[stage]['steps']} {unit}): {describe_evaluation(stages[stage]['final'])}  [curve: {curve}]")
    typer.echo(f"figure: {summary['figure']}")
    typer.echo(f"checkpoint: {summary['checkpoint']}  ({summary['wall_seconds']:.0f} s in all; summary in {cfg.out_dir}/summary.json)")
    if summary["deployed_checkpoint"] != summary["checkpoint"]:
        typer.echo(f"deployed policy (the fine-tuning's champion, what the online score measures): {summary['deployed_checkpoint']}")
