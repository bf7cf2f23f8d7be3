"""`dime-offline finetune | evaluate | collect`: build a config, call one library function, report.

With ``--json`` each command prints exactly one JSON object on stdout (progress and notices go to
stderr); evaluation blocks use the same keys everywhere (``return_mean``, ``return_std``,
``normalized_score``, ...).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dime_offline.config_docs import ConfigSource

from .common import (
    ConfigFileOption,
    DeviceOption,
    JsonFlag,
    ResumeFlag,
    SetOption,
    app,
    describe_evaluation,
    path_text,
    print_json,
    user_errors_exit_2,
)

FINETUNE = ConfigSource("trainers/online.py", "FinetuneConfig")
EVALUATE = ConfigSource("trainers/evaluate.py", "EvaluateConfig")
COLLECT = ConfigSource("trainers/collect.py", "CollectConfig")
EXPORT = ConfigSource("export.py", "ExportConfig")


@app.command("finetune")
@user_errors_exit_2
def finetune_command(
    env: Annotated[str | None, typer.Option("--env", help="Gymnasium id, e.g. HalfCheetah-v4.")] = None,
    steps: Annotated[int | None, typer.Option("--steps", help=FINETUNE.help("steps", "Online environment steps."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help=FINETUNE.help("out_dir", "Run directory."))] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Pretrained checkpoint or run directory (omit: train from scratch).")
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Dataset kept in the replay store (Parquet, HDF5 or Minari).")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help=FINETUNE.help("preset", "DIME preset from scratch: cpu or paper."))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=FINETUNE.help("seed", "Random seed."))] = None,
    device: DeviceOption = None,
    config: Annotated[Path | None, typer.Option("--config", help="YAML/JSON file with FinetuneConfig fields (all of them, documented: dime-offline config show finetune).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: key=value, agent.<field>=value (repeatable).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an --out that already holds a run.")] = False,
    resume: ResumeFlag = False,
    json_output: JsonFlag = False,
) -> None:
    """Train DIME online: from scratch, or fine-tune a pretrained checkpoint (offline data optional).

    The defaults were chosen by measurement; docs/finetuning.md says which settings to change for which kind of logs."""
    from dime_offline.trainers.loop import FINETUNE_CONFIG_FILE
    from dime_offline.trainers.online import FinetuneConfig, finetune
    from dime_offline.trainers.resume import load_resumable_run_config

    cfg = load_resumable_run_config(
        FinetuneConfig,
        FINETUNE_CONFIG_FILE,
        None if config is None else str(config),
        overrides,
        env_id=env,
        steps=steps,
        out_dir=path_text(out),
        checkpoint=path_text(checkpoint),
        data=path_text(data),
        preset=preset,
        seed=seed,
        device=device,
        overwrite=overwrite or None,
        resume=resume or None,
        quiet=json_output or None,
    )
    summary = finetune(cfg).to_dict()
    if json_output:
        print_json(summary)
        return
    typer.echo(
        f"finetune {summary['env']}: {summary['steps']} env steps, {summary['updates']} updates"
        f" in {summary['wall_seconds']:.1f} s ({summary['updates_per_second']:.1f} updates/s)"
    )
    typer.echo(f"final evaluation: {describe_evaluation(summary['final'])}")
    typer.echo(f"best evaluation at step {summary['best']['step']}: {describe_evaluation(summary['best'])}")
    typer.echo(f"checkpoint: {summary['checkpoint']} (best: {summary['best_checkpoint']})")
    if summary["champion_checkpoint"]:
        typer.echo(f"deployed policy (champion): {summary['champion_checkpoint']}")
    if summary["learning_curve"]:
        typer.echo(f"learning curve: {summary['learning_curve']}")


@app.command("evaluate")
@user_errors_exit_2
def evaluate_command(
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint or run directory (required).")] = None,
    env: Annotated[str | None, typer.Option("--env", help="Gymnasium id (default: the checkpoint's).")] = None,
    episodes: Annotated[int | None, typer.Option("--episodes", help=EVALUATE.help(
        "episodes", "Evaluation episodes (default: as many as the checkpoint's run evaluated)."))] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=EVALUATE.help(
        "seed", "Episode i starts from reset(seed + i) (default: the checkpoint's run's evaluation episodes)."))] = None,
    deterministic: Annotated[
        bool | None,
        typer.Option("--deterministic/--stochastic", help=EVALUATE.help(
            "deterministic", "Deterministic actions (best of K chains by the critics), or samples of the chain"
            " (the authors' protocol) (default: as the checkpoint's run evaluated).")),
    ] = None,
    deterministic_act: Annotated[
        str | None,
        typer.Option("--deterministic-act", help=EVALUATE.help(
            "deterministic_act", "best_of_k (the best of K chain samples by the critics) or noise_free (the chain's"
            " mean path) (default: the checkpoint's).")),
    ] = None,
    baselines: Annotated[
        list[str] | None,
        typer.Option("--baseline", help=EVALUATE.help(
            "baselines", "Compare with: random, the env's own controller (pi, pi_operator on the CSTR twin), this"
            " checkpoint acting another way (best_of_k, noise_free, stochastic), each on the same seeds, or data"
            " (the logged episodes of --data). Repeatable.")),
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help=EVALUATE.help("data", "Dataset of the data baseline."))] = None,
    device: DeviceOption = None,
    config: ConfigFileOption = None,
    overrides: SetOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Roll out a checkpoint's policy and report return and normalised score (beside baselines, if asked)."""
    from dime_offline.config import resolve_config
    from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint

    cfg = resolve_config(
        EvaluateConfig, path_text(config), overrides,
        checkpoint=path_text(checkpoint), env_id=env, episodes=episodes, seed=seed, deterministic=deterministic,
        deterministic_act=deterministic_act, baselines=tuple(baselines) if baselines else None, data=path_text(data),
        device=device,
    )
    result = evaluate_checkpoint(cfg)
    summary = result.to_dict()
    if json_output:
        print_json(summary)
        return
    seeds = summary["episode_seeds"]
    episodes = "the run's own evaluation episodes" if summary["as_run"] else "episodes"
    typer.echo(f"evaluate {summary['checkpoint']} on {summary['env']} ({summary['acting']} actions;"
               f" {episodes}, seeds {seeds[0]}-{seeds[-1]}): {describe_evaluation(summary)}")
    if result.baselines:
        typer.echo(result.table())


