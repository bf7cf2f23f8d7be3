"""Canonical Parquet: exact schema, record-batch reading, directories, wide files, corrupt files, atomic writes."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_factories import assert_same_transitions, make_data
from dime_offline.data.parquet import iter_parquet_chunks, read_parquet, read_parquet_metadata, write_parquet
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.errors import DataError, DatasetNotFoundError, SchemaError


def _with_optional(data: TransitionData) -> TransitionData:
    n = len(data)
    return dataclasses.replace(
        data,
        timestamp=1_700_000_000_000_000 + np.arange(n, dtype=np.int64) * 50_000,
        obs_valid=np.arange(n * data.obs_dim).reshape(n, data.obs_dim) % 3 != 0,
        action_valid=np.arange(n * data.action_dim).reshape(n, data.action_dim) % 4 != 1,
        episode_key=np.asarray([f"batch-{e}" for e in data.episode_id], dtype=object),
    )


def test_written_file_has_the_documented_arrow_schema(tmp_path: Path) -> None:
    data = _with_optional(make_data([3, 2], obs_dim=4, action_dim=2))
    path = write_parquet(data, tmp_path / "d.parquet")
    pf = pq.ParquetFile(path)
    schema = pf.schema_arrow
    assert schema.field("episode_id").type == pa.int64()
    assert schema.field("step").type == pa.int32()
    assert schema.field("obs").type == pa.list_(pa.float32(), 4)
    assert schema.field("next_obs").type == pa.list_(pa.float32(), 4)
    assert schema.field("action").type == pa.list_(pa.float32(), 2)
    assert schema.field("reward").type == pa.float32()
    assert schema.field("terminated").type == pa.bool_() and schema.field("truncated").type == pa.bool_()
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("obs_valid").type == pa.list_(pa.bool_(), 4)
    assert schema.field("action_valid").type == pa.list_(pa.bool_(), 2)
    assert schema.field("episode_key").type == pa.dictionary(pa.int32(), pa.string())
    assert DatasetMetadata.from_json(schema.metadata[b"dime"]) == data.metadata
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"


def test_round_trip_keeps_every_column_and_the_metadata(tmp_path: Path) -> None:
    meta = DatasetMetadata(obs_names=["a", "b", "c"], obs_units=["K", "bar", "1"], action_low=[-1.0, -1.0],
                           action_high=[1.0, 1.0], dt_seconds=0.5, env_id="Pendulum-v1", extra={"k": [1, 2]})
    data = _with_optional(make_data([4, 1, 3], metadata=meta))
    back, notes = read_parquet(write_parquet(data, tmp_path / "d.parquet"))
    assert notes == []
    assert_same_transitions(data, back)
    np.testing.assert_array_equal(back.timestamp, data.timestamp)
    np.testing.assert_array_equal(back.obs_valid, data.obs_valid)
    np.testing.assert_array_equal(back.action_valid, data.action_valid)
    assert back.episode_key.tolist() == data.episode_key.tolist()
    assert back.metadata == meta
    assert back.validate() == []


def test_chunks_follow_batch_rows_and_concatenate_to_the_whole(tmp_path: Path) -> None:
    data = make_data([40, 35, 25])
    path = write_parquet(data, tmp_path / "d.parquet", row_group_rows=30)
    chunks = list(iter_parquet_chunks(path, batch_rows=16))
    assert all(len(c) <= 16 for c in chunks) and sum(len(c) for c in chunks) == 100
    assert_same_transitions(data, TransitionData.concatenate(chunks))
    # Fixed-size float32 lists arrive as read-only views of Arrow memory (no copy).
    assert not chunks[0].obs.flags.writeable


def test_row_groups_hold_64k_rows_by_default(tmp_path: Path) -> None:
    data = make_data([70_000], obs_dim=1, action_dim=1)
    pf = pq.ParquetFile(write_parquet(data, tmp_path / "d.parquet"))
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == [65_536, 70_000 - 65_536]


def test_optional_columns_can_be_left_out_when_reading(tmp_path: Path) -> None:
    path = write_parquet(_with_optional(make_data([3])), tmp_path / "d.parquet")
    (chunk,) = iter_parquet_chunks(path, columns=())
    assert chunk.timestamp is None and chunk.obs_valid is None and chunk.action_valid is None
    assert chunk.episode_key is None
    (chunk,) = iter_parquet_chunks(path, columns=["timestamp"])
    assert chunk.timestamp is not None and chunk.episode_key is None
    with pytest.raises(SchemaError, match="only optional columns"):
        iter_parquet_chunks(path, columns=["obs"])


def test_metadata_is_read_without_the_rows(tmp_path: Path) -> None:
    data = make_data([5, 6], obs_dim=7, action_dim=3)
    meta, obs_dim, action_dim, rows = read_parquet_metadata(write_parquet(data, tmp_path / "d.parquet"))
    assert (meta, obs_dim, action_dim, rows) == (data.metadata, 7, 3, 11)


def test_directory_dataset_reads_files_in_sorted_order(tmp_path: Path) -> None:
    data = make_data([5, 5, 5, 5])
    out = write_parquet(data, tmp_path / "dir", rows_per_file=8)
    assert sorted(p.name for p in out.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert [pq.ParquetFile(p).metadata.num_rows for p in sorted(out.iterdir())] == [10, 10]  # never splits an episode
    back, _ = read_parquet(out)
    assert_same_transitions(data, back)
    assert read_parquet_metadata(out)[3] == 20


def test_directory_with_differing_metadata_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir()
    write_parquet(make_data([3]), folder / "a.parquet")
    other = make_data([3], episode_ids=[1])
    write_parquet(dataclasses.replace(other, metadata=DatasetMetadata(env_id="Other-v0")), folder / "b.parquet")
    with pytest.raises(SchemaError, match=r"b\.parquet.*metadata differs from that of a\.parquet"):
        read_parquet(folder)


def test_directory_with_differing_widths_names_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "dir"
    folder.mkdir()
    write_parquet(make_data([3]), folder / "a.parquet")
    write_parquet(make_data([3], obs_dim=5, episode_ids=[1]), folder / "b.parquet")
    with pytest.raises(SchemaError, match=r"b\.parquet.*obs_dim 5 differs from 3"):
        read_parquet_metadata(folder)


def test_empty_directory_and_missing_path_are_not_found(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match="no \\*.parquet files"):
        read_parquet(tmp_path / "empty")
    with pytest.raises(DatasetNotFoundError, match="missing.parquet"):
        read_parquet(tmp_path / "missing.parquet")


@pytest.mark.parametrize("link", ["loop", "dangling"])
def test_directory_with_a_link_that_leads_nowhere_names_the_link(tmp_path: Path, link: str) -> None:
    """Skipping the link would read part of the dataset without a word."""
    folder = tmp_path / "dir"
    folder.mkdir()
    write_parquet(make_data([3]), folder / "a.parquet")
    bad = folder / "b.parquet"
    bad.symlink_to(bad if link == "loop" else tmp_path / "moved.parquet")
    reason = "loops" if link == "loop" else f"is a broken symbolic link (its target {tmp_path / 'moved.parquet'} does not exist)"
    for read in (read_parquet, read_parquet_metadata):
        with pytest.raises(DatasetNotFoundError, match=re.escape(f"{bad}: dataset file") + ".*" + re.escape(reason)):
            read(folder)


def test_wide_parquet_from_pandas_reads_with_names(tmp_path: Path) -> None:
    meta = DatasetMetadata(obs_names=["temp", "level", "flow"], action_names=["valve", "pump"])
    data = dataclasses.replace(make_data([4, 3], metadata=meta), timestamp=np.arange(7, dtype=np.int64) * 1_000_000)
    data.to_wide().to_parquet(tmp_path / "wide.parquet")
    back, notes = read_parquet(tmp_path / "wide.parquet")
    assert notes == []
    assert_same_transitions(data, back)
    assert back.metadata.obs_names == ["temp", "level", "flow"] and back.metadata.action_names == ["valve", "pump"]
    np.testing.assert_array_equal(back.timestamp, data.timestamp)


def test_variable_size_lists_are_accepted_and_ragged_rows_named(tmp_path: Path) -> None:
    data = make_data([3, 2])
    frame = pd.DataFrame({
        "episode_id": data.episode_id, "step": data.step, "obs": list(data.obs.astype(np.float64)),
        "action": list(data.action), "reward": data.reward, "next_obs": list(data.next_obs),
        "terminated": data.terminated, "truncated": data.truncated, "comment": ["x"] * 5,
    })
    frame.to_parquet(tmp_path / "lists.parquet")
    back, notes = read_parquet(tmp_path / "lists.parquet")
    assert_same_transitions(data, back)
    assert notes == ["ignored non-canonical column(s): comment"]
    frame.at[3, "next_obs"] = np.zeros(2, np.float32)
    frame.to_parquet(tmp_path / "ragged.parquet")
    with pytest.raises(SchemaError, match=r"ragged\.parquet, column 'next_obs', row 3: row has 2 values, expected 3"):
        read_parquet(tmp_path / "ragged.parquet")


def test_ragged_row_in_a_later_batch_is_named_by_its_file_row(tmp_path: Path) -> None:
    table = pa.table({
        "episode_id": pa.array(np.zeros(10, np.int64)), "step": pa.array(np.arange(10, dtype=np.int32)),
        "obs": pa.array([[0.0, 1.0]] * 7 + [[0.0]] + [[0.0, 1.0]] * 2), "action": pa.array([[0.0]] * 10),
        "reward": pa.array(np.zeros(10, np.float32)), "next_obs": pa.array([[0.0, 1.0]] * 10),
        "terminated": pa.array([False] * 10), "truncated": pa.array([False] * 9 + [True]),
    })
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(SchemaError, match="column 'obs', row 7"):
        list(iter_parquet_chunks(tmp_path / "t.parquet", batch_rows=4))


def test_missing_and_misnamed_columns_are_named(tmp_path: Path) -> None:
    frame = make_data([3]).to_wide().rename(columns={"terminated": "done"})
    frame.to_parquet(tmp_path / "m.parquet")
    with pytest.raises(SchemaError, match=r"m\.parquet, column 'terminated': missing column 'terminated' \(found 'done'"):
        read_parquet(tmp_path / "m.parquet")
    frame.drop(columns=[c for c in frame.columns if c.startswith("action.")]).to_parquet(tmp_path / "n.parquet")
    with pytest.raises(SchemaError, match="column 'action': missing column 'action'.*expected episode_id, step"):
        read_parquet(tmp_path / "n.parquet")


def test_null_flag_is_rejected_with_its_row(tmp_path: Path) -> None:
    frame = make_data([4]).to_wide()
    frame["truncated"] = pd.array([False, None, False, True], dtype="boolean")
    frame.to_parquet(tmp_path / "f.parquet")
    with pytest.raises(SchemaError, match="column 'truncated', row 1: has 1 missing value"):
        read_parquet(tmp_path / "f.parquet")


def test_null_observations_become_nan(tmp_path: Path) -> None:
    frame = make_data([3]).to_wide()
    frame.loc[1, "obs.0"] = None
    frame.to_parquet(tmp_path / "g.parquet")
    back, _ = read_parquet(tmp_path / "g.parquet")
    assert np.isnan(back.obs[1, 0]) and np.isfinite(np.delete(back.obs.ravel(), 3)).all()


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_truncated_file_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    path = write_parquet(make_data([200, 200]), tmp_path / "d.parquet")
    raw = path.read_bytes()
    cut = tmp_path / "cut.parquet"
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError, match=r"cut\.parquet: not a readable Parquet file \(corrupt or truncated\?\)"):
        read_parquet(cut)


def test_corrupt_pages_are_a_clear_error(tmp_path: Path) -> None:
    path = write_parquet(make_data([300]), tmp_path / "d.parquet")
    raw = bytearray(path.read_bytes())
    raw[100:1100] = bytes(1000)  # zero out data pages, keep the footer intact
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"d\.parquet: cannot read Parquet data"):
        read_parquet(path)


def test_failed_write_leaves_the_old_file_and_no_debris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "d.parquet"
    write_parquet(make_data([3]), target)
    before = target.read_bytes()

    def explode(table: pa.Table, where: Path, **kwargs: object) -> None:
        Path(where).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        write_parquet(make_data([5]), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.parquet"]
