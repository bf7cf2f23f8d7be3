"""Spec loading: YAML errors name the field; the shipped CSTR spec matches the generator's."""

from __future__ import annotations

from pathlib import Path

import pytest

from dime_offline.converters import load_spec, spec_from_dict
from dime_offline.envs.telemetry import cstr_telemetry_spec
from dime_offline.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
BASE = """
control_period: 30s
observations: [{tag: TI-101.PV}]
actions: [{tag: TIC-101.OP, alignment: stepped}]
reward: {expression: -abs(TI_101_PV - 350)}
"""


def _load(tmp_path: Path, text: str):
    path = tmp_path / "plant.yaml"
    path.write_text(text)
    return load_spec(path)


@pytest.mark.parametrize(
    "extra, field",
    [
        ("observations: [{tag: A, alignment: linear}]", "observations[0].alignment"),
        ("observations: [{tag: A, name: 2bad}]", "observations[0].name"),
        ("observations: [{tag: A, max_gap: 5T}]", "observations[0].max_gap"),
        ("observations: [{name: x}]", "observations[0].tag"),
        ("observations: [{tag: A, colour: red}]", "observations[0].colour"),
        ("quality: {numeric_codes: modbus}", "quality.numeric_codes"),
        ("quality: {min_coverage: 2}", "quality.min_coverage"),
        ("episodes: {window: 10s}", "episodes.window"),
        ("episodes: {modes: [AUTO]}", "episodes.modes"),
        ("terminals: [{tag: TRIP}]", "terminals[0]"),
        ("terminals: [{tag: TRIP, kind: text, above: 1}]", "terminals[0]"),
        ("timezone: Mars/Olympus", "timezone"),
        ("reader: {format: xml}", "reader.format"),
        ("columns: {timestamp_unit: minutes}", "columns.timestamp_unit"),
        ("impute: {max_steps: -1}", "impute.max_steps"),
        ("actions: [{tag: U, low: 1}]", "actions[0]"),
        ("actions: [{tag: U, low: 5, high: 1}]", "actions[0].low"),
        ("actions: [{tag: U, timing: later}]", "actions[0].timing"),
        ("bogus: 1", "bogus"),
        ("control_period: 0", "control_period"),
        ("reward: {expression: TI_101_PV.real}", "reward.expression"),
    ],
)
def test_bad_specs_name_the_file_and_field(tmp_path: Path, extra: str, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, BASE + extra + "\n")
    line = err.value.one_line()
    assert str(tmp_path / "plant.yaml") in line
    assert field in line
    assert "\n" not in line


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        _load(tmp_path, "control_period: [30s\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        _load(tmp_path, "- a\n- b\n")
    with pytest.raises(ConfigError, match="reward.function"):
        _load(tmp_path, BASE.replace("reward: {expression: -abs(TI_101_PV - 350)}", "reward: {function: os.system}"))


def test_duplicate_and_clashing_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duplicate feature name 'x'"):
        _load(tmp_path, BASE + "extra_state: [{tag: B, name: x}, {tag: C, name: x}]\n")
    with pytest.raises(ConfigError, match="clashes"):
        _load(tmp_path, BASE + "extra_state: [{tag: B, name: T}, {tag: C, name: next_T}]\n")


def test_numeric_mode_codes_and_prev_clash(tmp_path: Path) -> None:
    spec = _load(tmp_path, BASE + "episodes: {mode_tag: MODE, modes: [1, 2.0, CAS]}\n")
    assert spec.episodes.modes == ["1", "2", "CAS"]
    with pytest.raises(ConfigError, match="prev_TIC_101_OP"):
        _load(tmp_path, BASE + "extra_state: [{tag: X, name: prev_TIC_101_OP}]\n")


def test_bare_tag_names_and_defaults(tmp_path: Path) -> None:
    spec = _load(tmp_path, BASE + "extra_state: [TI-100.PV]\n")
    assert spec.obs_names == ["TI_101_PV", "TI_100_PV"]
    assert spec.control_period == 30.0 and spec.max_gap == 150.0
    assert spec.observations[0].alignment == "mean"
    assert spec.spec_hash() == _load(tmp_path, BASE + "extra_state: [{tag: TI-100.PV}]\n").spec_hash()


def test_shipped_cstr_spec_is_the_generators_spec() -> None:
    shipped = load_spec(ROOT / "datasets/specs/telemetry/cstr.yaml")
    assert shipped.spec_hash() == spec_from_dict(cstr_telemetry_spec()).spec_hash()
    assert shipped.obs_names == ["reactor_temp", "concentration_a", "jacket_temp", "temp_setpoint", "feed_temp",
                                 "prev_jacket_sp"]


def test_an_unquoted_yaml_time_is_a_grid_origin(tmp_path: Path) -> None:
    spec = _load(tmp_path, BASE + "grid_origin: 2024-05-01T00:00:05Z\n")
    assert spec.grid_origin == "2024-05-01T00:00:05+00:00"
    assert spec.spec_hash() == _load(tmp_path, BASE + "grid_origin: '2024-05-01T00:00:05+00:00'\n").spec_hash()


def test_the_documented_spec_reference_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs/telemetry.md").read_text()
    block = text.split("## Spec reference", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    spec = _load(tmp_path, block)
    assert spec.grid_origin.startswith("2024-05-01T00:00:00")


def test_links_in_the_telemetry_docs_resolve() -> None:
    import re

    for doc in ("docs/telemetry.md", "docs/demo-cstr.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", (ROOT / doc).read_text()):
            assert (ROOT / doc).parent.joinpath(target).exists(), f"{doc}: dead link {target}"
