"""Local Minari datasets: read step by step against EpisodeBuffers, write through Minari, traps of §1.5."""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
from minari.data_collector import EpisodeBuffer

from data_factories import assert_same_transitions, make_data
from dime_offline.data.load import load_dataset_with_report
from dime_offline.data.minari import read_minari, write_minari
from dime_offline.data.schema import DatasetMetadata
from dime_offline.errors import ConsistencyError, DataError, DatasetNotFoundError, SchemaError

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
ACT_SPACE = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)


def _buffers(rng: np.random.Generator) -> list[EpisodeBuffer]:
    """Three episodes: 4 steps ending in a termination, 1 step truncated, 3 steps with neither flag."""
    out = []
    for steps, end in ((4, "term"), (1, "trunc"), (3, None)):
        flags = np.zeros(steps, bool)
        flags[-1] = True
        out.append(EpisodeBuffer(
            observations=rng.standard_normal((steps + 1, 3)),  # float64, as MuJoCo v5 envs give
            actions=rng.uniform(-2, 2, (steps, 1)).astype(np.float32),
            rewards=rng.standard_normal(steps),
            terminations=flags if end == "term" else np.zeros(steps, bool),
            truncations=flags if end == "trunc" else np.zeros(steps, bool),
        ))
    return out


def _create(dataset_id: str, buffers: list[EpisodeBuffer], **kwargs: object) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            dataset_id, buffer=buffers, observation_space=OBS_SPACE, action_space=ACT_SPACE, **kwargs
        )


def test_episodes_become_rows_step_by_step(minari_root: Path) -> None:
    buffers = _buffers(np.random.default_rng(0))
    _create("dime/test/src-v0", buffers, ref_min_score=-5.0, ref_max_score=7.0, env="Pendulum-v1")
    data, notes = read_minari("dime/test/src-v0")
    assert notes == []
    row = 0
    for episode, buf in enumerate(buffers):
        steps = len(buf.actions)
        for t in range(steps):
            assert data.episode_id[row] == episode and data.step[row] == t
            np.testing.assert_array_equal(data.obs[row], buf.observations[t].astype(np.float32))
            np.testing.assert_array_equal(data.next_obs[row], buf.observations[t + 1].astype(np.float32))
            np.testing.assert_array_equal(data.action[row], buf.actions[t])
            assert data.reward[row] == np.float32(buf.rewards[t])
            assert data.terminated[row] == buf.terminations[t] and data.truncated[row] == buf.truncations[t]
            row += 1
    assert row == len(data) == 8
    assert data.obs.dtype == np.float32 and data.reward.dtype == np.float32
    meta = data.metadata
    assert (meta.action_low, meta.action_high) == ([-2.0], [2.0])
    assert meta.obs_low is None  # unbounded observation space
    assert (meta.ref_min_score, meta.ref_max_score) == (-5.0, 7.0)
    assert meta.env_id == "Pendulum-v1" and meta.source == "minari:dime/test/src-v0"


def test_load_marks_the_unflagged_last_episode_truncated() -> None:
    _create("flags-v0", _buffers(np.random.default_rng(1)))
    data, report = load_dataset_with_report("flags-v0")
    assert report.format == "minari"
    assert data.truncated.tolist() == [False] * 4 + [True] + [False, False, True]
    assert "1 episode(s) ended with neither terminated nor truncated: marked truncated" in report.notes


def test_dataset_folder_and_data_folder_are_accepted(minari_root: Path) -> None:
    _create("ns/folder-v1", _buffers(np.random.default_rng(2)))
    by_id, _ = read_minari("ns/folder-v1")
    for source in (minari_root / "ns" / "folder-v1", minari_root / "ns" / "folder-v1" / "data"):
        data, _ = read_minari(source)
        assert_same_transitions(by_id, data)


def test_zero_step_episodes_are_skipped_and_reported(minari_root: Path) -> None:
    _create("zero-v0", _buffers(np.random.default_rng(3)))
    # Minari refuses to write a 0-step episode, but its files can hold one (e.g. a reset followed by
    # nothing): add it by hand as the last episode.
    data_dir = minari_root / "zero-v0" / "data"
    with h5py.File(data_dir / "main_data.hdf5", "a") as h5:
        group = h5.create_group("episode_3")
        group.attrs.update({"id": 3, "total_steps": 0})
        group["observations"] = np.zeros((1, 3))
        group["actions"] = np.zeros((0, 1), np.float32)
        group["rewards"] = np.zeros(0)
        group["terminations"] = np.zeros(0, bool)
        group["truncations"] = np.zeros(0, bool)
    meta = json.loads((data_dir / "metadata.json").read_text())
    meta["total_episodes"] = 4
    (data_dir / "metadata.json").write_text(json.dumps(meta))
    data, notes = read_minari("zero-v0")
    assert len(data) == 8 and data.episode_id.max() == 2
    assert notes == ["skipped 1 zero-step Minari episode(s) (ids 3)"]


