"""`dime-offline data ...` commands (inspect, convert)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from dime_offline.config_docs import ConfigSource

from .common import ConfigFileOption, data_app, print_json, user_errors_exit_2

CONVERT = ConfigSource("data/load.py", "ConvertConfig")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _render(summary: dict[str, Any]) -> None:
    """Pretty tables of an inspect summary on stdout."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    overview = Table(title=escape(f"{summary['source']} ({summary['format']})"), show_header=False)
    overview.add_column("field", style="bold")
    overview.add_column("value")
    ret, length, meta = summary["episode_return"], summary["episode_length"], summary["metadata"]
    rows = [
        ("transitions", summary["transitions"]),
        ("episodes", summary["episodes"]),
        ("obs_dim / action_dim", f"{summary['obs_dim']} / {summary['action_dim']}"),
        ("terminated / truncated", f"{summary['terminated']} / {summary['truncated']}"),
        ("episode return mean [min, max]", f"{_fmt(ret['mean'])} [{_fmt(ret['min'])}, {_fmt(ret['max'])}]"),
        ("episode length mean [min, max]", f"{_fmt(length['mean'])} [{_fmt(length['min'])}, {_fmt(length['max'])}]"),
    ]
    if summary["normalized_score"] is not None:
        rows.append(("normalized score mean", _fmt(summary["normalized_score"]["mean"])))
    bounds = summary["action_bounds"]
    if bounds.get("declared") and "outside_fraction" in bounds:
        rows.append((
            "actions at / outside bounds",
            f"{bounds['at_bounds_fraction']:.2%} / {bounds['outside_fraction']:.2%} ({bounds['outside_rows']} rows)",
        ))
    else:
        rows.append(("action bounds", "not declared"))
    cont = summary["continuity"]
    rows.append(("next_obs continuity breaks", f"{cont['broken_transitions']} in {cont['broken_episodes']} episode(s)"))
    nonfinite = summary["nonfinite"].get("total")
    rows.append(("non-finite values", f"{nonfinite['values']} in {nonfinite['rows']} rows" if nonfinite else "0"))
    rows += [(key, _fmt(meta[key])) for key in ("env_id", "source", "dt_seconds", "ref_min_score", "ref_max_score")]
    for field, value in rows:
        overview.add_row(escape(field), escape(str(value)))
    console.print(overview)

    features = Table(title="features")
    for col in ("kind", "name", "unit", "min", "max", "mean", "NaN", "inf"):
        features.add_column(col, justify="right" if col in ("min", "max", "mean", "NaN", "inf") else "left")
    for kind in ("obs", "action"):
        for entry in summary["features"][kind]:
            features.add_row(
                kind, escape(entry["name"]), escape(entry["unit"] or ""), _fmt(entry["min"]), _fmt(entry["max"]),
                _fmt(entry["mean"]), str(entry["nan"]), str(entry["inf"]),
            )
    console.print(features)
    for problem in summary["problems"]:
        console.print(f"[bold red]problem:[/] {escape(problem)}")
    for note in summary["notes"]:
        console.print(f"[yellow]note:[/] {escape(note)}")


@data_app.command("inspect")
@user_errors_exit_2
def inspect_command(
    path: str = typer.Argument(..., help="Parquet file or folder, D4RL-style .hdf5/.h5 file, Minari id or folder."),
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
) -> None:
    """Show schema, episodes, return statistics and a NaN / bounds / continuity report."""
    from dime_offline.data.inspect import InspectConfig, inspect_source

    summary = inspect_source(InspectConfig(source=path))
    if json_output:
        print_json(summary)
    else:
        _render(summary)


@data_app.command("convert")
@user_errors_exit_2
def convert_command(
    src: str = typer.Argument(..., help="Input: Parquet, D4RL-style HDF5, Minari id or folder."),
    dst: str = typer.Argument(..., help="Output: .parquet, .hdf5/.h5, a Minari id, or (with --format minari) a folder."),
    format: str | None = typer.Option(None, "--format", help="parquet, hdf5 or minari (default: from DST)."),
    nonfinite: str | None = typer.Option(
        None, "--nonfinite", help=CONVERT.help("nonfinite", "NaN/inf values: 'error' stops, 'drop' cuts the affected episodes.")),
    continuity: str | None = typer.Option(
        None, "--continuity", help="next_obs differing from the next row's obs: 'error' stops, 'warn' reports it. (default: error)"
    ),
    env_id: str | None = typer.Option(None, "--env-id", help="Gymnasium id to record in the output (replacing the source's)."),
    config: ConfigFileOption = None,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a ConvertConfig field, e.g. action_low=[-2.0] --set action_high=[2.0] to record"
        " action bounds (repeatable).")] = None,
    json_output: bool = typer.Option(False, "--json", help="Print the summary as one JSON object."),
) -> None:
    """Convert a dataset to canonical Parquet, D4RL-style HDF5 or Minari; atomic (no partial output).
    --env-id and --set action_low/action_high record metadata a source lacks (e.g. a DataFrame's file)."""
    from dime_offline.config import resolve_config
    from dime_offline.data.load import ConvertConfig, convert_dataset
    from dime_offline.errors import ConfigError

    choices = {"--format": (format, (None, "parquet", "hdf5", "minari")), "--nonfinite": (nonfinite, (None, "error", "drop")),
               "--continuity": (continuity, (None, "error", "warn"))}
    for option, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{option} must be one of {', '.join(a for a in allowed if a)}, got '{value}'")
    cfg = resolve_config(
        ConvertConfig, None if config is None else str(config), overrides, source=src, target=dst, format=format,
        nonfinite=nonfinite, check_continuity=None if continuity is None else continuity == "error", env_id=env_id,
    )
    summary = convert_dataset(cfg)
    if json_output:
        print_json(summary)
        return
    typer.echo(
        f"wrote {summary['transitions']} transitions in {summary['episodes']} episodes to {summary['target']}"
        f" ({summary['target_format']})"
    )
    for note in summary["notes"]:
        typer.echo(f"note: {note}", err=True)
