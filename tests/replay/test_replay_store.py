"""ReplayStore: contents, exact offline fraction, ring isolation, sampling validity, save/load resume."""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dime_offline.data.actions import scale_action
from dime_offline.data.replay import ReplayConfig, ReplayStore, offline_rows_in_batch
from dime_offline.data.returns import discounted_returns_to_go, episode_ends_from_ids
from dime_offline.errors import BoundsError, CheckpointError, DataError, NonFiniteError, SchemaError
from replay_factories import build_transitions, direct_returns_to_go

OBS, ACT = 3, 2
ONLINE_MARK = -1000.0
"""Online test rows carry obs[:, 0] <= ONLINE_MARK; offline rows carry their row index >= 0."""


def _offline_store(capacity: int = 16, lengths: tuple[int, ...] = (5, 1, 7, 3), **overrides: object) -> ReplayStore:
    data = build_transitions(lengths, [True, False, False, True][: len(lengths)] + [False] * max(0, len(lengths) - 4))
    return ReplayStore.from_transitions(data, online_capacity=capacity, **overrides)  # type: ignore[arg-type]


def _online_rows(start: int, n: int) -> dict[str, np.ndarray]:
    """n distinct online transitions numbered from ``start`` (obs[:, 0] = ONLINE_MARK - number)."""
    number = np.arange(start, start + n, dtype=np.float32)
    obs = np.zeros((n, OBS), np.float32)
    obs[:, 0] = ONLINE_MARK - number
    return {
        "obs": obs, "action": np.full((n, ACT), 0.5, np.float32), "reward": number,
        "next_obs": obs + 1, "terminated": (number % 5) == 0, "truncated": (number % 7) == 0,
    }


def _snapshot(store: ReplayStore) -> dict[str, torch.Tensor]:
    return {name: getattr(store, name)[: store.offline_size].clone() for name in
            ("obs", "action", "reward", "next_obs", "terminated", "truncated", "mc_return")}


# ------------------------------------------------------------------------ building
def test_from_transitions_holds_the_data_with_scaled_actions_and_returns() -> None:
    lengths, terminal = [5, 1, 7, 3], [True, False, False, True]
    data = build_transitions(lengths, terminal)
    store = ReplayStore.from_transitions(data, gamma=0.9, online_capacity=4)
    n = len(data)
    assert store.offline_size == n and store.online_size == 0 and len(store) == n
    np.testing.assert_array_equal(store.obs[:n].numpy(), data.obs)
    np.testing.assert_array_equal(store.next_obs[:n].numpy(), data.next_obs)
    np.testing.assert_array_equal(store.reward[:n].numpy(), data.reward)
    np.testing.assert_array_equal(store.terminated[:n].numpy(), data.terminated)
    np.testing.assert_array_equal(store.truncated[:n].numpy(), data.truncated)
    expected_action = scale_action(data.action, np.array(data.metadata.action_low), np.array(data.metadata.action_high))
    np.testing.assert_allclose(store.action[:n].numpy(), expected_action, atol=1e-6)
    assert store.action[:n].abs().max() <= 1.0
    np.testing.assert_allclose(
        store.mc_return[:n].numpy(), direct_returns_to_go(data.reward, lengths, terminal, 0.9, ReplayConfig.truncation), rtol=1e-6, atol=1e-6
    )
    assert store.normalization is not None and store.normalization.count == n
    np.testing.assert_allclose(store.normalization.obs_mean, data.obs.astype(np.float64).mean(axis=0), rtol=1e-12)
    assert store.normalization.episode_return_min == pytest.approx(data.episode_returns().min())


