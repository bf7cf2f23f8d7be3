"""`dime-offline config show COMMAND`: a command's fully resolved configuration, each field documented."""

from __future__ import annotations

from typing import Any

import typer

from .common import ConfigFileOption, SetOption, app, print_json, user_errors_exit_2

config_app = typer.Typer(help="Show a command's configuration: every field, its value and what it does.", no_args_is_help=True)
app.add_typer(config_app, name="config")

# command -> (module, config class)
COMMANDS: dict[str, tuple[str, str]] = {
    "pretrain": ("dime_offline.trainers.offline", "PretrainConfig"),
    "finetune": ("dime_offline.trainers.online", "FinetuneConfig"),
    "run": ("dime_offline.trainers.pipeline", "PipelineConfig"),
    "evaluate": ("dime_offline.trainers.evaluate", "EvaluateConfig"),
    "collect": ("dime_offline.trainers.collect", "CollectConfig"),
    "ope": ("dime_offline.ope", "OPEConfig"),
    "export": ("dime_offline.export", "ExportConfig"),
    "compare": ("dime_offline.compare", "CompareConfig"),
    "sweep": ("dime_offline.sweep", "SweepConfig"),
    "convert": ("dime_offline.data.load", "ConvertConfig"),
    "profile": ("dime_offline.converters.profile", "ProfileConfig"),
    "make-telemetry": ("dime_offline.envs.telemetry", "TelemetryConfig"),
}


@config_app.command("show")
@user_errors_exit_2
def show_command(
    command: str = typer.Argument(..., help=f"The command: {', '.join(COMMANDS)}."),
    config: ConfigFileOption = None,
    overrides: SetOption = None,
    json_output: bool = typer.Option(False, "--json", help="Print {config, docs} as one JSON object instead of YAML."),
) -> None:
    """Print the configuration COMMAND would run with (defaults < --config < --set) as YAML, each field's
    documentation as a comment; the output is itself a valid --config file."""
    from dime_offline.config_docs import documented_dict, documented_yaml
    from dime_offline.errors import ConfigError

    if command not in COMMANDS:
        raise ConfigError(f"no configuration for command '{command}' (known: {', '.join(COMMANDS)})")
    cfg, sections, note = _resolve(command, None if config is None else str(config), overrides)
    if json_output:
        print_json(documented_dict(cfg, sections))
        return
    title = f"dime-offline {command}: {type(cfg).__name__}, resolved (defaults < --config < --set)."
    typer.echo(documented_yaml(cfg, sections, title=title + (f"\n{note}" if note else "")), nl=False)


def _resolve(command: str, path: str | None, overrides: list[str] | None) -> tuple[Any, dict[str, Any], str]:
    """The command's config as its own command would build it, the sections shown in full (the agent
    resolved from its preset and overrides) and a note on what the file cannot show."""
    import dataclasses
    import importlib

    from dime_offline.config import resolve_config

    module, class_name = COMMANDS[command]
    cls = getattr(importlib.import_module(module), class_name)
    if command == "make-telemetry":  # the command's own starting point, not the library defaults
        from .telemetry import make_telemetry_base

        note = "Without --scan-rate; with it the preset of TelemetryConfig.scan_rate() is the starting point."
        return resolve_config(cls, path, overrides, base=make_telemetry_base()), {}, note
    if "agent" not in {f.name for f in dataclasses.fields(cls)}:
        return resolve_config(cls, path, overrides), {}, ""
    from dime_offline.agent.config import DIMEConfig
    from dime_offline.config import load_run_config, resolve_agent_config

    cfg = load_run_config(cls, path, overrides)
    if getattr(cfg, "checkpoint", None):
        return cfg, {}, (f"agent: overrides only; the agent itself comes from the checkpoint {cfg.checkpoint}"
                         " (see its config.json)")
    return cfg, {"agent": resolve_agent_config(DIMEConfig, DIMEConfig.preset(cfg.preset), cfg.agent)}, ""

