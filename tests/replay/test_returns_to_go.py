"""Vectorised returns-to-go against a direct per-episode Python loop."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dime_offline.data.returns import LoggedEpisodes, discounted_returns_to_go, episode_ends_from_ids, value_support
from replay_factories import direct_returns_to_go


def _ends(lengths: list[int]) -> np.ndarray:
    ends = np.zeros(sum(lengths), dtype=bool)
    ends[np.cumsum(lengths) - 1] = True
    return ends


def _terminated(lengths: list[int], terminal: list[bool]) -> np.ndarray:
    flags = np.zeros(sum(lengths), dtype=bool)
    flags[np.cumsum(lengths) - 1] = terminal
    return flags


@settings(max_examples=150, deadline=None)
@given(
    episodes=st.lists(st.tuples(st.integers(1, 40), st.booleans()), min_size=1, max_size=12),
    gamma=st.floats(0.0, 0.999),
    tail=st.sampled_from(["zero", "repeat_last_reward", "lower"]),
    seed=st.integers(0, 2**16),
)
def test_matches_direct_computation(episodes: list[tuple[int, bool]], gamma: float, tail: str, seed: int) -> None:
    lengths = [k for k, _ in episodes]
    terminal = [t for _, t in episodes]
    reward = np.random.default_rng(seed).normal(size=sum(lengths)).astype(np.float32)
    got = discounted_returns_to_go(reward, _ends(lengths), _terminated(lengths, terminal), gamma, truncation=tail)  # type: ignore[arg-type]
    expected = direct_returns_to_go(reward, lengths, terminal, gamma, tail)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


def test_one_step_episodes_are_their_reward() -> None:
    reward = np.array([1.0, -2.0, 3.0], dtype=np.float32)
    ends = np.ones(3, dtype=bool)
    terminated = np.array([True, False, True])
    np.testing.assert_array_equal(discounted_returns_to_go(reward, ends, terminated, 0.9), reward)
    # A truncated one-step episode under repeat_last_reward becomes r / (1 - gamma).
    got = discounted_returns_to_go(reward, ends, terminated, 0.9, truncation="repeat_last_reward")
    np.testing.assert_allclose(got, [1.0, -20.0, 3.0])


def test_gamma_one_is_the_undiscounted_reward_to_go() -> None:
    reward = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    ends = np.array([False, False, True, False, True])
    got = discounted_returns_to_go(reward, ends, ends, 1.0)
    np.testing.assert_array_equal(got, [6, 5, 3, 9, 5])


def test_nothing_leaks_across_episode_boundaries() -> None:
    reward = np.array([0.0, 0.0, 100.0], dtype=np.float32)
    ends = np.array([False, True, True])
    got = discounted_returns_to_go(reward, ends, np.zeros(3, bool), 0.99)
    np.testing.assert_array_equal(got[:2], [0.0, 0.0])


def test_long_single_episode_stays_accurate() -> None:
    n = 100_000
    reward = np.ones(n, dtype=np.float32)
    ends = np.zeros(n, dtype=bool)
    ends[-1] = True
    got = discounted_returns_to_go(reward, ends, ends, 0.99)
    expected = (1.0 - 0.99 ** np.arange(n, 0, -1)) / (1.0 - 0.99)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_rejects_bad_input() -> None:
    reward = np.zeros(3, dtype=np.float32)
    with pytest.raises(ValueError, match="last row"):
        discounted_returns_to_go(reward, np.array([True, False, False]), np.zeros(3, bool), 0.9)
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns_to_go(reward, np.ones(3, bool), np.zeros(3, bool), 1.5)
    with pytest.raises(ValueError, match="gamma < 1"):
        discounted_returns_to_go(reward, np.ones(3, bool), np.zeros(3, bool), 1.0, truncation="repeat_last_reward")
    with pytest.raises(ValueError, match="truncation"):
        discounted_returns_to_go(reward, np.ones(3, bool), np.zeros(3, bool), 0.9, truncation="bootstrap")  # type: ignore[arg-type]


def test_episode_ends_from_ids() -> None:
    ids = np.array([4, 4, 7, 9, 9, 9], dtype=np.int64)
    np.testing.assert_array_equal(episode_ends_from_ids(ids), [False, True, True, False, False, True])
    assert episode_ends_from_ids(np.zeros(0, np.int64)).shape == (0,)


def test_lower_tail_is_the_lower_of_zero_and_the_repeated_reward() -> None:
    reward = np.array([2.0, -3.0, 5.0, -1.0], dtype=np.float32)
    ends = np.ones(4, dtype=bool)
    terminated = np.array([False, False, True, True])
    got = discounted_returns_to_go(reward, ends, terminated, 0.9, truncation="lower")
    # Cut with a positive last reward: zero tail; cut with a negative one: r / (1 - gamma); terminal rows: r.
    np.testing.assert_allclose(got, [2.0, -30.0, 5.0, -1.0])


def test_value_support_covers_returns_and_held_rewards_with_a_margin() -> None:
    returns = np.array([-50.0, -10.0, 20.0])
    reward = np.array([-2.0, 0.5])
    low, high = value_support(returns, reward, 0.9, margin=0.25)
    # Core: [min(-50, -2 / 0.1), max(20, 0.5 / 0.1)] = [-50, 20], width 70, 17.5 added at each end.
    assert (low, high) == pytest.approx((-67.5, 37.5))
    # Positive data still keeps 0 (a terminal step's value) inside.
    low, high = value_support(np.array([5.0, 9.0]), np.array([0.1, 0.2]), 0.5, margin=0.0)
    assert (low, high) == pytest.approx((0.0, 9.0))
    with pytest.raises(ValueError, match="margin"):
        value_support(returns, reward, 0.9, margin=-1.0)


def test_a_terminal_reward_enters_the_support_once() -> None:
    """A trip's penalty is earned once: the floor is the other rewards held for ever plus it, not it for ever."""
    returns = np.array([-30.0, -100.0])
    reward = np.array([-1.0, -2.0, -100.0])
    terminated = np.array([False, False, True])
    # -2 / 0.1 held for ever, then -100 once: -120 (without the mask: -100 / 0.1 = -1000).
    assert value_support(returns, reward, 0.9, margin=0.0, terminated=terminated) == pytest.approx((-120.0, 0.0))
    assert value_support(returns, reward, 0.9, margin=0.0) == pytest.approx((-1000.0, 0.0))
    # A positive terminal bonus raises the ceiling once: 0.5 / 0.1 + 3.
    up = value_support(np.array([1.0]), np.array([0.5, 3.0]), 0.9, margin=0.0, terminated=np.array([False, True]))
    assert up == pytest.approx((0.0, 8.0))


