"""`dime-offline data from-telemetry` / `make-telemetry`, in process."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.data.parquet import read_parquet

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets/samples/cstr-historian-sample.csv"
SPEC = ROOT / "datasets/specs/telemetry/cstr.yaml"


def test_from_telemetry_writes_parquet_and_prints_the_report(tmp_path: Path) -> None:
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(SPEC), "--out", str(out),
                                      "--report", str(tmp_path / "report.json")])
    assert result.exit_code == 0, result.output
    assert "transitions" in result.output and "terminal:SIS-101.TRIP" in result.output
    data, _ = read_parquet(out)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(data) == report["transitions"] and data.metadata.env_id == "dime_offline/CSTR-v0"


def test_from_telemetry_json(tmp_path: Path) -> None:
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(SPEC), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["out"] == str(out) and summary["episode_count"] == len(summary["episodes"])


def _convert_with_edited_spec(tmp_path: Path, section: str, index: int, key: str, value: str):
    """Run from-telemetry on the sample with one field of the shipped spec changed: (result, spec path, out)."""
    spec = yaml.safe_load(SPEC.read_text())
    spec[section][index][key] = value
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(bad), "--out", str(out)])
    assert result.exit_code == 2 and not out.exists()
    assert len(result.stderr.strip().splitlines()) == 1
    return result, bad, out


def test_a_bad_spec_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    result, bad, _ = _convert_with_edited_spec(tmp_path, "observations", 1, "alignment", "smooth")
    assert "observations[1].alignment" in result.stderr and str(bad) in result.stderr
    assert list(tmp_path.iterdir()) == [bad]


def test_a_missing_tag_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    result, _, _ = _convert_with_edited_spec(tmp_path, "observations", 0, "tag", "TI-999.PV")
    assert "TI-999.PV" in result.stderr


def test_a_misspelled_terminal_tag_exits_2_naming_the_closest_tag(tmp_path: Path) -> None:
    result, _, _ = _convert_with_edited_spec(tmp_path, "terminals", 0, "tag", "SIS-101.TRP")
    assert "'SIS-101.TRP' (terminal) is not in the export; closest names in it: SIS-101.TRIP" in result.stderr


def test_make_telemetry_then_convert(tmp_path: Path) -> None:
    export, spec, truth = tmp_path / "h.parquet", tmp_path / "plant.yaml", tmp_path / "truth.csv"
    result = CliRunner().invoke(app, ["data", "make-telemetry", "--out", str(export), "--hours", "2", "--seed", "5",
                                      "--spec-out", str(spec), "--truth", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] > 0 and summary["control_steps"] == 240 and truth.exists()
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(export), "--spec", str(spec), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()
    bad = CliRunner().invoke(app, ["data", "make-telemetry", "--out", str(tmp_path / "h.xlsx")])
    assert bad.exit_code == 2 and ".csv or .parquet" in bad.stderr



def test_make_telemetry_at_the_scan_rate_then_convert(tmp_path: Path) -> None:
    export, spec = tmp_path / "h.csv", tmp_path / "plant.yaml"
    result = CliRunner().invoke(app, ["data", "make-telemetry", "--out", str(export), "--hours", "3", "--seed", "2",
                                      "--scan-rate", "--spec-out", str(spec), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["scan_rate"] is True
    assert yaml.safe_load(spec.read_text())["control_period"] == "2s"
    out = tmp_path / "logs.parquet"
    report_path = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(export), "--spec", str(spec), "--out", str(out),
                                      "--report", str(report_path)])
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["dt_seconds"] == 2.0 and report["bridged_values"] > 0
