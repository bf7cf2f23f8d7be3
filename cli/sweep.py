"""`dime-offline sweep`: a grid or random search x seeds of pretrain, finetune or run on Ray Tune, then compare."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import (
    USER_ERROR_EXIT_CODE,
    JsonFlag,
    SetOption,
    app,
    print_json,
    user_errors_exit_2,
)


@app.command("sweep")
@user_errors_exit_2
def sweep_command(
    config: Annotated[Path, typer.Option("--config", help="Sweep file (YAML): command, base, parameters, seeds, scheduler.")],
    address: Annotated[str | None, typer.Option("--address", help="Ray cluster to attach to (host:port or auto); default: Ray on this machine.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: the file's out_dir, else runs/sweep).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --out: keep finished trials, continue interrupted ones from their checkpoints.")] = False,
    overrides: SetOption = None,
    json_output: JsonFlag = False,
) -> None:
    """Run every setting x seed as a Ray Tune trial (a normal run directory each) and compare them (IQM, CI)."""
    from dime_offline.compare import format_table
    from dime_offline.config import resolve_config
    from dime_offline.sweep import SweepConfig, sweep

    cfg = resolve_config(
        SweepConfig, str(config), overrides,
        address=address, out_dir=None if out is None else str(out), resume=resume or None, quiet=json_output or None,
    )
    result = sweep(cfg)
    if json_output:
        print_json(result.to_dict())
    else:
        counts = {status: sum(t.status == status for t in result.trials) for status in ("finished", "kept", "stopped", "failed")}
        typer.echo(f"sweep {result.out_dir}: {len(result.trials)} trials in {result.wall_seconds:.0f} s ("
                   + ", ".join(f"{n} {status}" for status, n in counts.items() if n) + ")")
        if result.comparison is not None:
            typer.echo(format_table(result.comparison))
            typer.echo(f"figure: {result.comparison.figure}")
    if result.failed:
        first = result.failed[0]
        typer.echo(f"error: {len(result.failed)} of {len(result.trials)} trials failed, first {first.run_dir}: {first.error}"
                   " (finished runs are kept; continue with --resume)", err=True)
        raise typer.Exit(USER_ERROR_EXIT_CODE)
