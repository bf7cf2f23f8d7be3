"""`dime-offline compare`: IQM and stratified-bootstrap confidence intervals over runs, a table and one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import print_json, user_errors_exit_2
from .main import app
from .train import JsonFlag


@app.command("compare")
@user_errors_exit_2
def compare_command(
    paths: Annotated[list[Path], typer.Argument(help="Run directories, or folders holding them (a sweep's output).")],
    out: Annotated[Path | None, typer.Option("--out", help="Folder for compare.json and compare.png (default runs/compare).")] = None,
    score: Annotated[str, typer.Option("--score", help="auto, normalized (D4RL-style) or return.")] = "auto",
    confidence: Annotated[float, typer.Option("--confidence", help="Coverage of the confidence intervals.")] = 0.95,
    json_output: JsonFlag = False,
) -> None:
    """Compare runs over seeds: final scores and learning curves per dataset and setting (IQM, bootstrap CI)."""
    from dime_offline.compare import CompareConfig, compare, format_table
    from dime_offline.config import from_dict

    fields = {"paths": [str(p) for p in paths], "score": score, "confidence": confidence}
    if out is not None:
        fields["out_dir"] = str(out)
    result = compare(from_dict(CompareConfig, fields))
    if json_output:
        print_json(result.to_dict())
        return
    for notice in result.notices:
        typer.echo(notice, err=True)
    typer.echo(format_table(result))
    if result.figure is not None:
        typer.echo(f"figure: {result.figure}  (numbers in {result.json_path})")