def test_truncation_mode_changes_only_truncated_episodes() -> None:
    lengths, terminal = [4, 6], [True, False]
    data = build_transitions(lengths, terminal)
    zero = ReplayStore.from_transitions(data, gamma=0.95, online_capacity=0, truncation="zero")
    repeat = ReplayStore.from_transitions(data, gamma=0.95, online_capacity=0, truncation="repeat_last_reward")
    torch.testing.assert_close(zero.mc_return[:4], repeat.mc_return[:4])
    np.testing.assert_allclose(
        repeat.mc_return.numpy(), direct_returns_to_go(data.reward, lengths, terminal, 0.95, "repeat_last_reward"), rtol=1e-6
    )
    assert not torch.allclose(zero.mc_return[4:], repeat.mc_return[4:])


def test_memory_is_close_to_the_raw_transition_bytes() -> None:
    store = _offline_store(capacity=0)
    raw = (2 * OBS + ACT + 1) * 4 + 2  # obs, next_obs, action, reward float32 + two bool flags
    assert store.bytes_per_row() == raw + 8  # + the float32 Monte-Carlo return and its horizon
    assert store.nbytes() == store.bytes_per_row() * store.offline_size


def test_invalid_data_is_reported_with_its_row() -> None:
    data = build_transitions([4, 4])
    data.action[6, 1] = 7.0  # bounds are [-2, 3]
    with pytest.raises(BoundsError) as info:
        ReplayStore.from_transitions(data, file="logs.parquet")
    assert info.value.row == 6 and "logs.parquet" in info.value.one_line()


def test_next_obs_is_kept_as_given_not_inferred_from_the_next_row() -> None:
    data = build_transitions([6])
    data.next_obs[2, 1] += 5.0  # a gap in the chain: inspect reports it, the store must not "fix" it
    store = ReplayStore.from_transitions(data, online_capacity=0)
    np.testing.assert_array_equal(store.next_obs.numpy(), data.next_obs)


