"""pandas and numpy sources: list and wide layouts, named errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from data_factories import assert_same_transitions, make_data
from dime_offline.data.frames import from_arrays, from_dict, from_pandas
from dime_offline.data.schema import DatasetMetadata
from dime_offline.errors import SchemaError


def _long_frame(n_rows: int = 5) -> tuple[pd.DataFrame, object]:
    data = make_data([3, n_rows - 3])
    frame = pd.DataFrame({
        "episode_id": data.episode_id, "step": data.step, "obs": list(data.obs), "action": list(data.action),
        "reward": data.reward, "next_obs": list(data.next_obs), "terminated": data.terminated,
        "truncated": data.truncated,
    })
    return frame, data


def test_array_valued_columns() -> None:
    frame, data = _long_frame()
    assert_same_transitions(data, from_pandas(frame))


def test_wide_frame_round_trip_with_names_time_and_keys() -> None:
    meta = DatasetMetadata(obs_names=["T_in", "T_out", "level"], action_names=["valve", "heater"])
    data = make_data([2, 3], metadata=meta)
    data.timestamp = np.arange(5, dtype=np.int64) * 60_000_000
    data.episode_key = np.asarray(["b1", "b1", "b2", "b2", "b2"], dtype=object)
    back = from_pandas(data.to_wide())
    assert_same_transitions(data, back)
    assert back.metadata.obs_names == meta.obs_names and back.metadata.action_names == meta.action_names
    np.testing.assert_array_equal(back.timestamp, data.timestamp)
    assert back.episode_key.tolist() == ["b1", "b1", "b2", "b2", "b2"]


def test_explicit_metadata_wins_and_gets_names_filled_in() -> None:
    data = make_data([3], metadata=DatasetMetadata(obs_names=["a", "b", "c"]))
    back = from_pandas(data.to_wide(), metadata=DatasetMetadata(env_id="Pendulum-v1"))
    assert back.metadata.env_id == "Pendulum-v1" and back.metadata.obs_names == ["a", "b", "c"]


def test_frame_index_does_not_matter() -> None:
    frame, data = _long_frame()
    frame.index = [10, 3, 7, 1, 0]
    assert_same_transitions(data, from_pandas(frame))


def test_wide_next_obs_must_match_obs_names() -> None:
    frame = make_data([3]).to_wide().rename(columns={"next_obs.2": "next_obs.z"})
    with pytest.raises(SchemaError, match=r"column 'next_obs': wide next_obs columns \['0', '1', 'z'\] do not match"):
        from_pandas(frame)


def test_missing_column_is_named_with_the_expected_list() -> None:
    frame, _ = _long_frame()
    with pytest.raises(SchemaError, match=r"DataFrame, column 'reward': missing column 'reward' \(found 'rewards'.*expected"):
        from_pandas(frame.rename(columns={"reward": "rewards"}))
    with pytest.raises(SchemaError, match="column 'next_obs': missing column 'next_obs'"):
        from_pandas(frame.drop(columns=["next_obs"]))


def test_ragged_obs_row_is_named() -> None:
    frame, _ = _long_frame()
    frame.at[2, "obs"] = np.zeros(2, np.float32)
    with pytest.raises(SchemaError, match="column 'obs', row 2: row has 2 values, expected 3"):
        from_pandas(frame)


def test_text_in_a_numeric_column_is_named() -> None:
    frame = make_data([3]).to_wide()
    frame["reward"] = ["1", "2", "x"]
    with pytest.raises(SchemaError, match="column 'reward': expected float32 values"):
        from_pandas(frame)


def test_from_arrays_defaults_to_one_episode_and_counts_steps() -> None:
    obs = np.arange(4.0)
    data = from_arrays(obs=obs, action=np.zeros(4), reward=np.ones(4), next_obs=obs + 1,
                       terminated=[0, 0, 0, 1], truncated=[0, 0, 0, 0])
    assert data.obs.shape == (4, 1) and data.obs.dtype == np.float32 and data.action.shape == (4, 1)
    assert data.episode_id.tolist() == [0] * 4 and data.step.tolist() == [0, 1, 2, 3]
    assert data.terminated.dtype == np.bool_
    assert data.validate() == []


def test_from_arrays_steps_restart_per_episode_and_datetimes_convert() -> None:
    times = np.array(["2024-01-01T00:00:00", "2024-01-01T00:00:01", "2024-01-01T00:00:02"], dtype="datetime64[s]")
    data = from_arrays(obs=np.zeros((3, 2)), action=np.zeros((3, 1)), reward=np.zeros(3), next_obs=np.zeros((3, 2)),
                       terminated=[1, 0, 1], truncated=[0, 0, 0], episode_id=[4, 9, 9], timestamp=times)
    assert data.step.tolist() == [0, 0, 1]
    assert data.timestamp.tolist() == [1_704_067_200_000_000, 1_704_067_201_000_000, 1_704_067_202_000_000]


def test_from_arrays_shape_errors_name_the_field() -> None:
    ok = dict(obs=np.zeros((3, 2)), action=np.zeros((3, 1)), reward=np.zeros(3), next_obs=np.zeros((3, 2)),
              terminated=np.zeros(3), truncated=np.zeros(3))
    with pytest.raises(SchemaError, match="column 'action': has 2 rows, obs has 3"):
        from_arrays(**{**ok, "action": np.zeros((2, 1))})
    with pytest.raises(SchemaError, match=r"column 'reward': expected shape \(3,\)"):
        from_arrays(**{**ok, "reward": np.zeros((3, 2))})
    with pytest.raises(SchemaError, match="column 'obs', row 1: row has 1 values, row 0 has 2"):
        from_arrays(**{**ok, "obs": [[0.0, 1.0], [0.0], [1.0, 2.0]]})
    with pytest.raises(SchemaError, match="column 'terminated', row 2: flags must be 0/1"):
        from_arrays(**{**ok, "terminated": [0, 0, 3]})


def test_dict_keys_are_checked() -> None:
    arrays = dict(obs=np.zeros((2, 1)), action=np.zeros((2, 1)), reward=np.zeros(2), next_obs=np.zeros((2, 1)),
                  terminated=[0, 1], truncated=[0, 0])
    assert len(from_dict(arrays)) == 2
    with pytest.raises(SchemaError, match=r"column 'observations': unknown key\(s\) \['observations'\]"):
        from_dict({**arrays, "observations": arrays["obs"]})
    with pytest.raises(SchemaError, match="column 'truncated': missing key 'truncated'"):
        from_dict({k: v for k, v in arrays.items() if k != "truncated"})
