"""ReplayStore.from_parquet: streamed record batches give the same store as the in-memory path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dime_offline.data.parquet import write_parquet
from dime_offline.data.replay import FIELDS, ReplayConfig, ReplayStore
from dime_offline.errors import BoundsError, NonFiniteError, SchemaError
from replay_factories import build_transitions, direct_returns_to_go


def _assert_same_store(a: ReplayStore, b: ReplayStore) -> None:
    assert (a.offline_size, a.online_capacity) == (b.offline_size, b.online_capacity)
    for name in FIELDS:
        assert torch.equal(getattr(a, name)[: a.offline_size], getattr(b, name)[: b.offline_size]), name
    assert a.normalization is not None and b.normalization is not None
    np.testing.assert_allclose(a.normalization.obs_mean, b.normalization.obs_mean, rtol=1e-12)
    np.testing.assert_allclose(a.normalization.obs_std, b.normalization.obs_std, rtol=1e-10)
    assert a.normalization.episode_return_max == pytest.approx(b.normalization.episode_return_max, rel=1e-12)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    episodes=st.lists(st.tuples(st.integers(1, 25), st.booleans()), min_size=1, max_size=8),
    chunk_rows=st.integers(1, 40),
    gamma=st.floats(0.0, 0.999),
)
def test_chunked_parquet_matches_in_memory_store(
    tmp_path: Path, episodes: list[tuple[int, bool]], chunk_rows: int, gamma: float
) -> None:
    lengths = [k for k, _ in episodes]
    terminal = [t for _, t in episodes]
    data = build_transitions(lengths, terminal, seed=len(lengths))
    path = write_parquet(data, tmp_path / f"d{chunk_rows}-{len(lengths)}.parquet", row_group_rows=7)
    # Small record batches make episodes span several of them.
    streamed = ReplayStore.from_parquet(path, gamma=gamma, online_capacity=3, chunk_rows=chunk_rows)
    in_memory = ReplayStore.from_transitions(data, gamma=gamma, online_capacity=3)
    _assert_same_store(streamed, in_memory)
    assert streamed.metadata.action_low == data.metadata.action_low
    np.testing.assert_allclose(
        streamed.mc_return[: len(data)].numpy(),
        direct_returns_to_go(data.reward, lengths, terminal, gamma, ReplayConfig.truncation),
        rtol=1e-6, atol=1e-5,
    )


def test_directory_dataset_streams_every_file(tmp_path: Path) -> None:
    data = build_transitions([30, 12, 50, 8, 25], [True, False, True, False, False])
    path = write_parquet(data, tmp_path / "dataset", rows_per_file=40)
    assert len(list(path.glob("*.parquet"))) > 1
    store = ReplayStore.from_parquet(path, online_capacity=0, chunk_rows=16)
    _assert_same_store(store, ReplayStore.from_transitions(data, online_capacity=0))


def test_parquet_errors_name_the_dataset_row(tmp_path: Path) -> None:
    data = build_transitions([10, 10, 10])
    data.obs[23, 1] = np.nan
    data.next_obs[22, 1] = np.nan
    path = write_parquet(data, tmp_path / "nan.parquet")
    with pytest.raises(NonFiniteError) as info:
        ReplayStore.from_parquet(path, chunk_rows=8)
    assert info.value.row == 23 and info.value.column == "obs" and "nan.parquet" in info.value.one_line()

    data = build_transitions([10, 10, 10])
    data.action[17, 0] = 100.0
    path = write_parquet(data, tmp_path / "bounds.parquet")
    with pytest.raises(BoundsError) as bounds:
        ReplayStore.from_parquet(path, chunk_rows=8)
    assert bounds.value.row == 17


def test_unsorted_rows_across_record_batches_are_rejected(tmp_path: Path) -> None:
    data = build_transitions([6, 6])
    order = np.r_[6:12, 0:6]  # second episode first: episode ids go down at row 6
    path = write_parquet(data.select(order), tmp_path / "unsorted.parquet")
    with pytest.raises(SchemaError) as info:
        ReplayStore.from_parquet(path, chunk_rows=4)
    assert info.value.row == 6


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    from dime_offline.errors import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError):
        ReplayStore.from_parquet(tmp_path / "absent.parquet")


def test_prefetch_keeps_order_and_reraises_producer_errors() -> None:
    from dime_offline.data.replay import _prefetch

    assert list(_prefetch(iter(range(50)), depth=2)) == list(range(50))

    def failing():
        yield 1
        raise SchemaError("broken batch", file="x.parquet", row=9)

    got = []
    with pytest.raises(SchemaError, match="broken batch"):
        for item in _prefetch(failing(), depth=2):
            got.append(item)
    assert got == [1]


def test_prefetch_stops_its_thread_when_the_consumer_stops() -> None:
    import threading

    from dime_offline.data.replay import _prefetch

    produced = []

    def endless():
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    stream = _prefetch(endless(), depth=2)
    assert next(stream) == 0
    stream.close()
    assert not any(t.name == "dime-offline-prefetch" for t in threading.enumerate())
    assert len(produced) <= 5  # the producer ran at most a bounded distance ahead


def test_wide_parquet_from_pandas_loads_the_same_store(tmp_path: Path) -> None:
    data = build_transitions([9, 4, 11], [False, True, False], action_low=None, action_high=None)
    path = tmp_path / "wide.parquet"
    data.to_wide().to_parquet(path)  # an engineer's export: one named column per feature
    store = ReplayStore.from_parquet(path, online_capacity=0, chunk_rows=5)
    _assert_same_store(store, ReplayStore.from_transitions(data, online_capacity=0))


def test_undeclared_bounds_with_actions_outside_the_unit_box_are_rejected(tmp_path: Path) -> None:
    data = build_transitions([9, 4])  # actions in [-2, 3]
    path = tmp_path / "wide.parquet"
    frame = data.to_wide()
    frame.attrs.clear()  # a wide frame without the dataset's metadata (to_wide keeps it in attrs)
    frame.to_parquet(path)
    with pytest.raises(BoundsError, match="no action bounds declared"):
        ReplayStore.from_parquet(path)