@pytest.mark.parametrize("column", ["obs", "action", "reward", "next_obs"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_with_their_row(column: str, bad: float) -> None:
    data = build_transitions([4, 5])
    getattr(data, column)[7] = bad
    with pytest.raises(NonFiniteError) as info:
        ReplayStore.from_transitions(data, file="logs.parquet")
    assert (info.value.column, info.value.row) == (column, 7)


def test_unknown_config_override_is_rejected() -> None:
    with pytest.raises(TypeError, match="capacity"):
        ReplayStore.from_transitions(build_transitions([3]), capacity=5)
    with pytest.raises(ValueError, match="truncation"):
        ReplayConfig(truncation="bootstrap")  # type: ignore[arg-type]


# ------------------------------------------------------------------------ sampling
@settings(max_examples=200, deadline=None)
@given(batch_size=st.integers(1, 600), fraction=st.floats(0.0, 1.0), seed=st.integers(0, 2**31))
@example(batch_size=2, fraction=0.25, seed=0)  # exact halves round up: 0.5 -> 1, 2.5 -> 3
@example(batch_size=10, fraction=0.25, seed=0)
@example(batch_size=7, fraction=0.0, seed=0)
@example(batch_size=7, fraction=1.0, seed=0)
def test_offline_fraction_is_exact(batch_size: int, fraction: float, seed: int) -> None:
    store = _STORE_WITH_BOTH_PARTS
    batch = store.sample(batch_size, fraction, generator=torch.Generator().manual_seed(seed))
    k = offline_rows_in_batch(batch_size, fraction)
    assert k == int(np.floor(batch_size * fraction + 0.5)) and abs(k - batch_size * fraction) <= 0.5
    if batch_size * fraction % 1 == 0.5:
        assert k == batch_size * fraction + 0.5
    is_offline = batch.is_offline.bool()
    assert int(is_offline.sum()) == k
    # The flag tells the truth: offline rows carry row indices >= 0, online rows the online mark.
    assert bool((batch.obs[is_offline, 0] >= 0).all())
    assert bool((batch.obs[~is_offline, 0] <= ONLINE_MARK).all())
    assert bool(batch.mc_return[is_offline].isfinite().all())


def _make_store_with_both_parts() -> ReplayStore:
    store = _offline_store(capacity=32)
    rows = _online_rows(0, 20)
    store.add(**rows)
    return store


_STORE_WITH_BOTH_PARTS = _make_store_with_both_parts()


def test_batch_fields_have_documented_shapes_and_types() -> None:
    batch = _STORE_WITH_BOTH_PARTS.sample(10, 0.3, generator=torch.Generator().manual_seed(0))
    assert batch.obs.shape == (10, OBS) and batch.next_obs.shape == (10, OBS) and batch.action.shape == (10, ACT)
    for name in ("reward", "terminated", "truncated", "mc_return", "is_offline"):
        value = getattr(batch, name)
        assert value.shape == (10,) and value.dtype == torch.float32, name
    assert batch.is_offline[:3].eq(1).all() and batch.is_offline[3:].eq(0).all()


def test_rows_keep_their_fields_together() -> None:
    store = _STORE_WITH_BOTH_PARTS
    batch = store.sample(256, 0.5, generator=torch.Generator().manual_seed(1))
    for i in range(256):
        mark = float(batch.obs[i, 0])
        if mark >= 0:
            row = int(mark)
        else:
            number = int(round(ONLINE_MARK - mark))
            row = store.offline_size + number  # 20 rows in a 32-slot ring: slot == number
        assert torch.equal(batch.next_obs[i], store.next_obs[row])
        assert float(batch.reward[i]) == float(store.reward[row])
        assert float(batch.terminated[i]) == float(store.terminated[row])
        assert float(batch.truncated[i]) == float(store.truncated[row])


def test_uniform_sampling_without_fraction_covers_both_parts() -> None:
    store = _STORE_WITH_BOTH_PARTS
    batch = store.sample(4000, generator=torch.Generator().manual_seed(2))
    share = float(batch.is_offline.mean())
    assert abs(share - store.offline_size / len(store)) < 0.05
    assert bool(((batch.obs[:, 0] >= 0) == batch.is_offline.bool()).all())


def test_config_default_fraction_is_used() -> None:
    store = _offline_store(capacity=8, offline_fraction=0.25)
    store.add(**_online_rows(0, 3))
    assert int(store.sample(8, generator=torch.Generator().manual_seed(0)).is_offline.sum()) == 2


def test_same_generator_state_gives_the_same_batch() -> None:
    a = _STORE_WITH_BOTH_PARTS.sample(64, 0.5, generator=torch.Generator().manual_seed(7))
    b = _STORE_WITH_BOTH_PARTS.sample(64, 0.5, generator=torch.Generator().manual_seed(7))
    for x, y in zip(a, b):
        assert torch.equal(x.nan_to_num(), y.nan_to_num())


def test_empty_parts_fall_back_to_the_other_part() -> None:
    offline_only = _offline_store(capacity=8)
    batch = offline_only.sample(10, 0.0, generator=torch.Generator().manual_seed(0))
    assert bool(batch.is_offline.eq(1).all()) and bool((batch.obs[:, 0] >= 0).all())

    online_only = ReplayStore.empty(OBS, ACT, online_capacity=8)
    with pytest.raises(ValueError, match="empty"):
        online_only.sample(4, 0.5)
    online_only.add(**_online_rows(0, 2))
    batch = online_only.sample(10, 1.0, generator=torch.Generator().manual_seed(0))
    assert bool(batch.is_offline.eq(0).all()) and bool((batch.obs[:, 0] <= ONLINE_MARK).all())
    with pytest.raises(ValueError, match="offline_fraction"):
        online_only.sample(4, 1.5)


# --------------------------------------------------------------------- online ring
@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 12),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=12),
    seed=st.integers(0, 2**31),
)
def test_online_ring_is_fifo_and_never_touches_offline_rows(capacity: int, sizes: list[int], seed: int) -> None:
    store = _offline_store(capacity=capacity)
    before = _snapshot(store)
    kept: deque[float] = deque(maxlen=capacity)  # online numbers in arrival order
    number = 0
    for n in sizes:
        rows = _online_rows(number, n)
        if n == 1:  # a single transition, not a vector of one
            rows = {k: v[0] for k, v in rows.items()}
        store.add(**rows)
        kept.extend(range(number, number + n))
        number += n
        after = _snapshot(store)
        for name, tensor in before.items():
            assert torch.equal(tensor.nan_to_num(), after[name].nan_to_num()), name
    assert store.online_size == len(kept) and store.online_added == number
    # Slot order: the oldest kept transition sits at the write cursor once the ring is full.
    slots = store.reward[store.offline_size : store.offline_size + store.online_size].tolist()
    oldest_first = slots[store.online_cursor :] + slots[: store.online_cursor] if store.online_size == capacity else slots
    assert oldest_first == [float(k) for k in kept]
    # Every sampled online row is one of the kept transitions.
    batch = store.sample(64, 0.0, generator=torch.Generator().manual_seed(seed))
    sampled = set((ONLINE_MARK - batch.obs[:, 0]).round().long().tolist())
    assert sampled <= set(kept)


