"""Time zones and time units (the pandas 3 / pyarrow traps of data-formats.md section 3.3)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from telemetry_frames import T0, T0_US, base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.errors import ConfigError, DataError


def _frame() -> pd.DataFrame:
    rows = [(t, "PV", float(t)) for t in range(0, 121, 2)] + [(t + 1, "SP", 50.0) for t in range(0, 120, 10)]
    return long_frame(rows)


def _write_csv(frame: pd.DataFrame, path, fmt) -> None:
    frame.assign(timestamp=[fmt(ts) for ts in frame.timestamp]).to_csv(path, index=False)


def test_offsets_naive_with_zone_and_utc_strings_agree(tmp_path) -> None:
    frame = _frame()
    utc = tmp_path / "utc.csv"
    _write_csv(frame, utc, lambda ts: ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    berlin_offset = tmp_path / "offset.csv"
    _write_csv(frame, berlin_offset, lambda ts: ts.tz_convert("Europe/Berlin").isoformat())
    naive_local = tmp_path / "naive.csv"
    _write_csv(frame, naive_local, lambda ts: ts.tz_convert("Europe/Berlin").strftime("%Y-%m-%d %H:%M:%S.%f"))
    nanos = tmp_path / "nanos.csv"
    _write_csv(frame, nanos, lambda ts: ts.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z")  # ns digits
    reference, _ = telemetry_to_transitions(utc, base_spec())
    assert reference.timestamp[0] == T0_US
    for path, extra in ((berlin_offset, {}), (naive_local, {"timezone": "Europe/Berlin"}), (nanos, {})):
        data, _ = telemetry_to_transitions(path, base_spec(**extra))
        np.testing.assert_array_equal(data.timestamp, reference.timestamp)
        np.testing.assert_array_equal(data.obs, reference.obs)


def test_naive_timestamps_without_a_zone_are_refused(tmp_path) -> None:
    path = tmp_path / "naive.csv"
    _write_csv(_frame(), path, lambda ts: ts.strftime("%Y-%m-%d %H:%M:%S"))
    with pytest.raises(DataError, match="no time zone; set 'timezone'"):
        telemetry_to_transitions(path, base_spec())


def test_mixed_offset_and_naive_strings_name_the_row(tmp_path) -> None:
    path = tmp_path / "mixed.csv"
    frame = _frame()
    stamps = [ts.strftime("%Y-%m-%d %H:%M:%S") for ts in frame.timestamp]
    stamps[7] = frame.timestamp[7].strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.assign(timestamp=stamps).to_csv(path, index=False)
    with pytest.raises(DataError) as err:
        telemetry_to_transitions(path, base_spec(timezone="UTC"))
    assert err.value.row == 8 and "mixes timestamps" in err.value.one_line()


def test_dst_fall_back_hour_is_ambiguous_unless_resolved(tmp_path) -> None:
    start = pd.Timestamp("2024-10-27T00:30:00Z")  # 02:30 local (CEST), the repeated hour follows
    rows = []
    for i in range(0, 3 * 3600, 60):
        ts = start + pd.Timedelta(seconds=i)
        rows += [(ts, "PV", 1.0), (ts + pd.Timedelta(seconds=1), "SP", 2.0)]
    frame = pd.DataFrame(rows, columns=["timestamp", "tag", "value"])
    path = tmp_path / "local.csv"
    frame.assign(timestamp=frame.timestamp.dt.tz_convert("Europe/Berlin").dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(
        path, index=False)
    spec = base_spec(timezone="Europe/Berlin", control_period="1min")
    with pytest.raises(DataError, match="ambiguous"):
        telemetry_to_transitions(path, spec)
    _, report = telemetry_to_transitions(path, {**spec, "ambiguous": "earliest"})
    # 'earliest' reads the repeated 02:xx hour as summer time: it lands on 00:xx UTC.
    assert report.time_start == "2024-10-27T00:00:00.000000Z"


@pytest.mark.parametrize("unit", ["ns", "us", "ms", "s"])
def test_datetime_resolutions_in_dataframes_agree(unit: str) -> None:
    frame = _frame()
    reference, _ = telemetry_to_transitions(frame, base_spec())
    other = frame.assign(timestamp=frame.timestamp.dt.as_unit(unit))
    data, _ = telemetry_to_transitions(other, base_spec())
    np.testing.assert_array_equal(data.timestamp, reference.timestamp)
    np.testing.assert_array_equal(data.obs, reference.obs)


def test_directory_mixing_ns_and_us_parquet_files(tmp_path) -> None:
    frame = _frame()
    first, second = frame.iloc[:40], frame.iloc[40:]
    first.assign(timestamp=first.timestamp.dt.as_unit("ns")).to_parquet(tmp_path / "part-1.parquet")
    second.assign(timestamp=second.timestamp.dt.as_unit("us")).to_parquet(tmp_path / "part-2.parquet")
    data, report = telemetry_to_transitions(tmp_path, base_spec())
    reference, _ = telemetry_to_transitions(frame, base_spec())
    assert len(report.files) == 2 and not report.in_memory
    np.testing.assert_array_equal(data.obs, reference.obs)


@pytest.mark.parametrize("unit, scale", [("s", 1.0), ("ms", 1e3), ("us", 1e6), ("ns", 1e9)])
def test_numeric_epoch_timestamps_need_and_use_a_unit(unit: str, scale: float) -> None:
    frame = _frame()
    seconds = (frame.timestamp - pd.Timestamp(0, tz="UTC")).dt.total_seconds()
    numeric = frame.assign(timestamp=(seconds * scale).astype("int64") if unit != "s" else seconds)
    with pytest.raises(DataError, match="timestamp_unit"):
        telemetry_to_transitions(numeric, base_spec())
    data, _ = telemetry_to_transitions(numeric, base_spec(columns={"timestamp_unit": unit}))
    reference, _ = telemetry_to_transitions(frame, base_spec())
    np.testing.assert_array_equal(data.timestamp, reference.timestamp)


def test_custom_timestamp_format(tmp_path) -> None:
    path = tmp_path / "excel.csv"
    _write_csv(_frame(), path, lambda ts: ts.strftime("%d/%m/%Y %H:%M:%S"))
    data, _ = telemetry_to_transitions(path, base_spec(timezone="UTC", columns={"timestamp_format": "%d/%m/%Y %H:%M:%S"}))
    assert data.timestamp[0] == T0_US
    with pytest.raises(DataError, match="expected ISO 8601"):
        telemetry_to_transitions(path, base_spec(timezone="UTC"))


@pytest.mark.parametrize("alias, hint", [("5T", "'min'"), ("10S", "'s'"), ("1H", "'h'"), ("5m", "'min'")])
def test_removed_pandas_aliases_are_refused_with_the_new_name(alias: str, hint: str) -> None:
    with pytest.raises(ConfigError) as err:
        telemetry_to_transitions(_frame(), base_spec(control_period=alias))
    assert "control_period" in err.value.one_line() and hint in err.value.one_line()


def test_grid_origin_shifts_the_grid() -> None:
    spec = base_spec(grid_origin=(T0 + pd.Timedelta(seconds=5)).isoformat())
    data, _ = telemetry_to_transitions(_frame(), spec)
    assert ((data.timestamp - T0_US) % 10_000_000 == 5_000_000).all()
    assert data.obs[0, 0] == 4.0  # last PV sample at or before 5 s
