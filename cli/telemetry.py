"""`dime-offline data from-telemetry`, `data profile` and `data make-telemetry`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from dime_offline.config_docs import ConfigSource

from .common import ConfigFileOption, data_app, print_json, user_errors_exit_2

PROFILE = ConfigSource("converters/profile.py", "ProfileConfig")
MAKE_TELEMETRY_HOURS = 4.0
"""Hours simulated by ``make-telemetry`` unless given (TelemetryConfig's own default is for the library)."""
MAKE_TELEMETRY_SEED = 3
"""Seed of ``make-telemetry`` unless given."""


def make_telemetry_base(scan_rate: bool = False) -> Any:
    """The TelemetryConfig ``make-telemetry`` starts from (before --config, flags and --set)."""
    from dime_offline.envs.telemetry import TelemetryConfig

    preset = TelemetryConfig.scan_rate if scan_rate else TelemetryConfig
    return preset(hours=MAKE_TELEMETRY_HOURS, seed=MAKE_TELEMETRY_SEED)
SetTelemetryOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a TelemetryConfig field, e.g. comm_outages_per_hour=0.5 (repeatable;"
                 " list them: dime-offline config show make-telemetry)."),
]
SetProfileOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a ProfileConfig field, e.g. columns.timestamp=Time, reader.format=csv (repeatable)."),
]


@data_app.command("from-telemetry")
@user_errors_exit_2
def from_telemetry_command(
    source: str = typer.Argument(..., help="Historian export: CSV/Parquet file or a folder of them (long or wide)."),
    spec: Path = typer.Option(..., "--spec", help="Telemetry spec (YAML): tags, alignment, quality, episodes, reward."),
    out: Path = typer.Option(..., "--out", help="Canonical Parquet file to write (atomically)."),
    rows_per_file: int | None = typer.Option(
        None, "--rows-per-file", help="Write a folder of Parquet parts of about this many rows instead."),
    report_path: Path | None = typer.Option(None, "--report", help="Also write the conversion report as JSON here."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as one JSON object instead of text."),
) -> None:
    """Convert historian telemetry into canonical transitions (see docs/telemetry.md)."""
    from dime_offline.converters import convert_telemetry, load_spec
    from dime_offline.io import atomic_write_text

    report = convert_telemetry(source, load_spec(spec), out, rows_per_file=rows_per_file)
    if report_path is not None:
        atomic_write_text(report_path, report.to_json(indent=2) + "\n")
    if json_output:
        print_json({"out": str(out), **report.to_dict()})
    else:
        typer.echo(report.format())
        typer.echo(f"\nwrote {report.transitions:,} transitions in {report.episode_count} episodes to {out}")


@data_app.command("make-telemetry")
@user_errors_exit_2
def make_telemetry_command(
    out: Path = typer.Option(..., "--out", help="Export to write: .csv or .parquet (long format)."),
    hours: float | None = typer.Option(
        None, "--hours", help=f"Hours of plant operation to simulate. (default: {MAKE_TELEMETRY_HOURS:g})"),
    seed: int | None = typer.Option(
        None, "--seed", help=f"Seed of the plant, the controller/operator and the historian. (default: {MAKE_TELEMETRY_SEED})"),
    truth: Path | None = typer.Option(None, "--truth", help="Also write the simulator's true states (CSV)."),
    spec_out: Path | None = typer.Option(None, "--spec-out", help="Also write the matching converter spec (YAML)."),
    scan_rate: bool = typer.Option(
        False, "--scan-rate", help="Log at the 2 s scan rate: setpoints once a minute, 1 % bad output samples,"
        " clock skew, 30-300 s outages, changeovers (the spec then converts at 2 s)."),
    config_path: ConfigFileOption = None,
    overrides: SetTelemetryOption = None,
    json_output: bool = typer.Option(False, "--json", help="Print a JSON summary."),
) -> None:
    """Simulate the CSTR twin under its PI controller and write a historian-style export."""
    import yaml

    from dime_offline.config import resolve_config
    from dime_offline.envs.telemetry import (
        TelemetryConfig,
        cstr_scan_rate_spec,
        cstr_telemetry_spec,
        generate_telemetry,
        write_telemetry,
        write_truth,
    )
    from dime_offline.errors import ConfigError
    from dime_offline.io import atomic_write_text

    config = resolve_config(
        TelemetryConfig, None if config_path is None else str(config_path), overrides,
        base=make_telemetry_base(scan_rate), hours=hours, seed=seed,
    )
    hours, seed = config.hours, config.seed
    if not hours > 0:
        raise ConfigError(f"--hours must be positive, got {hours}")
    if out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise ConfigError(f"--out must end in .csv or .parquet, got '{out.name}'")
    result = generate_telemetry(config)
    write_telemetry(result.export, out)
    if truth is not None:
        write_truth(result, truth)
    if spec_out is not None:
        spec = cstr_scan_rate_spec(result.skews) if scan_rate else cstr_telemetry_spec()
        atomic_write_text(spec_out, yaml.safe_dump(spec, sort_keys=False))
    summary = {
        "out": str(out), "rows": result.export.num_rows, "control_steps": len(result.steps),
        "batches": len({step["batch"] for step in result.steps}), "trips": sum(bool(step["terminated"]) for step in result.steps),
        "hours": hours, "seed": seed, "scan_rate": scan_rate, "outages": len(result.outages),
    }
    if json_output:
        print_json(summary)
    else:
        typer.echo(
            f"wrote {summary['rows']:,} historian rows ({hours:g} h, {summary['batches']} batches,"
            f" {summary['trips']} trip(s)) to {out}"
        )


@data_app.command("profile")
@user_errors_exit_2
def profile_command(
    source: str = typer.Argument(..., help="Historian export: CSV/Parquet file or a folder of them (long or wide)."),
    spec_out: Path | None = typer.Option(
        None, "--spec-out", help="Also write a scaffolded telemetry spec (YAML) to edit before converting."),
    timezone: str | None = typer.Option(None, "--timezone", help="IANA zone of timestamps without an offset."),
    max_tags: int | None = typer.Option(
        None, "--max-tags", help=PROFILE.help("max_tags", "Profile at most this many tags (the first seen).")),
    config: ConfigFileOption = None,
    overrides: SetProfileOption = None,
    json_output: bool = typer.Option(False, "--json", help="Print the profile as one JSON object."),
) -> None:
    """Per-tag logging interval, scan phase, quality mix, gaps, value range and stepped/analog guess of an export."""
    import yaml

    from dime_offline.config import resolve_config
    from dime_offline.converters.profile import ProfileConfig, profile_export
    from dime_offline.io import atomic_write_text

    cfg = resolve_config(ProfileConfig, None if config is None else str(config), overrides,
                         source=source, timezone=timezone, max_tags=max_tags)
    profile = profile_export(cfg)
    if spec_out is not None:
        header = (f"# Scaffolded by `dime-offline data profile {source}`: check every field before converting\n"
                  "# (actions, bounds, holds, offsets, episodes, and the placeholder reward; docs/telemetry.md).\n")
        atomic_write_text(spec_out, header + yaml.safe_dump(profile.scaffold_spec(), sort_keys=False))
    if json_output:
        print_json({**profile.to_dict(), "spec_out": None if spec_out is None else str(spec_out)})
    else:
        typer.echo(profile.format())
        if spec_out is not None:
            typer.echo(f"\nwrote a spec to edit to {spec_out}")