def test_partly_filled_ring_samples_only_filled_slots() -> None:
    store = _offline_store(capacity=1000)
    store.add(**_online_rows(0, 3))
    batch = store.sample(2000, 0.0, generator=torch.Generator().manual_seed(0))
    assert set((ONLINE_MARK - batch.obs[:, 0]).round().long().tolist()) == {0, 1, 2}


def test_adding_a_big_vector_equals_adding_rows_one_by_one() -> None:
    bulk, single = _offline_store(capacity=5), _offline_store(capacity=5)
    bulk.add(**_online_rows(0, 3))
    single.add(**_online_rows(0, 3))
    bulk.add(**_online_rows(3, 13))
    rows = _online_rows(3, 13)
    for i in range(13):
        single.add(**{k: v[i] for k, v in rows.items()})
    assert (bulk.online_cursor, bulk.online_size, bulk.online_added) == (single.online_cursor, single.online_size, 16)
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated"):
        assert torch.equal(getattr(bulk, name), getattr(single, name)), name


def test_add_stores_terminal_over_truncation_and_returns_of_ended_episodes() -> None:
    store = ReplayStore.empty(OBS, ACT, online_capacity=4, gamma=0.5, truncation="repeat_last_reward")
    store.add(np.zeros(OBS), np.zeros(ACT), 1.0, np.ones(OBS), True, True)
    store.add(torch.zeros(OBS), torch.zeros(ACT), torch.tensor(2.0), torch.ones(OBS), False, True)
    store.add(np.zeros(OBS), np.zeros(ACT), 3.0, np.ones(OBS), False, False)
    assert store.terminated[:3].tolist() == [True, False, False]
    assert store.truncated[:3].tolist() == [False, True, False]
    # A terminal row's return is its reward; a cut one's repeats it (2 / (1 - 0.5)); the running episode has none.
    assert store.mc_return[:2].tolist() == [1.0, 4.0]
    assert bool(store.mc_return[2].isnan())


