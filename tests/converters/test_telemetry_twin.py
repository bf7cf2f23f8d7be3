"""End to end on the CSTR twin: generated historian export -> transitions == simulator truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dime_offline.converters import telemetry_to_transitions
from dime_offline.envs.telemetry import (
    TelemetryConfig,
    cstr_telemetry_spec,
    generate_telemetry,
    write_telemetry,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory):
    result = generate_telemetry(TelemetryConfig(hours=6, seed=3))
    path = tmp_path_factory.mktemp("twin") / "historian.csv"
    write_telemetry(result.long, path)
    data, report = telemetry_to_transitions(path, cstr_telemetry_spec())
    truth = result.truth.set_index("timestamp").reindex(pd.to_datetime(data.timestamp, unit="us", utc=True))
    return result, data, report, truth


def test_converted_states_match_the_simulator_within_sensor_noise(converted) -> None:
    _result, data, _report, truth = converted
    assert truth["reactor_temp"].notna().all()  # every transition starts at a control instant
    valid = data.obs_valid
    # (name, sensor noise sd, historian deadband) of the measured tags; setpoint/previous output are exact.
    for i, (name, noise, deadband) in enumerate([("reactor_temp", 0.05, 0.1), ("concentration_a", 0.002, 0.004),
                                                 ("jacket_temp", 0.05, 0.1), ("feed_temp", 0.05, 0.1)]):
        col = data.metadata.obs_names.index(name)
        err = np.abs(data.obs[valid[:, col], col] - truth[name].to_numpy()[valid[:, col]])
        # Exception reporting holds a value until it moves by the deadband; the feed temperature
        # also moves between scans. Typical error: about one deadband; rare transients: a few.
        assert np.median(err) < deadband + 2 * noise, name
        assert np.percentile(err, 95) < 6 * deadband + 4 * noise, name
    sp = data.metadata.obs_names.index("temp_setpoint")
    np.testing.assert_allclose(data.obs[:, sp], truth["temp_setpoint"], atol=0.051)
    # The output is logged on a 0.005 K exception deviation, with 3 decimals.
    np.testing.assert_allclose(data.action[:, 0], truth["action"], atol=5.6e-3)
    assert np.median(np.abs(data.action[:, 0] - truth["action"])) < 6e-4
    prev = data.metadata.obs_names.index("prev_jacket_sp")
    np.testing.assert_allclose(data.obs[:, prev], truth["prev_jacket_sp"], atol=5.6e-3)
    assert np.corrcoef(data.reward, truth["reward"])[0, 1] > 0.95


def test_batches_trips_and_modes_come_through(converted) -> None:
    result, data, report, truth = converted
    report.check_accounting()
    assert int(data.terminated.sum()) == int(result.truth["terminated"].sum()) >= 1
    assert (truth["terminated"].to_numpy() == data.terminated).all()
    keys = set(data.episode_key.tolist())
    assert keys <= set(result.truth["batch"]) and len(keys) == result.truth["batch"].nunique()
    assert (truth["batch"].to_numpy() == data.episode_key).all()
    assert "mode_change" in report.end_reasons and "tripped" in report.dropped_steps
    tags = {t.tag: t for t in report.tags}
    assert tags["TI-101.PV"].text_states.get("Shutdown") and tags["TI-101.PV"].bad_fraction > 0
    meta = data.metadata
    assert meta.env_id == "dime_offline/CSTR-v0" and meta.dt_seconds == 30.0
    assert meta.action_low == [280.0] and meta.action_high == [310.0]
    assert meta.obs_units == ["K", "mol/L", "K", "K", "K", "K"]
    assert meta.extra["telemetry"]["spec_hash"] in meta.source


def test_generation_is_deterministic_and_the_sample_is_reproducible(tmp_path: Path) -> None:
    path = tmp_path / "sample.csv"
    write_telemetry(generate_telemetry(TelemetryConfig(hours=4, seed=3)).long, path)
    assert path.read_bytes() == (ROOT / "datasets/samples/cstr-historian-sample.csv").read_bytes()


def test_converters_never_import_torch() -> None:
    code = (
        "import sys; import dime_offline.converters, dime_offline.converters.pipeline;"
        "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('torch'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.fixture(scope="module")
def scan_rate(tmp_path_factory: pytest.TempPathFactory):
    """12 h at the 2 s scan rate (the traits of issue 12): 6 batches, a trip, two plant-wide outages."""
    result = generate_telemetry(TelemetryConfig.scan_rate(hours=12, seed=2))
    path = tmp_path_factory.mktemp("scan") / "historian.csv"
    write_telemetry(result.long, path)
    return result, path


def test_scan_rate_export_has_the_traits_it_claims(scan_rate) -> None:
    result, _ = scan_rate
    long, truth = result.long, result.truth
    assert truth["batch"].nunique() == 6 and int(truth["terminated"].sum()) == 1 and len(result.outages) == 2
    assert all(30 <= (b - a).total_seconds() <= 300 for a, b in result.outages)
    op = long[long["tag"] == "TIC-101.OP"]
    bad = op["quality"].to_numpy() != 0
    assert 0.005 < bad.mean() < 0.015 and not (bad[1:] & bad[:-1]).any()  # ~1 %, isolated
    sp_gaps = long.loc[long["tag"] == "TIC-101.SP", "timestamp"].diff().dt.total_seconds().dropna()
    assert sp_gaps.median() == pytest.approx(60.0)
    pv_gaps = long.loc[long["tag"] == "TI-101.PV", "timestamp"].diff().dt.total_seconds().dropna()
    assert pv_gaps.median() == pytest.approx(2.0) and pv_gaps.max() > 600  # changeovers log nothing
    assert len(set(result.skews.values())) == len(result.skews) and max(result.skews.values()) < 1.5


def test_scan_rate_conversion_meets_the_issue_target(scan_rate) -> None:
    from dime_offline.envs.telemetry import cstr_scan_rate_spec

    result, path = scan_rate
    truth = result.truth
    data, report = telemetry_to_transitions(path, cstr_scan_rate_spec(result.skews))
    report.check_accounting()
    batches = truth["batch"].nunique()
    # One episode per batch plus one per outage (every outage is longer than the 5 s hold).
    assert report.episode_count == batches + len(result.outages)
    assert report.end_reasons.get("gap", 0) == len(result.outages)
    assert set(data.episode_key.tolist()) == set(truth["batch"])
    # >= 97 % of the scan steps of batch operation are transitions (15 scans per 30 s control step).
    assert report.transitions >= 0.97 * 15 * len(truth)
    # The trip terminates the right batch.
    assert data.episode_key[data.terminated].tolist() == truth.loc[truth["terminated"], "batch"].tolist()
    # Isolated bad samples were bridged, not split; the report names every tag that cost steps.
    assert report.bridged_values > 100
    tags = {t.tag: t for t in report.tags}
    assert sum(tags[t].splits for t in tags) >= len(result.outages)  # a split names every tag missing there
    data_tags = [t for t, tr in tags.items() if tr.role in ("observation", "extra_state", "action")]
    costly = [t for t in data_tags if tags[t].dropped_steps]
    assert set(costly) == set(data_tags)
    line = next(x for x in report.format().splitlines() if x.startswith("steps lost to missing data"))
    assert all(t in line for t in costly)
    assert not report.warnings
    # Without the bad-sample policy every bad output sample would end an episode.
    spec_off = {**cstr_scan_rate_spec(result.skews), "hold_bad": 0}
    assert telemetry_to_transitions(path, spec_off)[1].episode_count > 100
