"""`dime-offline ope`: a checkpoint's value estimated from logged data alone (fitted Q evaluation)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dime_offline.config_docs import ConfigSource

from .common import (
    ConfigFileOption,
    JsonFlag,
    app,
    path_text,
    print_json,
    user_errors_exit_2,
)

OPE = ConfigSource("ope.py", "OPEConfig")


@app.command("ope")
@user_errors_exit_2
def ope_command(
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option("--checkpoint", help="Checkpoint or run directory whose policy is evaluated (required; repeat it to"
                     " rank several policies on the same data, best first by the interval's lower end)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Logged transitions: Parquet file/folder, D4RL HDF5 or local Minari id (required).")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help=OPE.help("steps", "FQE gradient steps."))] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for ope.json and ope_config.json (several checkpoints: a folder each and ranking.json).")] = None,
    config: ConfigFileOption = None,
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override an OPEConfig field: key=value, e.g. bootstrap=20, policy_mode=noise_free (repeatable)."),
    ] = None,
    json_output: JsonFlag = False,
) -> None:
    """Estimate the policy's discounted return from logged data (fitted Q evaluation, bootstrap interval),
    beside the logged behaviour's."""
    from dime_offline.config import resolve_config
    from dime_offline.ope import RANKING_FILE, OPEConfig, evaluate_offline, rank_offline, ranking_basis

    checkpoints = checkpoint or []
    cfg = resolve_config(
        OPEConfig, path_text(config), overrides, checkpoint=path_text(checkpoints[0]) if len(checkpoints) == 1 else None,
        data=path_text(data), steps=steps, out_dir=path_text(out)
    )
    if len(checkpoints) > 1:
        ranked = rank_offline([str(c) for c in checkpoints], cfg)
        if json_output:
            print_json({"command": "ope", "ranking": [r.to_dict() for r in ranked]})
            return
        typer.echo(f"ope on {cfg.data}: {len(ranked)} policies, best first by the {ranking_basis(cfg)}")
        for rank, result in enumerate(ranked, 1):
            typer.echo(f"{rank}. {_interval(result.value.to_dict())}  action gap {result.action_gap:.2f}  {result.checkpoint}")
        typer.echo(f"logged behaviour (Monte-Carlo return):   {_interval(ranked[0].behaviour_value.to_dict())}")
        for result in ranked:
            for note in result.notes:
                typer.echo(f"note ({result.checkpoint}): {note}")
        if out is not None:
            typer.echo(f"ranking: {out / RANKING_FILE}")
        return
    summary = evaluate_offline(cfg).to_dict()
    if json_output:
        print_json(summary)
        return
    confidence = f"{100 * summary['interval']['confidence']:.0f} %"
    typer.echo(
        f"ope {summary['checkpoint']} ({summary['acting']} actions) on {summary['data']}: {summary['transitions']}"
        f" transitions, {summary['episodes']} episodes, gamma {summary['gamma']}"
    )
    typer.echo(
        f"policy value from the initial states:    {_interval(summary['value'])} ({confidence} bootstrap interval;"
        f" mean of {summary['fits']} fits, spread {summary['fit_spread']:.1f})"
    )
    if summary["value"]["lo"] is not None:
        typer.echo(f"to choose between policies, compare the lower ends ({summary['value']['lo']:.1f} here): a value the"
                   " data does not pin down gets a wide interval (docs/algorithm.md §10)")
    typer.echo(f"logged behaviour (Monte-Carlo return):   {_interval(summary['behaviour']['value'])}")
    typer.echo(f"policy minus behaviour:                  {_interval(summary['improvement'])}")
    typer.echo(f"mean over all logged states: policy {_interval(summary['mean_state_value'])},"
               f" behaviour {_interval(summary['behaviour']['mean_state_value'])}")
    typer.echo(
        f"the policy's actions differ from the logged ones by {summary['action_gap']:.2f} (RMS in [-1, 1]);"
        " FQE is biased where the policy leaves the data"
    )
    for note in summary["notes"]:
        typer.echo(f"note: {note}")
    if out is not None:
        typer.echo(f"summary: {out / 'ope.json'}")


def _interval(block: dict[str, Any]) -> str:
    if block["lo"] is None:
        return f"{block['estimate']:.1f}"
    return f"{block['estimate']:.1f} [{block['lo']:.1f}, {block['hi']:.1f}]"
