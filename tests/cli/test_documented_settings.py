"""Every `--set FIELD=VALUE` the user-facing guides print is a setting some command accepts as written.

The README and docs/finetuning.md tell users which settings to change; a renamed or removed field would
turn those lines into one-line errors for whoever copies them. Each documented setting is resolved by
`dime-offline config show COMMAND --set ...` for the commands that take it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dime_offline_cli.main import app
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[2]
GUIDES = ("README.md", "docs/finetuning.md")
COMMANDS = ("finetune", "pretrain", "run", "evaluate", "compare", "ope", "sweep", "collect", "export")
SETTING = re.compile(r"--set\s+(?:'([^']+)'|([A-Za-z_][\w.]*=[^\s`'\"]+))")
PLACEHOLDER = re.compile(r"^[A-Z]+$")  # handover.behaviour_weight=X, field=N: a value for the reader to choose


def documented_settings() -> list[tuple[str, str]]:
    found = []
    for guide in GUIDES:
        for quoted, bare in SETTING.findall((ROOT / guide).read_text()):
            setting = quoted or bare
            field, value = setting.split("=", 1)
            if field == "field" or PLACEHOLDER.match(value):
                continue
            found.append((guide, setting))
    return sorted(set(found))


def accepts(command: str, setting: str) -> bool:
    return CliRunner().invoke(app, ["config", "show", command, "--set", setting]).exit_code == 0


def accepted_by(setting: str) -> tuple[str, ...]:
    return tuple(c for c in COMMANDS if accepts(c, setting))


def test_the_guides_document_settings() -> None:
    settings = {s for _, s in documented_settings()}
    assert len(settings) >= 20  # the pattern still finds them
    assert "handover.conservative_weight=0" in settings and "agent.acting_average_decay=0.999" in settings


@pytest.mark.parametrize(("guide", "setting"), documented_settings())
def test_documented_setting_is_accepted(guide: str, setting: str) -> None:
    assert any(accepts(c, setting) for c in COMMANDS), f"{guide}: --set {setting} is rejected by every command"


def test_a_renamed_field_is_caught() -> None:
    assert accepted_by("handover.behaviour_weight=0") == ("finetune", "run")
    assert accepted_by("handover.behaviour_weights=0") == ()
    assert accepted_by("agent.acting_average_decays=0.999") == ()
