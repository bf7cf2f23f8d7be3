"""The twin's historian export is built and written without pandas, in the files pandas wrote before:
the same CSV bytes, the same truth CSV, the same transitions from CSV and Parquet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dime_offline.converters import telemetry_to_transitions
from dime_offline.envs.cstr import CSTRParams
from dime_offline.envs.telemetry import (
    ANALOG_TAGS,
    OUTPUT_TAG,
    SETPOINT_TAG,
    TelemetryConfig,
    TelemetryResult,
    cstr_scan_rate_spec,
    cstr_telemetry_spec,
    generate_telemetry,
    write_telemetry,
    write_truth,
)


@pytest.fixture(scope="module", params=["exception", "scan-rate"])
def result(request: pytest.FixtureRequest) -> TelemetryResult:
    if request.param == "scan-rate":  # bad and questionable outputs, clock skew, a plant-wide outage
        return generate_telemetry(TelemetryConfig.scan_rate(hours=2, seed=1))
    return generate_telemetry(TelemetryConfig(hours=3, seed=3))  # digital states, outages, a trip


def _pandas_csv(long: pd.DataFrame) -> bytes:
    """How the export was written with pandas: milliseconds truncated, 'Z', no index."""
    frame = long.copy()
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return frame.to_csv(index=False).encode()


def test_the_export_csv_has_the_bytes_pandas_wrote(result: TelemetryResult, tmp_path: Path) -> None:
    long = result.long
    assert str(long["timestamp"].dtype) == "datetime64[ns, UTC]" and long["quality"].dtype == np.int64
    assert (long["timestamp"].dt.microsecond % 1000 == 0).all()  # kept to the millisecond
    with_units = {t.tag for t in ANALOG_TAGS} | {SETPOINT_TAG, OUTPUT_TAG}
    assert (long["units"].notna() == long["tag"].isin(with_units)).all()
    assert (long["quality"] != 0).any()  # bad and uncertain samples are in it
    expected = _pandas_csv(long)
    for source in (result.export, long):
        path = write_telemetry(source, tmp_path / "historian.csv")
        assert path.read_bytes() == expected


def test_the_truth_csv_has_the_bytes_pandas_wrote(result: TelemetryResult, tmp_path: Path) -> None:
    path = write_truth(result, tmp_path / "truth.csv")
    assert path.read_bytes() == result.truth.to_csv(index=False).encode()
    assert len(result.truth) == len(result.steps) and result.truth["timestamp"].is_monotonic_increasing


@pytest.mark.parametrize(("dt_minutes", "second_step"), [
    (0.0125, "2024-05-01 00:00:00.750+00:00"),  # milliseconds
    (1 / 7, "2024-05-01 00:00:08.571428571+00:00"),  # nanoseconds, as pandas rounds 60/7 s
])
def test_truth_times_keep_the_digits_pandas_gives_them(dt_minutes: float, second_step: str, tmp_path: Path) -> None:
    result = generate_telemetry(TelemetryConfig(hours=0.02, seed=1, plant=CSTRParams(dt_minutes=dt_minutes)))
    text = write_truth(result, tmp_path / "truth.csv").read_text()
    assert text == result.truth.to_csv(index=False)
    assert text.splitlines()[2].split(",")[0] == second_step


def test_csv_and_parquet_exports_convert_to_the_same_transitions(result: TelemetryResult, tmp_path: Path) -> None:
    spec = cstr_scan_rate_spec(result.skews) if result.skews else cstr_telemetry_spec()
    from_csv, _ = telemetry_to_transitions(write_telemetry(result.export, tmp_path / "h.csv"), spec)
    from_parquet, _ = telemetry_to_transitions(write_telemetry(result.export, tmp_path / "h.parquet"), spec)
    back = pd.read_parquet(tmp_path / "h.parquet")
    pd.testing.assert_frame_equal(back, result.long)
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "timestamp", "obs_valid",
                 "episode_id", "step"):
        np.testing.assert_array_equal(getattr(from_csv, name), getattr(from_parquet, name), err_msg=name)
    assert len(from_csv) > 100


def test_outages_are_utc_times_of_the_export() -> None:
    result = generate_telemetry(TelemetryConfig.scan_rate(hours=2, seed=1))
    assert result.outages
    stamps, margin = result.long["timestamp"], pd.Timedelta(milliseconds=1)  # stamps are rounded to ms
    for begin, end in result.outages:
        assert begin.utcoffset() == end.utcoffset() == pd.Timedelta(0)
        assert 30 <= (end - begin).total_seconds() <= 300
        inside = result.long[(stamps > begin + margin) & (stamps < end - margin)]
        assert set(inside["tag"]) <= {"BATCH_ID", "SIS-101.TRIP", "TIC-101.MODE"}
        assert (stamps < begin).any() and (stamps > end).any()
