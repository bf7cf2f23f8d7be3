"""Rollout evaluation, episode statistics and D4RL-normalised scores."""

from __future__ import annotations

import numpy as np
import pytest
import trainer_factories as tf

from dime_offline.data.schema import DatasetMetadata
from dime_offline.evaluation.metrics import (
    D4RL_REFERENCE_RETURNS,
    EpisodeStats,
    env_family,
    normalized_score,
    reference_returns,
)
from dime_offline.evaluation.rollout import evaluate


class ConstantPolicy:
    """Always the same action; records whether it was asked for deterministic actions."""

    def __init__(self, value: float, act_dim: int = 1) -> None:
        self.value = value
        self.act_dim = act_dim
        self.deterministic_flags: list[bool] = []

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        assert obs.ndim == 2 and obs.shape[0] == 1 and obs.dtype == np.float32
        self.deterministic_flags.append(deterministic)
        return np.full((1, self.act_dim), self.value, dtype=np.float32)


def test_evaluate_runs_whole_episodes_and_reports_their_returns() -> None:
    # Countdown episodes last 3, 4, 5 then 6 steps; reward = action in env units ([0, 4]).
    policy = ConstantPolicy(0.5)  # -> 3.0 in env units
    stats = evaluate(policy, tf.COUNTDOWN_ID, n_episodes=4, seed=0)
    assert stats.lengths == (3, 4, 5, 6)
    assert stats.returns == pytest.approx((9.0, 12.0, 15.0, 18.0))
    assert stats.terminated == (True, True, True, True)
    assert stats.return_mean == pytest.approx(13.5)
    assert stats.return_std == pytest.approx(np.std([9.0, 12.0, 15.0, 18.0]))
    assert (stats.return_min, stats.return_max) == (9.0, 18.0)
    assert stats.normalized_score is None
    assert policy.deterministic_flags and not any(policy.deterministic_flags)  # stochastic by default


def test_time_limit_episodes_are_not_counted_as_terminated() -> None:
    stats = evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=2, seed=5, max_episode_steps=20, deterministic=True)
    assert stats.lengths == (20, 20) and stats.terminated == (False, False)
    again = evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=2, seed=5, max_episode_steps=20)
    assert again.returns == stats.returns  # same seeds, same start states
    other = evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=2, seed=6, max_episode_steps=20)
    assert other.returns != stats.returns


def test_d4rl_reference_returns_and_normalised_scores() -> None:
    assert env_family("HalfCheetah-v4") == env_family("HalfCheetah-v5") == "halfcheetah"
    assert env_family("dime_offline/CSTR-v0") == "cstr"
    assert reference_returns("Hopper-v4") == D4RL_REFERENCE_RETURNS["hopper"] == (-20.272305, 3234.3)
    assert reference_returns("Pendulum-v1") is None
    low, high = D4RL_REFERENCE_RETURNS["halfcheetah"]
    assert normalized_score(low, (low, high)) == 0.0
    assert normalized_score(high, (low, high)) == pytest.approx(100.0)
    assert normalized_score(1000.0, (low, high)) == pytest.approx(100 * (1000 + 280.178953) / (12135 + 280.178953))
    # the dataset's own references win over the table
    meta = DatasetMetadata(ref_min_score=0.0, ref_max_score=50.0)
    assert reference_returns("Hopper-v4", meta) == (0.0, 50.0)
    stats = EpisodeStats(returns=(10.0, 30.0), lengths=(5, 5), terminated=(False, False), references=(0.0, 50.0))
    assert stats.normalized_score == pytest.approx(40.0)
    assert stats.normalized_score_std == pytest.approx(20.0)
    block = stats.to_dict()
    assert block["normalized_score"] == pytest.approx(40.0) and block["episodes"] == 2
    assert stats.to_metrics()["eval/return_mean"] == 20.0
    assert "eval/normalized_score" not in EpisodeStats((1.0,), (1,), (False,)).to_metrics()


def test_n_episodes_must_be_positive() -> None:
    with pytest.raises(ValueError):
        evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=0)