def test_add_rejects_wrong_shapes_and_missing_ring() -> None:
    store = ReplayStore.empty(OBS, ACT, online_capacity=4)
    with pytest.raises(ValueError, match="action has shape"):
        store.add(np.zeros((2, OBS)), np.zeros((2, ACT + 1)), np.zeros(2), np.zeros((2, OBS)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="reward has shape"):
        store.add(np.zeros((2, OBS)), np.zeros((2, ACT)), np.zeros(3), np.zeros((2, OBS)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="no online part"):
        _offline_store(capacity=0).add(**_online_rows(0, 1))


# ----------------------------------------------------------------------- save/load
def test_save_load_round_trip_is_exact_and_resumes_identically(tmp_path: Path) -> None:
    store = _offline_store(capacity=7, reward_scaling="std", gamma=0.97)
    store.add(**_online_rows(0, 10))  # wrapped once: cursor 3
    path = store.save(tmp_path / "replay")
    loaded = ReplayStore.load(path)
    assert (loaded.offline_size, loaded.online_size, loaded.online_cursor, loaded.online_added) == (
        store.offline_size, 7, 3, 10,
    )
    assert loaded.config == store.config and loaded.metadata == store.metadata
    assert loaded.normalization == store.normalization
    for name in ("obs", "action", "reward", "next_obs", "terminated", "truncated", "mc_return"):
        assert torch.equal(getattr(loaded, name).nan_to_num(), getattr(store, name).nan_to_num()), name

    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        for x, y in zip(store.sample(32, 0.5, generator=g1), loaded.sample(32, 0.5, generator=g2)):
            assert torch.equal(x.nan_to_num(), y.nan_to_num())
    # Training continues the same way after the resume.
    for target in (store, loaded):
        target.add(**_online_rows(10, 4))
    assert loaded.online_cursor == store.online_cursor == 0
    assert torch.equal(loaded.reward, store.reward)


def test_save_writes_only_stored_rows_and_replaces_atomically(tmp_path: Path) -> None:
    store = _offline_store(capacity=1000)
    store.add(**_online_rows(0, 2))
    path = store.save(tmp_path / "replay")
    assert np.load(path / "obs.npy").shape == (store.offline_size + 2, OBS)
    store.add(**_online_rows(2, 1))
    store.save(path)  # over an existing save
    assert ReplayStore.load(path).online_size == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay"]


def test_load_reports_broken_saves(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="replay.json"):
        ReplayStore.load(tmp_path / "nothing")
    path = _offline_store(capacity=4).save(tmp_path / "replay")
    np.save(path / "reward.npy", np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="reward.npy"):
        ReplayStore.load(path)
    header = json.loads((path / "replay.json").read_text())
    del header["online_cursor"]
    (path / "replay.json").write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match="incomplete"):
        ReplayStore.load(path)


def test_empty_store_round_trip(tmp_path: Path) -> None:
    store = ReplayStore.empty(OBS, ACT, online_capacity=3)
    loaded = ReplayStore.load(store.save(tmp_path / "empty"))
    assert len(loaded) == 0 and loaded.normalization is None and loaded.online_capacity == 3


def test_empty_dataset_is_a_data_error() -> None:
    from dime_offline.data.schema import empty_like_schema

    with pytest.raises(DataError, match="empty"):
        ReplayStore.from_transitions(empty_like_schema(OBS, ACT), file="none.parquet")


def test_episode_structure_errors_name_the_row() -> None:
    data = build_transitions([3, 3])
    data.step[4] = 7
    with pytest.raises(SchemaError) as info:
        ReplayStore.from_transitions(data)
    assert info.value.row == 4


def test_returns_use_the_store_gamma() -> None:
    data = build_transitions([4, 2], [False, True])
    store = ReplayStore.from_transitions(data, gamma=0.5, online_capacity=0)
    ends = episode_ends_from_ids(data.episode_id)
    np.testing.assert_allclose(
        store.mc_return.numpy(), discounted_returns_to_go(data.reward, ends, data.terminated, 0.5), rtol=1e-6
    )


# ------------------------------------------------------------ online returns-to-go
@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 15),
    episodes=st.lists(st.tuples(st.integers(1, 9), st.sampled_from(["terminated", "truncated"])), min_size=1, max_size=6),
    running=st.integers(0, 5),
    chunk=st.integers(1, 7),
    tail=st.sampled_from(["zero", "repeat_last_reward", "lower"]),
)
def test_online_rows_get_returns_when_their_episode_ends(
    capacity: int, episodes: list[tuple[int, str]], running: int, chunk: int, tail: str
) -> None:
    """Every stored row of a finished online episode holds the return-to-go of the whole episode (however
    the rows were added and whatever the ring overwrote); rows of the running episode stay NaN."""
    gamma = 0.9
    store = ReplayStore.from_transitions(build_transitions([3]), online_capacity=capacity, gamma=gamma, truncation=tail)
    lengths = [k for k, _ in episodes] + ([running] if running else [])
    kinds = [kind for _, kind in episodes] + (["running"] if running else [])
    n = sum(lengths)
    reward = np.random.default_rng(n).normal(size=n).astype(np.float32)
    terminated, truncated = np.zeros(n, bool), np.zeros(n, bool)
    ends = np.cumsum(lengths) - 1
    for end, kind in zip(ends, kinds):
        terminated[end], truncated[end] = kind == "terminated", kind == "truncated"
    obs = np.zeros((n, OBS), np.float32)
    obs[:, 0] = ONLINE_MARK - np.arange(n)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        store.add(obs[lo:hi], np.zeros((hi - lo, ACT), np.float32), reward[lo:hi], obs[lo:hi], terminated[lo:hi], truncated[lo:hi])
    finished = [k for k, kind in zip(lengths, kinds) if kind != "running"]
    expected = np.full(n, np.nan)
    expected[: sum(finished)] = direct_returns_to_go(
        reward[: sum(finished)], finished, [kind == "terminated" for kind in kinds[: len(finished)]], gamma, tail
    )
    kept = np.arange(max(0, n - capacity), n)  # the ring keeps the newest rows
    slots = store.offline_size + kept % capacity
    np.testing.assert_allclose(store.mc_return[slots].numpy(), expected[kept], rtol=1e-5, atol=1e-5)
    horizon = store.mc_horizon[slots].numpy()
    assert np.array_equal(np.isnan(horizon), np.isnan(expected[kept]))
    assert store.mc_return[: store.offline_size].isfinite().all()  # the offline part is untouched
    if finished:  # the last finished episode's highest return-to-go among the rows the ring held when it ended
        last = np.arange(sum(finished) - finished[-1], sum(finished))
        added_by_then = min(n, (last[-1] // chunk + 1) * chunk)  # the end of the chunk that ended it
        last = last[last >= added_by_then - capacity]
        top = store.last_episode_top_return
        assert np.isnan(top) if last.size == 0 else top == pytest.approx(expected[last].max(), abs=1e-5)
    else:
        assert np.isnan(store.last_episode_top_return)


def test_horizon_counts_the_discounted_steps_after_each_row() -> None:
    store = ReplayStore.from_transitions(build_transitions([3, 2], [True, False]), online_capacity=0, gamma=0.5)
    # Terminated: 0.5 + 0.25 after the first row, 0.5 after the second, nothing after the last;
    # truncated: the value runs on past the cut, gamma / (1 - gamma) = 1 after every row.
    np.testing.assert_allclose(store.mc_horizon.numpy(), [0.75, 0.5, 0.0, 1.0, 1.0])


def test_a_ring_that_never_wrapped_moves_into_a_larger_one_and_a_wrapped_one_does_not() -> None:
    full = _offline_store(capacity=6)
    full.add(**_online_rows(0, 6))  # exactly full: its cursor is back at slot 0
    larger = _offline_store(capacity=9)
    larger.load_online_state(full.online_state())
    assert (larger.online_size, larger.online_cursor, larger.online_added) == (6, 6, 6)
    larger.add(**_online_rows(6, 2))  # appended after the six, nothing overwritten
    both = _offline_store(capacity=9)
    both.add(**_online_rows(0, 8))
    online = slice(both.offline_size, both.offline_size + 8)
    assert torch.equal(larger.obs[online], both.obs[online])
    torch.testing.assert_close(larger.mc_return[online], both.mc_return[online], equal_nan=True)  # returns filled alike
    full.add(**_online_rows(6, 1))  # wrapped: slot order is no longer time order
    with pytest.raises(ValueError, match="wrapped at 6 rows; this store's ring holds 9"):
        _offline_store(capacity=9).load_online_state(full.online_state())
