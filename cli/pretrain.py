"""`dime-offline pretrain`: build a PretrainConfig, call :func:`pretrain`, report.

With ``--json`` it prints exactly one JSON object on stdout (the same keys as ``finetune``'s
summary, plus ``data``, ``transitions`` and ``regularizers_online``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dime_offline.config_docs import ConfigSource

from .common import (
    DeviceOption,
    JsonFlag,
    ResumeFlag,
    app,
    describe_evaluation,
    path_text,
    print_json,
    user_errors_exit_2,
)

PRETRAIN = ConfigSource("trainers/offline.py", "PretrainConfig")


@app.command("pretrain")
@user_errors_exit_2
def pretrain_command(
    data: Annotated[Path | None, typer.Option("--data", help="Dataset: Parquet file/folder, D4RL HDF5 or local Minari id.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help=PRETRAIN.help("steps", "Gradient steps."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help=PRETRAIN.help("out_dir", "Run directory."))] = None,
    preset: Annotated[str | None, typer.Option("--preset", help=PRETRAIN.help("preset", "DIME preset: cpu or paper."))] = None,
    env: Annotated[
        str | None, typer.Option("--env", help="Gymnasium id to evaluate in (default: the dataset's, when registered).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=PRETRAIN.help("seed", "Random seed."))] = None,
    device: DeviceOption = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with PretrainConfig fields (all of them, documented: dime-offline config show pretrain).")] = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a field: key=value, offline.<field>=value, agent.<field>=value (repeatable)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an --out that already holds a run.")] = False,
    resume: ResumeFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Pretrain DIME offline on logged data (conservative critic, behaviour term), ready for finetune."""
    from dime_offline.trainers.loop import PRETRAIN_CONFIG_FILE
    from dime_offline.trainers.offline import PretrainConfig, pretrain
    from dime_offline.trainers.resume import load_resumable_run_config

    cfg = load_resumable_run_config(
        PretrainConfig,
        PRETRAIN_CONFIG_FILE,
        None if config is None else str(config),
        overrides,
        data=path_text(data),
        steps=steps,
        out_dir=path_text(out),
        preset=preset,
        env_id=env,
        seed=seed,
        device=device,
        overwrite=overwrite or None,
        resume=resume or None,
        quiet=json_output or None,
    )
    summary = pretrain(cfg).to_dict()
    if json_output:
        print_json(summary)
        return
    typer.echo(
        f"pretrain {summary['data']}: {summary['transitions']} transitions, {summary['updates']} gradient steps"
        f" in {summary['wall_seconds']:.1f} s ({summary['updates_per_second']:.1f} updates/s)"
    )
    if summary["final"] is not None:
        typer.echo(f"final evaluation on {summary['env']}: {describe_evaluation(summary['final'])}")
        typer.echo(f"best evaluation at step {summary['best']['step']}: {describe_evaluation(summary['best'])}")
    typer.echo(f"checkpoint: {summary['checkpoint']} (fine-tune with: dime-offline finetune --checkpoint {summary['out_dir']})")
    if summary["learning_curve"]:
        typer.echo(f"learning curve: {summary['learning_curve']}")