def test_value_support_without_held_rewards_is_the_returns_range() -> None:
    returns, reward = np.array([-3.0, -1.0, 2.0]), np.array([-5.0, 1.0, 0.5])
    assert value_support(returns, reward, 0.9, margin=0.0, hold_rewards=False) == pytest.approx((-3.0, 2.0))
    assert value_support(returns, reward, 0.9, margin=0.5, hold_rewards=False) == pytest.approx((-5.5, 4.5))
    assert value_support(returns, reward, 0.9, margin=0.0) == pytest.approx((-50.0, 10.0))  # held for ever



def test_logged_episodes_compare_only_as_many_steps_of_episodes_that_ran_that_long_or_ended() -> None:
    # four episodes: 5 steps cut by the log's end, 3 steps terminated, 6 steps truncated, 4 steps truncated
    lengths = [5, 3, 6, 4]
    reward = np.concatenate([np.full(5, 10.0), np.full(3, 2.0), np.arange(6, dtype=float), np.full(4, 9.0)])
    terminated = np.zeros(18, dtype=bool)
    terminated[7] = True  # the second episode's last row
    logged = LoggedEpisodes.from_rows(reward, _ends(lengths), terminated)
    np.testing.assert_array_equal(logged.lengths, lengths)
    np.testing.assert_array_equal(logged.starts, [0, 5, 8, 14])
    np.testing.assert_array_equal(logged.terminated, [False, True, False, False])
    np.testing.assert_allclose(logged.returns, [50.0, 6.0, 15.0, 36.0])
    # over 6 steps only the terminated episode and the 6-step one count: 6 against 0+1+...+5 = 15
    assert logged.best_return(reward, 6) == 15.0
    # over 4 steps the first, third and fourth count with their first 4 rewards: 40, 0+1+2+3, 36
    assert logged.best_return(reward, 4) == 40.0
    # over 7 steps nothing ran that long: the terminated one alone
    assert logged.best_return(reward, 7) == 6.0
    unterminated = LoggedEpisodes.from_rows(reward, _ends(lengths), np.zeros(18, dtype=bool))
    assert unterminated.best_return(reward, 7) is None
