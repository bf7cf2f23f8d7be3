"""load_dataset / save_dataset / convert_dataset: dispatch, the clean-up rules, and every bad-input message."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from data_factories import SAMPLE, assert_same_transitions, make_data
from dime_offline.data import load_dataset, save_dataset
from dime_offline.data.load import (
    ConvertConfig,
    DataNoteWarning,
    convert_dataset,
    detect_format,
    load_dataset_with_report,
)
from dime_offline.data.parquet import write_parquet
from dime_offline.data.schema import DatasetMetadata, empty_like_schema
from dime_offline.errors import (
    BoundsError,
    ConsistencyError,
    DataError,
    DatasetNotFoundError,
    NonFiniteError,
    SchemaError,
)


def test_shipped_sample_loads_and_validates() -> None:
    data = load_dataset(SAMPLE)
    assert (len(data), data.obs_dim, data.action_dim) == (2000, 3, 1)
    assert data.truncated.sum() == 10 and not data.terminated.any()
    assert data.metadata.env_id == "Pendulum-v1" and data.metadata.obs_names == ["cos_theta", "sin_theta", "theta_dot"]


def test_every_source_kind_is_dispatched(tmp_path: Path) -> None:
    data = make_data([3, 2])
    write_parquet(data, tmp_path / "a.parquet")
    save_dataset(data, tmp_path / "a.h5")
    save_dataset(data, "local/a-v0")
    (tmp_path / "noext").write_bytes((tmp_path / "a.parquet").read_bytes())
    arrays = {k: getattr(data, k) for k in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "episode_id")}
    cases = [
        (tmp_path / "a.parquet", "parquet", True), (str(tmp_path / "a.h5"), "hdf5", False),
        ("local/a-v0", "minari", False), (tmp_path / "noext", "parquet", True), (data.to_wide(), "pandas", True),
        (arrays, "arrays", True),
    ]
    for source, fmt, same_ids in cases:
        assert detect_format(source) == fmt
        assert_same_transitions(data, load_dataset(source), same_ids=same_ids)


def test_unknown_format_and_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SchemaError, match=r"notes\.txt: cannot tell the format"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(DatasetNotFoundError, match=r"gone\.parquet: no such file"):
        load_dataset(str(tmp_path / "gone.parquet"))
    with pytest.raises(DatasetNotFoundError, match=r"logs: no such file or directory \(a Minari dataset id needs a version"):
        load_dataset("logs")
    with pytest.raises(DataError, match="Minari dataset id 'mujoco/hopper/expert' has no version suffix"):
        load_dataset("mujoco/hopper/expert")
    with pytest.raises(SchemaError, match="cannot load a list"):
        load_dataset([1, 2])  # type: ignore[arg-type]


def test_empty_dataset_is_an_error(tmp_path: Path) -> None:
    path = write_parquet(empty_like_schema(3, 1), tmp_path / "empty.parquet")
    with pytest.raises(DataError, match=r"empty\.parquet: dataset is empty \(0 transitions\)"):
        load_dataset(path)


def test_nonfinite_error_counts_and_locates() -> None:
    data = make_data([4, 4, 4], metadata=DatasetMetadata(obs_names=["temp", "level", "flow"]))
    data.obs[5, 1] = np.nan
    data.next_obs[4, 1] = np.nan  # the same gap seen from the previous transition
    data.obs[9, 2] = np.inf
    data.reward[10] = np.nan
    with pytest.raises(NonFiniteError) as info:
        load_dataset(data)
    msg = str(info.value)
    assert msg.startswith("TransitionData, column 'obs', row 5: 4 non-finite value(s) in 4 row(s), 2 episode(s)")
    assert "obs 2 value(s) in 2 row(s) [level: 1, flow: 1], first at row 5 (episode 1, step 1)" in msg
    assert "reward 1 value(s) in 1 row(s) [reward: 1], first at row 10 (episode 2, step 2)" in msg
    assert "next_obs 1 value(s) in 1 row(s) [level: 1], first at row 4" in msg
    assert "nonfinite='drop'" in msg


def test_nonfinite_drop_cuts_episodes_before_the_first_bad_transition() -> None:
    data = make_data([4, 4, 4], ends=["terminated", "terminated", "truncated"])
    data.next_obs[5, 0] = np.nan  # episode 1, step 1: keep step 0, cut the rest
    data.obs[6, 0] = np.nan
    data.action[8, 1] = -np.inf  # episode 2, step 0: nothing left, episode removed
    clean, report = load_dataset_with_report(data, nonfinite="drop")
    assert clean.episode_id.tolist() == [0, 0, 0, 0, 1]
    assert clean.step.tolist() == [0, 1, 2, 3, 0]
    assert clean.terminated.tolist() == [False, False, False, True, False]  # episode 0 untouched
    assert clean.truncated.tolist() == [False, False, False, False, True]  # cut episode ends truncated
    np.testing.assert_array_equal(clean.next_obs[4], data.next_obs[4])
    assert report.dropped_transitions == 7
    assert "dropped 7 transition(s) (3 non-finite, the rest after them in the same episode): 1 episode(s) cut" \
        " short and marked truncated, 1 removed" in report.notes[0]
    assert report.nonfinite["total"] == {"values": 3, "rows": 3, "episodes": 2}


def test_nonfinite_drop_of_everything_is_an_error() -> None:
    data = make_data([2])
    data.reward[0] = np.nan
    with pytest.raises(NonFiniteError, match="every transition was dropped"):
        load_dataset(data, nonfinite="drop")


def test_unflagged_episode_end_becomes_truncated_with_a_warning() -> None:
    data = make_data([2, 3])
    data.terminated[1] = False
    with pytest.warns(DataNoteWarning, match="1 episode\\(s\\) ended with neither terminated nor truncated"):
        clean = load_dataset(data)
    assert clean.truncated.tolist() == [False, True, False, False, True]


def test_actions_outside_bounds_name_the_row() -> None:
    data = make_data([3, 3])
    data.action[4, 0] = 1.5
    with pytest.raises(BoundsError, match=r"column 'action', row 4: 1 row\(s\) have actions outside the declared bounds"):
        load_dataset(data)


def test_discontinuous_next_obs_is_reported_not_fixed() -> None:
    data = make_data([4, 4])
    data.next_obs[5] += 0.5
    with pytest.raises(ConsistencyError, match=r"column 'next_obs', row 5: 1 transition\(s\) in 1 episode\(s\)"):
        load_dataset(data)
    loaded, report = load_dataset_with_report(data, check_continuity=False)
    assert any("next_obs different from the next row's obs; first at row 5" in n for n in report.notes)
    np.testing.assert_array_equal(loaded.next_obs[5], data.next_obs[5])  # kept as given


def test_zero_step_segments_are_reported_in_the_load_report(tmp_path: Path) -> None:
    import h5py

    with h5py.File(tmp_path / "seg.hdf5", "w") as h5:
        h5["observations"] = np.arange(5, dtype=np.float32)[:, None]
        h5["actions"] = np.zeros((5, 1), np.float32)
        h5["rewards"] = np.zeros(5, np.float32)
        h5["terminals"] = np.zeros(5, bool)
        h5["timeouts"] = np.array([0, 1, 1, 0, 0], bool)
    data, report = load_dataset_with_report(tmp_path / "seg.hdf5")
    assert len(data) == 2  # rows 0 and 3 survive; row 2 alone was a zero-step episode
    assert any("skipped 1 zero-step episode(s)" in n for n in report.notes)


def test_unsorted_rows_are_rejected_with_the_row() -> None:
    data = make_data([3, 3])
    order = np.array([0, 1, 2, 4, 3, 5])
    with pytest.raises(SchemaError, match="column 'step', row 4: rows must be sorted"):
        load_dataset(data.select(order))


def test_save_dataset_picks_the_format_from_the_target(tmp_path: Path) -> None:
    data = make_data([2])
    assert save_dataset(data, tmp_path / "x.parquet")[0].is_file()
    assert save_dataset(data, tmp_path / "x.hdf5")[0].is_file()
    assert (save_dataset(data, tmp_path / "m", format="minari")[0] / "data" / "metadata.json").is_file()
    with pytest.raises(SchemaError, match=r"out\.csv: cannot tell the output format"):
        save_dataset(data, tmp_path / "out.csv")
    with pytest.raises(SchemaError, match="unknown output format 'csv'"):
        save_dataset(data, tmp_path / "out", format="csv")  # type: ignore[arg-type]


def test_convert_round_trip_through_every_format(tmp_path: Path) -> None:
    data = load_dataset(SAMPLE)
    convert_dataset(ConvertConfig(str(SAMPLE), str(tmp_path / "s.hdf5")))
    convert_dataset(ConvertConfig(str(tmp_path / "s.hdf5"), "dime/sample/pendulum-v0"))
    summary = convert_dataset(ConvertConfig("dime/sample/pendulum-v0", str(tmp_path / "back.parquet")))
    assert summary["transitions"] == 2000 and summary["episodes"] == 10
    back = load_dataset(tmp_path / "back.parquet")
    assert_same_transitions(data, back)
    assert dataclasses.replace(back.metadata, source=None) == dataclasses.replace(data.metadata, source=None)


def test_failed_convert_leaves_no_output(tmp_path: Path) -> None:
    data = make_data([3, 3])
    data.obs[2, 0] = data.next_obs[1, 0] = np.nan  # one missing reading seen by two transitions
    write_parquet(data, tmp_path / "nan.parquet")
    for target in ("out.parquet", "out.hdf5"):
        with pytest.raises(NonFiniteError):
            convert_dataset(ConvertConfig(str(tmp_path / "nan.parquet"), str(tmp_path / target)))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nan.parquet"]
    summary = convert_dataset(ConvertConfig(str(tmp_path / "nan.parquet"), str(tmp_path / "out.parquet"), nonfinite="drop"))
    assert summary["dropped_transitions"] == 2 and summary["transitions"] == 4


def test_writer_failure_midway_leaves_no_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import h5py

    write_parquet(make_data([3]), tmp_path / "ok.parquet")
    real = h5py.File.create_dataset

    def fail_on_timeouts(self: h5py.File, name: str, **kwargs: object) -> object:
        if name == "timeouts":
            raise OSError("disk full")
        return real(self, name, **kwargs)

    monkeypatch.setattr(h5py.File, "create_dataset", fail_on_timeouts)
    with pytest.raises(OSError, match="disk full"):
        convert_dataset(ConvertConfig(str(tmp_path / "ok.parquet"), str(tmp_path / "out.hdf5")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.parquet"]
