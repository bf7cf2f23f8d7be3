"""benchmarks/ope_coverage.py: its logged data is valid canonical data and its true values are right."""

from __future__ import annotations

import numpy as np
import pytest
from benchmark_scripts import load

coverage = load("ope_coverage")


def test_logged_episodes_are_valid_truncated_episodes_rewarded_minus_x_squared() -> None:
    task = coverage.Task(noise=0.1, gamma=0.9, episodes=5, length=7)
    data = task.logged(seed=3)
    data.validate()
    assert len(data.reward) == 35 and list(data.episode_starts()) == [0, 7, 14, 21, 28]
    assert data.truncated.sum() == 5 and not data.terminated.any()
    np.testing.assert_allclose(data.reward, -np.square(data.obs[:, 0]), rtol=1e-6)
    # Each step moves by the action's 0.2 plus the noise: consecutive rows chain.
    same_episode = np.diff(data.episode_id) == 0
    np.testing.assert_array_equal(data.next_obs[:-1][same_episode], data.obs[1:][same_episode])
    assert not np.array_equal(task.logged(seed=4).obs, data.obs)


def test_true_values_match_closed_forms_and_rank_the_controllers() -> None:
    # gamma 0: the value is E[-x_0^2] for x_0 ~ U(-2, 2), i.e. -4/3.
    value, se = coverage.Task(noise=0.1, gamma=0.0, episodes=1, length=1).true_value(2.0, rollouts=200_000, horizon=5, seed=0)
    assert value == pytest.approx(-4.0 / 3.0, abs=4 * se) and se < 0.01
    # From given initial states, each equally often: -(1 + 4) / 2 at gamma 0.
    given = coverage.Task(noise=0.1, gamma=0.0, episodes=1, length=1).true_value(
        2.0, rollouts=10, horizon=5, seed=0, initial=np.array([1.0, 2.0], np.float32))
    assert given == (pytest.approx(-2.5), pytest.approx(1.5 / np.sqrt(10)))
    task = coverage.Task(noise=0.1, gamma=0.9, episodes=1, length=1)
    values = [task.true_value(gain, rollouts=20_000, horizon=100, seed=1)[0] for gain in coverage.GAINS.values()]
    assert values[0] > values[1] > values[2]  # steering to 0 harder is better; steering away is worst