def test_id_without_version_fails_before_minari_touches_the_disk(minari_root: Path) -> None:
    with pytest.raises(DataError, match=r"dime/pendulum/random: Minari dataset id 'dime/pendulum/random' has no version"):
        read_minari("dime/pendulum/random")
    with pytest.raises(DataError, match="has no version suffix"):
        write_minari(make_data([3]), "dime/pendulum/random")
    assert not minari_root.exists() or not any(minari_root.rglob("*"))


def test_missing_dataset_is_not_downloaded(minari_root: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"not available locally \(looked in .*minari-root/mujoco/hopper/expert-v0/data\)"):
        read_minari("mujoco/hopper/expert-v0")
    with pytest.raises(DatasetNotFoundError, match="not a Minari dataset folder"):
        read_minari(minari_root.parent)


def test_writer_output_reads_back_through_minari_itself() -> None:
    meta = DatasetMetadata(obs_names=["x", "y", "z"], action_low=[-1.0, -1.0], action_high=[1.0, 1.0],
                           ref_min_score=0.0, ref_max_score=10.0, env_id="Pendulum-v1", source="unit test")
    data = make_data([3, 1, 4], episode_ids=[5, 6, 9], metadata=meta)
    path, notes = write_minari(data, "dime/written/rt-v0")
    assert notes == []
    dataset = minari.load_dataset("dime/written/rt-v0")  # Minari's own id resolution
    assert "dime/written/rt-v0" in minari.list_local_datasets()  # namespace markers are in place
    episodes = list(dataset.iterate_episodes())
    assert [len(e.actions) for e in episodes] == [3, 1, 4]
    first = episodes[0]
    np.testing.assert_array_equal(first.observations, np.concatenate([data.obs[:3], data.next_obs[2:3]]))
    assert first.terminations.tolist() == [False, False, True]
    assert episodes[1].truncations.tolist() == [True]
    assert dataset.storage.metadata["ref_max_score"] == 10.0
    back, _ = read_minari(path)
    assert_same_transitions(data, back, same_ids=False)
    assert back.metadata == meta


@pytest.mark.parametrize("data_format", ["arrow", "parquet"])
def test_other_minari_backends_round_trip(tmp_path: Path, data_format: str) -> None:
    data = make_data([2, 3])
    path, _ = write_minari(data, tmp_path / "folder", data_format=data_format)  # type: ignore[arg-type]
    assert json.loads((path / "data" / "metadata.json").read_text())["dataset_id"] == "folder-v0"
    back, _ = read_minari(path)
    assert_same_transitions(data, back, same_ids=False)


def test_writer_refuses_discontinuous_episodes_and_writes_nothing(minari_root: Path) -> None:
    data = make_data([4, 2])
    data.next_obs[1] += 1.0
    with pytest.raises(ConsistencyError, match=r"column 'next_obs', row 1: .*Minari stores one observation sequence"):
        write_minari(data, "broken-v0")
    assert not (minari_root / "broken-v0").exists()


def test_writer_never_overwrites(tmp_path: Path) -> None:
    write_minari(make_data([2]), tmp_path / "once-v0")
    with pytest.raises(DataError, match="already exists"):
        write_minari(make_data([2]), tmp_path / "once-v0")


def test_optional_columns_dropped_by_the_writer_are_reported(tmp_path: Path) -> None:
    data = dataclasses.replace(make_data([2]), timestamp=np.arange(2, dtype=np.int64))
    _, notes = write_minari(data, tmp_path / "ts-v0")
    assert notes == ["timestamp is not stored in Minari datasets (dropped)"]


def test_discrete_action_space_is_rejected(minari_root: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        minari.create_dataset_from_buffers(
            "discrete-v0",
            buffer=[EpisodeBuffer(observations=np.zeros((3, 3)), actions=np.array([0, 1]), rewards=np.zeros(2),
                                  terminations=np.array([False, True]), truncations=np.zeros(2, bool))],
            observation_space=OBS_SPACE, action_space=gym.spaces.Discrete(2),
        )
    with pytest.raises(SchemaError, match="action space is Discrete; only Box"):
        read_minari("discrete-v0")
