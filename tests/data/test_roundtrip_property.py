"""Round trips Parquet <-> Minari <-> HDF5 <-> pandas preserve every transition and flag (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_factories import assert_same_transitions
from dime_offline.data.d4rl import read_d4rl_hdf5, write_d4rl_hdf5
from dime_offline.data.frames import from_pandas
from dime_offline.data.minari import read_minari, write_minari
from dime_offline.data.parquet import read_parquet, write_parquet
from dime_offline.data.schema import DatasetMetadata, TransitionData

FLOATS = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def datasets(draw: st.DrawFn, max_episodes: int = 4, max_steps: int = 6) -> TransitionData:
    """Continuous episodes (next_obs[t] == obs[t+1]) of random length, values and end flags."""
    obs_dim = draw(st.integers(1, 3))
    action_dim = draw(st.integers(1, 2))
    lengths = draw(st.lists(st.integers(1, max_steps), min_size=1, max_size=max_episodes))
    ids = np.cumsum(draw(st.lists(st.integers(1, 1000), min_size=len(lengths), max_size=len(lengths))))
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("episode_id", "step", "obs", "action", "reward",
                                                          "next_obs", "terminated", "truncated")}
    for ep, steps in zip(ids, lengths):
        chain = draw(hnp.arrays(np.float32, (steps + 1, obs_dim), elements=FLOATS))
        end = np.zeros(steps, bool)
        end[-1] = True
        terminal = draw(st.booleans())
        parts["episode_id"].append(np.full(steps, ep, np.int64))
        parts["step"].append(np.arange(steps, dtype=np.int32))
        parts["obs"].append(chain[:-1])
        parts["next_obs"].append(chain[1:])
        parts["action"].append(draw(hnp.arrays(np.float32, (steps, action_dim), elements=FLOATS)))
        parts["reward"].append(draw(hnp.arrays(np.float32, (steps,), elements=FLOATS)))
        parts["terminated"].append(end if terminal else np.zeros(steps, bool))
        parts["truncated"].append(np.zeros(steps, bool) if terminal else end)
    names = [f"f{i}" for i in range(obs_dim)] if draw(st.booleans()) else None
    return TransitionData(**{k: np.concatenate(v) for k, v in parts.items()},
                          metadata=DatasetMetadata(obs_names=names, dt_seconds=0.1))


QUICK = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@QUICK
@given(datasets())
def test_parquet_round_trip(data: TransitionData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        back, _ = read_parquet(write_parquet(data, Path(tmp) / "d.parquet"))
    assert_same_transitions(data, back)
    assert back.metadata == data.metadata


@QUICK
@given(datasets())
def test_hdf5_round_trip(data: TransitionData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path, _ = write_d4rl_hdf5(data, Path(tmp) / "d.hdf5")
        back, notes = read_d4rl_hdf5(path)
    assert notes == []
    assert_same_transitions(data, back, same_ids=False)
    assert back.metadata == data.metadata


@QUICK
@given(datasets())
def test_pandas_wide_round_trip(data: TransitionData) -> None:
    back = from_pandas(data.to_wide())
    assert_same_transitions(data, back)
    assert back.metadata.obs_names == data.metadata.obs_names


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(datasets(max_episodes=3, max_steps=4))
def test_chain_parquet_minari_hdf5_pandas_parquet(data: TransitionData) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        step1, _ = read_parquet(write_parquet(data, root / "a.parquet"))
        minari_dir, _ = write_minari(step1, root / "m-v0")
        step2, _ = read_minari(minari_dir)
        step3, _ = read_d4rl_hdf5(write_d4rl_hdf5(step2, root / "b.hdf5")[0])
        step4 = from_pandas(step3.to_wide(), metadata=step3.metadata)  # a DataFrame carries no metadata
        final, _ = read_parquet(write_parquet(step4, root / "c.parquet"))
    assert_same_transitions(data, final, same_ids=False)
    assert final.metadata == data.metadata
