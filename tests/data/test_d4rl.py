"""D4RL-style HDF5: the episode rules of docs/data-format.md applied row by row, writer round trip, bad files."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from data_factories import assert_same_transitions, make_data
from dime_offline.data.d4rl import D4RL_REFERENCES, read_d4rl_hdf5, write_d4rl_hdf5
from dime_offline.errors import DataError, SchemaError

N = 10
OBS = np.arange(N * 2, dtype=np.float32).reshape(N, 2)  # row i observes (2i, 2i+1)
TERMINALS = np.zeros(N, bool)
TERMINALS[2] = True  # episode A: rows 0-2, ends in a fall
TIMEOUTS = np.zeros(N, bool)
TIMEOUTS[5] = True  # episode B: rows 3-5, time limit; rows 6-9 are an unflagged trailing segment


def _write(path: Path, *, next_observations: bool, rewards_shape: tuple[int, ...] = (N,), **extra: np.ndarray) -> Path:
    with h5py.File(path, "w") as h5:
        h5["observations"] = OBS
        h5["actions"] = -OBS[:, :1] / 100
        h5["rewards"] = np.arange(N, dtype=np.float32).reshape(rewards_shape)
        h5["terminals"] = TERMINALS
        h5["timeouts"] = TIMEOUTS
        if next_observations:
            h5["next_observations"] = OBS + 1000
        for key, value in extra.items():
            h5[key] = value
    return path


def test_with_next_observations_every_row_is_kept(tmp_path: Path) -> None:
    data, notes = read_d4rl_hdf5(_write(tmp_path / "x.hdf5", next_observations=True, rewards_shape=(N, 1)))
    assert data.episode_id.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert data.step.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 3]
    assert np.flatnonzero(data.terminated).tolist() == [2]
    assert np.flatnonzero(data.truncated).tolist() == [5, 9]  # the timeout is kept; the trailing segment ends truncated
    np.testing.assert_array_equal(data.obs, OBS)
    np.testing.assert_array_equal(data.next_obs, OBS + 1000)  # stored successors, never row adjacency
    assert data.reward.shape == (N,) and data.reward.tolist() == list(range(N))
    assert any("trailing segment of 4 row(s)" in n for n in notes)
    # The stored successors differ from the next rows here, and that is reported, not fixed.
    assert data.validate(check_continuity=False)


def test_without_next_observations_rows_without_successor_are_dropped(tmp_path: Path) -> None:
    data, notes = read_d4rl_hdf5(_write(tmp_path / "x.hdf5", next_observations=False))
    kept = [0, 1, 2, 3, 4, 6, 7, 8]  # row 5 (timeout) and row 9 (file end) have no successor in the file
    np.testing.assert_array_equal(data.obs, OBS[kept])
    assert data.reward.tolist() == [float(i) for i in kept]
    assert data.episode_id.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert data.step.tolist() == [0, 1, 2, 0, 1, 0, 1, 2]
    assert np.flatnonzero(data.terminated).tolist() == [2]
    assert np.flatnonzero(data.truncated).tolist() == [4, 7]  # rows 4 and 8 of the file now end their episodes
    # Inside episodes next_obs is the next row; row 4's successor is row 5 (whose transition was dropped);
    # the terminal row 2 gets row 3's observation as a placeholder, as D4RL's qlearning_dataset does.
    np.testing.assert_array_equal(data.next_obs, OBS[[1, 2, 3, 4, 5, 7, 8, 9]])
    assert data.validate() == []
    joined = " | ".join(notes)
    assert "dropped 1 timed-out last transition(s)" in joined
    assert "trailing segment of 4 row(s)" in joined and "placeholder" in joined


def test_single_row_timeout_segment_is_a_reported_zero_step_episode(tmp_path: Path) -> None:
    path = tmp_path / "z.h5"
    with h5py.File(path, "w") as h5:
        h5["observations"] = OBS[:4]
        h5["actions"] = np.zeros((4, 1), np.float32)
        h5["rewards"] = np.ones(4, np.float32)
        h5["terminals"] = np.array([0, 0, 0, 1], np.float32)  # 0/1 floats are accepted as flags
        h5["timeouts"] = np.array([0, 1, 1, 0], bool)  # row 2 alone is a one-row segment ending in a timeout
    data, notes = read_d4rl_hdf5(path)
    assert data.obs[:, 0].tolist() == [0.0, 6.0]
    assert data.truncated.tolist() == [True, False] and data.terminated.tolist() == [False, True]
    assert any("skipped 1 zero-step episode(s)" in n for n in notes)


def test_row_flagged_terminal_and_timeout_is_terminated(tmp_path: Path) -> None:
    timeouts = TIMEOUTS.copy()
    timeouts[2] = True
    path = tmp_path / "both.hdf5"
    _write(path, next_observations=True)
    with h5py.File(path, "a") as h5:
        del h5["timeouts"]
        h5["timeouts"] = timeouts
    data, notes = read_d4rl_hdf5(path)
    assert data.terminated[2] and not data.truncated[2]
    assert "1 row(s) flagged both terminal and timeout were taken as terminated" in notes


def test_reference_scores_follow_a_recognised_file_name(tmp_path: Path) -> None:
    path = tmp_path / "hopper-medium-v2.hdf5"
    with h5py.File(path, "w") as h5:
        h5["observations"] = np.zeros((3, 11), np.float32)
        h5["actions"] = np.zeros((3, 3), np.float32)
        h5["rewards"] = np.zeros(3, np.float32)
        h5["terminals"] = np.array([0, 0, 1], bool)
        h5["infos/qpos"] = np.zeros((3, 6))
    data, notes = read_d4rl_hdf5(path)
    ref = D4RL_REFERENCES["hopper"]
    assert (data.metadata.ref_min_score, data.metadata.ref_max_score) == (-20.272305, 3234.3) == (
        ref.ref_min_score, ref.ref_max_score)
    assert data.metadata.env_id == "Hopper-v4"
    assert data.metadata.action_low == [-1.0] * 3
    assert data.metadata.source == "d4rl-hdf5:hopper-medium-v2.hdf5"
    assert "ignored HDF5 key(s): infos" in notes
    assert "no 'timeouts' dataset: episodes end only at terminals (and at the end of the file)" in notes


def test_task_name_with_other_widths_gets_no_reference(tmp_path: Path) -> None:
    data, _ = read_d4rl_hdf5(_write(tmp_path / "halfcheetah-tiny.hdf5", next_observations=True))
    assert data.metadata.ref_min_score is None and data.metadata.action_low is None
    data, _ = read_d4rl_hdf5(_write(tmp_path / "constant-ant_maze.hdf5", next_observations=True))
    assert data.metadata.extra.get("d4rl_task") is None


def test_writer_round_trip_is_exact(tmp_path: Path) -> None:
    data = make_data([4, 1, 5, 2], obs_dim=3, action_dim=2, episode_ids=[3, 7, 8, 20])
    path, notes = write_d4rl_hdf5(data, tmp_path / "rt.hdf5")
    assert notes == []
    with h5py.File(path) as h5:
        assert set(h5) == {"observations", "actions", "rewards", "next_observations", "terminals", "timeouts"}
        np.testing.assert_array_equal(h5["timeouts"][()], data.truncated)
    back, back_notes = read_d4rl_hdf5(path)
    assert back_notes == []
    assert_same_transitions(data, back, same_ids=False)
    assert back.metadata == data.metadata


def test_writer_marks_unflagged_episode_ends_as_timeouts(tmp_path: Path) -> None:
    data = make_data([3, 2])
    data.terminated[2] = False  # episode 0 now ends with neither flag
    _, notes = write_d4rl_hdf5(data, tmp_path / "u.hdf5")
    assert notes == ["1 episode(s) ending with neither flag were written with timeouts=True"]
    back, _ = read_d4rl_hdf5(tmp_path / "u.hdf5")
    assert back.episode_id.tolist() == [0, 0, 0, 1, 1] and back.truncated[2]


def test_missing_key_is_named_with_a_rename_hint(tmp_path: Path) -> None:
    path = tmp_path / "bad.hdf5"
    with h5py.File(path, "w") as h5:
        h5["observations"] = OBS
        h5["actions"] = OBS
        h5["rewards"] = np.zeros(N)
        h5["dones"] = TERMINALS
    with pytest.raises(SchemaError, match=r"bad\.hdf5, column 'terminals': missing dataset 'terminals' \(found 'dones'"):
        read_d4rl_hdf5(path)


def test_minari_storage_file_gets_a_pointer_to_the_folder(tmp_path: Path) -> None:
    path = tmp_path / "main_data.hdf5"
    with h5py.File(path, "w") as h5:
        h5["episode_0/observations"] = OBS
    with pytest.raises(SchemaError, match="looks like a Minari main_data.hdf5"):
        read_d4rl_hdf5(path)


def test_length_mismatch_names_the_key(tmp_path: Path) -> None:
    path = _write(tmp_path / "len.hdf5", next_observations=False)
    with h5py.File(path, "a") as h5:
        del h5["actions"]
        h5["actions"] = np.zeros((N - 1, 1), np.float32)
    with pytest.raises(SchemaError, match=r"column 'actions': has 9 rows, observations has 10"):
        read_d4rl_hdf5(path)


def test_non_binary_flags_name_the_row(tmp_path: Path) -> None:
    path = _write(tmp_path / "flags.hdf5", next_observations=False)
    with h5py.File(path, "a") as h5:
        del h5["terminals"]
        h5["terminals"] = np.array([0, 0, 0, 0, 2, 0, 0, 0, 0, 0], np.int64)
    with pytest.raises(SchemaError, match=r"column 'terminals', row 4: flags must be 0/1"):
        read_d4rl_hdf5(path)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_file_cut_short_is_a_clear_error(tmp_path: Path, keep: float) -> None:
    path, _ = write_d4rl_hdf5(make_data([300, 300]), tmp_path / "full.hdf5")
    raw = path.read_bytes()
    cut = tmp_path / "cut.hdf5"
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError, match=r"cut\.hdf5.*(not a readable HDF5 file|cannot read).*corrupt or truncated"):
        read_d4rl_hdf5(cut)


def test_failed_write_leaves_no_file(tmp_path: Path) -> None:
    bad = make_data([3])
    bad.step[1] = 5  # invalid order: the writer refuses before touching the disk
    with pytest.raises(SchemaError):
        write_d4rl_hdf5(bad, tmp_path / "out.hdf5")
    assert list(tmp_path.iterdir()) == []
