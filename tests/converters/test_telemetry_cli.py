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


def test_a_bad_spec_exits_2_with_one_line_naming_the_field(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    spec["observations"][1]["alignment"] = "smooth"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "observations[1].alignment" in lines[0] and str(bad) in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


def test_a_missing_tag_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    spec["observations"][0]["tag"] = "TI-999.PV"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert "TI-999.PV" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


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


def test_a_misspelled_terminal_tag_exits_2_naming_the_closest_tag(tmp_path: Path) -> None:
    spec = yaml.safe_load(SPEC.read_text())
    spec["terminals"][0]["tag"] = "SIS-101.TRP"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(spec))
    out = tmp_path / "logs.parquet"
    result = CliRunner().invoke(app, ["data", "from-telemetry", str(SAMPLE), "--spec", str(bad), "--out", str(out)])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "'SIS-101.TRP' (terminal) is not in the export; closest names in it: SIS-101.TRIP" in result.stderr
    assert not out.exists()
