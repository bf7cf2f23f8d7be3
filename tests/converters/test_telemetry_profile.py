"""`data profile`: per-tag clocks, quality and ranges of an export, and a scaffolded spec that loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from dime_offline_cli.main import app
from telemetry_frames import T0, long_frame
from typer.testing import CliRunner

from dime_offline.converters import load_spec, telemetry_to_transitions
from dime_offline.converters.profile import ProfileConfig, profile_export

ROOT = Path(__file__).resolve().parents[2]
BAD = 0x80000000


def _export(tmp_path: Path) -> Path:
    """20 min at a 2 s scan: PV stamped 0.6 s late, OP with 1 in 50 samples bad, SP logged once a
    minute, a 100 s outage of PV, batch ids and a trip flag on change."""
    rng = np.random.default_rng(0)
    rows: list[tuple] = []
    for t in range(0, 1200, 2):
        if not 400 <= t < 500:
            rows.append((t + 0.6, "FIC-7.PV", 20.0 + rng.normal(0, 0.3), 0))
        rows.append((t + 0.01, "FIC-7.OP", np.nan if t % 100 == 50 else float(40 + t // 300), BAD if t % 100 == 50 else 0))
    rows += [(t + 0.02, "FIC-7.SP", 20.0, 0) for t in range(0, 1200, 60)]
    rows += [(0.5, "BATCH_ID", "B1", 0), (600.5, "BATCH_ID", "B2", 0), (0.0, "SIS-7.TRIP", 0.0, 0), (900.0, "SIS-7.TRIP", 1.0, 0)]
    path = tmp_path / "export.csv"
    frame = long_frame(rows)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    frame.to_csv(path, index=False)
    return path


def test_the_profile_finds_each_tags_clock_quality_and_shape(tmp_path: Path) -> None:
    profile = profile_export(ProfileConfig(source=str(_export(tmp_path))))
    tags = {t.tag: t for t in profile.tags}
    assert set(tags) == {"FIC-7.PV", "FIC-7.OP", "FIC-7.SP", "BATCH_ID", "SIS-7.TRIP"}
    assert profile.scan_period_s == pytest.approx(2.0, rel=0.02)
    pv, op, sp = tags["FIC-7.PV"], tags["FIC-7.OP"], tags["FIC-7.SP"]
    assert pv.median_interval_s == pytest.approx(2.0, rel=0.02) and sp.median_interval_s == pytest.approx(60, rel=0.02)
    assert pv.phase_s == pytest.approx(0.6, abs=0.02) and op.phase_s == pytest.approx(0.01, abs=0.02)
    assert sp.phase_s == pytest.approx(0.02, abs=0.02)  # once a minute, on the scan clock
    assert (pv.signal, op.signal, sp.signal) == ("analog", "stepped", "stepped")
    assert pv.gaps == 1 and pv.longest_gap_s == pytest.approx(102, abs=0.01)
    assert op.bad == 12 and op.samples == 600 and pv.bad == 0
    assert (op.min, op.max) == (40.0, 43.0)
    assert tags["BATCH_ID"].kind == "text" and tags["BATCH_ID"].bad == 0
    assert tags["BATCH_ID"].text_states == {"B1": 1, "B2": 1}
    assert tags["SIS-7.TRIP"].kind == "numeric" and tags["SIS-7.TRIP"].distinct == 2
    text = profile.format()
    assert "FIC-7.PV" in text and "scan cycle  2" in text


def test_the_scaffolded_spec_loads_and_converts_the_export(tmp_path: Path) -> None:
    path = _export(tmp_path)
    spec = profile_export(ProfileConfig(source=str(path))).scaffold_spec()
    assert spec["control_period"] == "2s" and spec["hold_bad"] == "5s"
    assert [a["tag"] for a in spec["actions"]] == ["FIC-7.OP"]
    assert spec["actions"][0]["low"] == 40.0 and spec["actions"][0]["high"] == 43.0
    pv = next(o for o in spec["observations"] if o["tag"] == "FIC-7.PV")
    assert pv["offset"] == "-0.6s" and pv["alignment"] == "mean"
    sp = next(o for o in spec["extra_state"] if o["tag"] == "FIC-7.SP")
    assert sp["max_gap"] == "100s" and sp["alignment"] == "stepped"
    assert spec["episodes"] == {"batch_tag": "BATCH_ID"}
    assert spec["terminals"] == [{"tag": "SIS-7.TRIP", "above": 0.5}]
    out = tmp_path / "spec.yaml"
    out.write_text(yaml.safe_dump(spec, sort_keys=False))
    _, report = telemetry_to_transitions(path, load_spec(out))
    report.check_accounting()
    # Isolated bad outputs are bridged; the PV outage and the batch change and trip end episodes.
    assert report.end_reasons == {"batch_end": 1, "gap": 1, "terminal:SIS-7.TRIP": 1}
    assert not [w for w in report.warnings if "max_gap" in w]


def test_a_wide_export_is_profiled_by_column(tmp_path: Path) -> None:
    times = [T0 + pd.Timedelta(seconds=s) for s in range(0, 100, 5)]
    frame = pd.DataFrame({"time": times, "A": np.arange(20.0), "A.quality": [0] * 19 + [BAD], "B": [1.0] * 20})
    path = tmp_path / "wide.parquet"
    frame.to_parquet(path)
    profile = profile_export(ProfileConfig(source=str(path)))
    tags = {t.tag: t for t in profile.tags}
    assert set(tags) == {"A", "B"} and tags["A"].bad == 1 and tags["B"].signal == "stepped"
    assert tags["A"].median_interval_s == pytest.approx(5, rel=0.02)


def test_cli_profile_json_and_spec_out_without_torch(tmp_path: Path) -> None:
    path = _export(tmp_path)
    spec_out = tmp_path / "scaffold.yaml"
    code = (
        "import sys; from typer.testing import CliRunner; from dime_offline_cli.main import app;"
        f"r = CliRunner().invoke(app, ['data', 'profile', {str(path)!r}, '--json', '--spec-out', {str(spec_out)!r}]);"
        "assert r.exit_code == 0, r.output; print(r.stdout);"
        "assert 'torch' not in sys.modules, 'data profile imported torch'"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["spec_out"] == str(spec_out) and len(summary["tags"]) == 5
    assert spec_out.read_text().startswith("# Scaffolded by `dime-offline data profile")
    assert load_spec(spec_out).control_period == 2.0

    missing = CliRunner().invoke(app, ["data", "profile", str(tmp_path / "no.csv")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
