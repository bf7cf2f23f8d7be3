"""Sources: long/wide, CSV/Parquet, files/directories/DataFrames, column detection, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from telemetry_frames import T0, base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.errors import DataError, DatasetNotFoundError, SchemaError


def _long() -> pd.DataFrame:
    rows = [(t, "PV", float(t)) for t in range(0, 201, 2)] + [(t + 1, "SP", float(t % 7)) for t in range(0, 200, 10)]
    frame = long_frame(rows)
    frame["units"] = np.where(frame.tag == "PV", "degC", "%")
    return frame


def _iso(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(timestamp=frame.timestamp.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))


def test_csv_parquet_dataframe_table_and_gzip_agree(tmp_path: Path) -> None:
    frame = _long()
    _iso(frame).to_csv(tmp_path / "a.csv", index=False)
    _iso(frame).to_csv(tmp_path / "a.csv.gz", index=False)
    frame.to_parquet(tmp_path / "a.parquet")
    reference, report = telemetry_to_transitions(frame, base_spec())
    for source in (tmp_path / "a.csv", tmp_path / "a.csv.gz", tmp_path / "a.parquet", pa.Table.from_pandas(frame)):
        data, _ = telemetry_to_transitions(source, base_spec())
        np.testing.assert_array_equal(data.obs, reference.obs)
        np.testing.assert_array_equal(data.action, reference.action)
    assert data.metadata.obs_units == ["degC"] and data.metadata.action_units == ["%"]
    assert report.rows_read == len(frame)


def test_directory_of_daily_files(tmp_path: Path) -> None:
    frame = _long()
    for i, part in enumerate(np.array_split(np.arange(len(frame)), 3)):
        _iso(frame.iloc[part]).to_csv(tmp_path / f"day-{i}.csv", index=False)
    (tmp_path / "notes.md").write_text("ignored")
    data, report = telemetry_to_transitions(tmp_path, base_spec())
    reference, _ = telemetry_to_transitions(frame, base_spec())
    assert len(report.files) == 3
    np.testing.assert_array_equal(data.obs, reference.obs)


def test_wide_format_with_quality_columns(tmp_path: Path) -> None:
    times = [T0 + pd.Timedelta(seconds=s) for s in range(0, 101, 5)]
    wide = pd.DataFrame({
        "Time": times,
        "PV": [float(i) if i != 6 else "Bad Input" for i in range(len(times))],
        "PV.quality": ["Good"] * len(times),
        "SP": [50.0 if i % 2 == 0 else None for i in range(len(times))],  # blank: no new sample
        "OTHER": 1.0,
    })
    wide.loc[3, "PV.quality"] = "Bad"
    wide.assign(Time=wide.Time.dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(tmp_path / "wide.csv", index=False)
    data, report = telemetry_to_transitions(tmp_path / "wide.csv", base_spec())
    pv = next(t for t in report.tags if t.tag == "PV")
    assert pv.samples == len(times) and pv.bad == 2 and pv.text_states == {"Bad Input": 1}
    sp = next(t for t in report.tags if t.tag == "SP")
    assert sp.samples == 11
    assert (data.action == 50.0).all()
    forced, _ = telemetry_to_transitions(tmp_path / "wide.csv", base_spec(reader={"format": "wide"}))
    np.testing.assert_array_equal(forced.obs, data.obs)


def test_wide_format_missing_tag_column(tmp_path: Path) -> None:
    pd.DataFrame({"timestamp": ["2024-01-01T00:00:00Z"], "PV": [1.0]}).to_csv(tmp_path / "w.csv", index=False)
    with pytest.raises(SchemaError, match="no column for tag 'SP'"):
        telemetry_to_transitions(tmp_path / "w.csv", base_spec())


def test_influx_and_pi_style_column_names_are_detected() -> None:
    frame = _long().rename(columns={"timestamp": "_time", "tag": "_field", "value": "_value", "units": "UnitsAbbreviation"})
    data, _ = telemetry_to_transitions(frame, base_spec())
    assert data.metadata.obs_units == ["degC"]
    named = _long().rename(columns={"timestamp": "when", "tag": "point_name", "value": "reading"})
    with pytest.raises(SchemaError, match="no timestamp column found"):
        telemetry_to_transitions(named, base_spec())
    columns = {"timestamp": "when", "tag": "point_name", "value": "reading"}
    data2, _ = telemetry_to_transitions(named, base_spec(columns=columns))
    np.testing.assert_array_equal(data2.obs, data.obs)
    with pytest.raises(SchemaError, match="column 'stamp' \\(columns.timestamp\\) not found"):
        telemetry_to_transitions(named, base_spec(columns={"timestamp": "stamp"}))


def test_a_spec_tag_absent_from_the_source_is_named() -> None:
    with pytest.raises(DataError) as err:
        telemetry_to_transitions(_long(), base_spec(observations=[{"tag": "TI-999.PV"}], reward={"expression": "-SP"}))
    line = err.value.one_line()
    assert "tag 'TI-999.PV' (observation) is not in the export" in line and "PV, SP" in line


@pytest.mark.parametrize("section", ["terminals", "batch_tag", "mode_tag"])
def test_a_misspelled_episode_tag_is_an_error_naming_the_closest_tags(section: str) -> None:
    frame = long_frame([(t, "PV", float(t)) for t in range(0, 60, 2)] + [(t + 1, "SP", 1.0) for t in range(0, 60, 10)]
                       + [(0, "SIS-101.TRIP", 0.0), (0, "BATCH_ID", "B1"), (0, "TIC-101.MODE", "AUTO")])
    wrong = {"terminals": {"terminals": [{"tag": "SIS-101.TRIPP", "above": 0.5}]},
             "batch_tag": {"episodes": {"batch_tag": "BATCHID"}},
             "mode_tag": {"episodes": {"mode_tag": "TIC101.MODE"}}}[section]
    with pytest.raises(DataError) as err:
        telemetry_to_transitions(frame, base_spec(**wrong))
    line = err.value.one_line()
    expected = {"terminals": ("SIS-101.TRIPP", "terminal", "SIS-101.TRIP"),
                "batch_tag": ("BATCHID", "batch", "BATCH_ID"),
                "mode_tag": ("TIC101.MODE", "mode", "TIC-101.MODE")}[section]
    assert f"tag '{expected[0]}' ({expected[1]}) is not in the export; closest names in it: {expected[2]}" in line


def test_a_missing_wide_column_names_the_closest_columns() -> None:
    wide = pd.DataFrame({"timestamp": [T0, T0 + pd.Timedelta(seconds=10)], "PV1": [1.0, 2.0], "SP": [0.0, 0.0]})
    with pytest.raises(SchemaError, match="no column for tag 'PV'.*closest columns: PV1"):
        telemetry_to_transitions(wide, base_spec())


def test_missing_sources_and_odd_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="no such file"):
        telemetry_to_transitions(tmp_path / "nope.csv", base_spec())
    with pytest.raises(DatasetNotFoundError, match="no CSV or Parquet files"):
        telemetry_to_transitions(tmp_path, base_spec())
    (tmp_path / "x.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        telemetry_to_transitions(tmp_path / "x.xlsx", base_spec())
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        telemetry_to_transitions(tmp_path / "empty.csv", base_spec())
    (tmp_path / "broken.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        telemetry_to_transitions(tmp_path / "broken.parquet", base_spec())


def test_unparseable_timestamp_names_row(tmp_path: Path) -> None:
    frame = _iso(_long())
    frame.loc[17, "timestamp"] = "yesterday"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError) as err:
        telemetry_to_transitions(tmp_path / "bad.csv", base_spec())
    assert err.value.row == 18 and "'yesterday'" in err.value.one_line() and "column 'timestamp'" in err.value.one_line()


def test_inferred_action_bounds_are_reported_and_declared_bounds_clip() -> None:
    spec = base_spec(actions=[{"tag": "SP", "alignment": "stepped"}])
    data, report = telemetry_to_transitions(_long(), spec)
    assert data.metadata.action_low == [0.0] and data.metadata.action_high == [6.0]
    assert any("inferred" in w for w in report.warnings)
    tight = base_spec(actions=[{"tag": "SP", "alignment": "stepped", "low": 1.0, "high": 5.0}])
    data, report = telemetry_to_transitions(_long(), tight)
    assert report.clipped_actions > 0 and data.action.min() == 1.0 and data.action.max() == 5.0


def test_unit_disagreement_is_a_warning() -> None:
    spec = base_spec(observations=[{"tag": "PV", "alignment": "stepped", "units": "K"}])
    data, report = telemetry_to_transitions(_long(), spec)
    assert data.metadata.obs_units == ["K"]
    assert any("spec says units 'K', the source says 'degC'" in w for w in report.warnings)


def test_csv_blocks_never_split_a_line_or_a_quoted_field(tmp_path: Path) -> None:
    frame = _iso(_long())
    frame["value"] = frame["value"].astype(object)
    frame.loc[frame.index[::17], "value"] = 'Bad, "quoted"\nInput'  # commas, quotes and a newline
    frame = pd.concat([frame] * 3, ignore_index=True)  # > 4 KB blocks several times over
    crlf = tmp_path / "crlf.csv"
    frame.to_csv(crlf, index=False, lineterminator="\r\n")
    no_newline = tmp_path / "last.csv"
    no_newline.write_bytes(crlf.read_bytes().rstrip(b"\r\n"))
    whole, _report = telemetry_to_transitions(crlf, base_spec())
    for path in (crlf, no_newline):
        small, small_report = telemetry_to_transitions(path, base_spec(reader={"chunk_rows": 1}))  # 4 KB blocks
        assert small_report.rows_read == len(frame)
        np.testing.assert_array_equal(small.obs, whole.obs)
        pv = next(t for t in small_report.tags if t.tag == "PV")
        odd = (frame["value"] == 'Bad, "quoted"\nInput') & (frame["tag"] == "PV")
        assert pv.text_states == {'Bad, "quoted"\nInput': int(odd.sum())}


def test_header_only_csv_has_no_samples(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("timestamp,tag,value\n")
    with pytest.raises(DataError, match="no samples of the spec's tags"):
        telemetry_to_transitions(tmp_path / "h.csv", base_spec())
