"""`dime-offline compare`: IQM and stratified-bootstrap confidence intervals over runs, a table and one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dime_offline.config_docs import ConfigSource

from .common import (
    ConfigFileOption,
    JsonFlag,
    SetOption,
    app,
    path_text,
    print_json,
    user_errors_exit_2,
)

COMPARE = ConfigSource("compare.py", "CompareConfig")


@app.command("compare")
@user_errors_exit_2
def compare_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="Run directories, or folders holding them (a sweep's output).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help=COMPARE.help("out_dir", "Folder for compare.json and compare.png."))] = None,
    score: Annotated[str | None, typer.Option("--score", help=COMPARE.help("score", "auto, normalized (D4RL-style) or return."))] = None,
    confidence: Annotated[
        float | None, typer.Option("--confidence", help=COMPARE.help("confidence", "Coverage of the confidence intervals."))
    ] = None,
    config: ConfigFileOption = None,
    overrides: SetOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Compare runs over seeds: final scores and learning curves per dataset and setting (IQM, bootstrap CI)."""
    from dime_offline.compare import CompareConfig, compare, format_table
    from dime_offline.config import resolve_config

    cfg = resolve_config(
        CompareConfig, path_text(config), overrides, paths=[str(p) for p in paths] if paths else None, out_dir=path_text(out),
        score=score, confidence=confidence,
    )
    result = compare(cfg)
    if json_output:
        print_json(result.to_dict())
        return
    for notice in result.notices:
        typer.echo(notice, err=True)
    typer.echo(format_table(result))
    if result.figure is not None:
        typer.echo(f"figure: {result.figure}  (numbers in {result.json_path})")
