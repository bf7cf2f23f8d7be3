"""Discoverable configuration: `config show`, defaults in --help, --config/--set on every configured command."""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path

import pytest
from dime_offline_cli.config import COMMANDS
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.agent.config import DIMEConfig
from dime_offline.config import load_run_config, resolve_agent_config
from dime_offline.config_docs import NOT_LITERAL, ConfigSource, field_docs
from dime_offline.regularizers.schedule import OfflineConfig
from dime_offline.trainers.offline import PretrainConfig

PACKAGE = Path(__file__).resolve().parents[2] / "dime_offline"
CONFIG_CLASSES = [getattr(importlib.import_module(m), c) for m, c in COMMANDS.values()] + [DIMEConfig, OfflineConfig]


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_every_config_field_is_documented_and_its_source_default_is_the_real_one(cls: type) -> None:
    docs = field_docs(cls)
    assert [f.name for f in dataclasses.fields(cls)] == list(docs)
    assert all(docs.values()), [name for name, doc in docs.items() if not doc]
    # The source reading behind --help (no import, no torch) agrees with the class itself.
    source = ConfigSource(str(Path(importlib.import_module(cls.__module__).__file__).relative_to(PACKAGE)), cls.__name__)
    for f in dataclasses.fields(cls):
        literal = source.fields[f.name].default
        if f.default is not dataclasses.MISSING:
            assert literal == f.default, f.name
        else:
            assert literal is NOT_LITERAL, f.name


def test_config_show_prints_a_documented_config_file_that_loads_back(tmp_path: Path) -> None:
    sets = ["steps=7", "agent.gamma=0.9", "offline.conservative_weight=0.3"]
    result = _invoke("config", "show", "pretrain", *(a for s in sets for a in ("--set", s)))
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "steps: 7\n" in text and "  gamma: 0.9\n" in text and "  conservative_weight: 0.3\n" in text
    # Each field's own docstring sits above it as a comment.
    assert "# " + field_docs(PretrainConfig)["steps"].splitlines()[0] + "\nsteps: 7" in text
    assert "# " + field_docs(DIMEConfig)["gamma"] + "\n  gamma: 0.9" in text
    # The command's own fields lead; the run settings it shares with finetune and run follow.
    keys = [line.split(":")[0] for line in text.splitlines() if line and not line.startswith(("#", " "))]
    assert keys[:3] == ["data", "steps", "out_dir"] and keys[-1] == "quiet", keys
    path = tmp_path / "pretrain.yaml"
    path.write_text(text)
    expected = load_run_config(PretrainConfig, None, sets)
    loaded = load_run_config(PretrainConfig, str(path))
    assert dataclasses.replace(loaded, agent={}) == dataclasses.replace(expected, agent={})
    resolve = lambda cfg: resolve_agent_config(DIMEConfig, DIMEConfig.preset(cfg.preset), cfg.agent)
    assert resolve(loaded) == resolve(expected) and resolve(expected).gamma == 0.9


def test_config_show_json_has_every_field_and_its_doc() -> None:
    result = _invoke("config", "show", "run", "--json", "--set", "preset=paper")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["config"]["preset"] == "paper"
    assert shown["config"]["agent"]["critic_hidden"] == list(DIMEConfig.preset("paper").critic_hidden)
    assert shown["docs"]["agent.critic_hidden"] == field_docs(DIMEConfig)["critic_hidden"]
    assert shown["docs"]["offline.conservative_weight"] == field_docs(OfflineConfig)["conservative_weight"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("config", "show", "nope"), "no configuration for command 'nope'"),
        (("config", "show", "evaluate"), "field 'checkpoint'"),
        (("config", "show", "collect", "--set", "stepz=3"), "unknown field 'stepz'"),
        (("evaluate", "--checkpoint", "x", "--set", "episodes=0"), "field 'episodes': must be >= 1"),
        (("collect", "--env", "Pendulum-v1", "--set", "action_noise=-1"), "field 'action_noise'"),
        (("compare", "--set", "confidence=2", "runs"), "field 'confidence'"),
        (("config", "show", "convert"), "field 'source': required"),
        (("export", "--out", "policy.onnx"), "field 'checkpoint': required"),
        (("sweep", "--config", PACKAGE.parent / "docs" / "sweeps" / "pendulum-run.yaml", "--set", "seeds=[]"), "field 'seeds'"),
        (("export", "--checkpoint", "runs/x", "--out", "p.onnx", "--set", "format=tflite"), "field 'format': expected one of"),
        (("data", "make-telemetry", "--out", "x.csv", "--set", "hours=-1"), "--hours must be positive"),
    ],
)
def test_config_mistakes_are_one_line_exit_2(args: tuple[object, ...], expected: str) -> None:
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and expected in result.stderr, result.output


def test_help_shows_the_config_defaults() -> None:
    defaults = {
        ("pretrain",): {"--steps": PretrainConfig().steps, "--out": PretrainConfig().out_dir},
        ("collect",): {"--steps": 10_000, "--policy": "random"},
        ("run",): {"--pretrain-steps": importlib.import_module("dime_offline.trainers.pipeline").PipelineConfig().pretrain_steps},
    }
    for command, options in defaults.items():
        result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
        text = " ".join(result.stdout.split())  # rich wraps long help
        for option, value in options.items():
            assert option in text and f"(default: {value})" in text, (command, option, text)


def test_collect_takes_a_config_file_flags_and_sets_in_that_order(tmp_path: Path) -> None:
    config = tmp_path / "collect.yaml"
    config.write_text(f"env_id: Pendulum-v1\nsteps: 500\nseed: 4\nout: {tmp_path / 'from-file.parquet'}\n")
    out = tmp_path / "data.parquet"
    result = _invoke("collect", "--config", config, "--steps", 30, "--out", out, "--set", "steps=25", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 25 and summary["env"] == "Pendulum-v1" and Path(summary["out"]) == out
    assert out.is_file() and not (tmp_path / "from-file.parquet").exists()


def test_data_commands_take_config_and_set(tmp_path: Path) -> None:
    shown = json.loads(_invoke("config", "show", "make-telemetry", "--json").stdout)["config"]
    assert (shown["hours"], shown["seed"]) == (4.0, 3)  # the command's own starting point
    config = tmp_path / "plant.yaml"
    config.write_text("hours: 0.5\nseed: 8\n")
    export = tmp_path / "export.csv"
    result = _invoke("data", "make-telemetry", "--out", export, "--config", config, "--seed", 5, "--set", "hours=0.25", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["hours"], summary["seed"], summary["control_steps"]) == (0.25, 5, 30)
    profiled = _invoke("data", "profile", export, "--set", "max_tags=2", "--json")
    assert profiled.exit_code == 0, profiled.output
    assert len(json.loads(profiled.stdout)["tags"]) == 2