@app.command("export")
@user_errors_exit_2
def export_command(
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Checkpoint or run directory (required).")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="File to write (e.g. policy.onnx); a .json description goes beside it (required).")
    ] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=EXPORT.help("format", "onnx (needs the onnx extra) or torchscript."))] = None,
    mode: Annotated[
        str | None, typer.Option("--mode", help=EXPORT.help(
            "mode", "deterministic (obs -> action, as load_policy) or noise_input (obs, noise -> action)."))
    ] = None,
    deterministic_act: Annotated[
        str | None, typer.Option("--deterministic-act", help=EXPORT.help(
            "deterministic_act", "best_of_k or noise_free (default: the checkpoint's)."))
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")] = False,
    config: ConfigFileOption = None,
    overrides: SetOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Write the policy as one graph file: raw observations in, env-unit actions out."""
    from dime_offline.config import resolve_config
    from dime_offline.export import ExportConfig, export_policy

    cfg = resolve_config(
        ExportConfig, path_text(config), overrides,
        checkpoint=path_text(checkpoint), out=path_text(out), format=fmt, mode=mode, overwrite=overwrite or None,
        deterministic_act=deterministic_act,
    )
    summary = export_policy(
        cfg.checkpoint, cfg.out, fmt=cfg.format, mode=cfg.mode, overwrite=cfg.overwrite, seed=cfg.seed,
        deterministic_act=cfg.deterministic_act,
    ).to_dict()
    if json_output:
        print_json(summary)
        return
    typer.echo(
        f"exported {summary['format']} policy ({summary['mode']}) to {summary['path']} (matches the torch policy within"
        f" {summary['max_abs_error']:.1e}); inputs and bounds in {summary['description']}"
    )


@app.command("collect")
@user_errors_exit_2
def collect_command(
    env: Annotated[str | None, typer.Option("--env", help="Gymnasium id, e.g. HalfCheetah-v4 (required).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help=COLLECT.help("out", "Parquet file to write."))] = None,
    steps: Annotated[int | None, typer.Option("--steps", help=COLLECT.help("steps", "Transitions to record."))] = None,
    policy: Annotated[str | None, typer.Option("--policy", help=COLLECT.help("policy", "'random' or a checkpoint / run directory."))] = None,
    noise: Annotated[
        float | None, typer.Option("--noise", help=COLLECT.help("action_noise", "Gaussian action-noise std in [-1, 1] units."))
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help=COLLECT.help("seed", "Random seed."))] = None,
    device: DeviceOption = None,
    config: ConfigFileOption = None,
    overrides: SetOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Record rollouts of a policy into a canonical Parquet dataset."""
    from dime_offline.config import resolve_config
    from dime_offline.trainers.collect import CollectConfig, collect

    cfg = resolve_config(
        CollectConfig, path_text(config), overrides,
        env_id=env, policy=policy, steps=steps, out=path_text(out), action_noise=noise, seed=seed, device=device,
        quiet=json_output or None,
    )
    summary = collect(cfg).to_dict()
    if json_output:
        print_json(summary)
        return
    typer.echo(
        f"collect {summary['env']}: {summary['steps']} transitions in {summary['dataset_episodes']} episodes"
        f" -> {summary['out']} ({summary['wall_seconds']:.1f} s)"
    )
    if summary["completed"] is not None:
        typer.echo(f"completed episodes: {describe_evaluation(summary['completed'])}")
