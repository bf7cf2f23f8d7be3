"""Rollout evaluation, episode statistics and D4RL-normalised scores."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from dime_offline.data.schema import DatasetMetadata
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.make import make_env
from dime_offline.envs.pi_controller import PIController
from dime_offline.evaluation.metrics import (
    D4RL_REFERENCE_RETURNS,
    EpisodeStats,
    env_family,
    normalized_score,
    reference_returns,
)
from dime_offline.evaluation.rollout import evaluate
from dime_offline.types import Policy

STAGGERED_ID = "DimeTest/Staggered-v0"
STAGGERED_LIMIT = 6


class StaggeredEnv(gym.Env[np.ndarray, np.ndarray]):
    """A 2-D state with a 1-D action in [0, 4] (the reward); the episode started by
    ``reset(seed=s)`` ends in a true terminal state after ``s % 4 + 3`` steps (3, 4, 5 or 6; an
    unseeded reset draws one), so with the registered time limit of 6 the 6-step episodes are
    both terminated and truncated at once. The length depends on the seed alone, not on how often
    the instance was reset, so one env per episode and one env for all episodes agree."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-10.0, 10.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(0.0, 4.0, shape=(1,), dtype=np.float32)
        self._t = 0
        self._length = 3

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        self._length = (seed if seed is not None else int(self.np_random.integers(4))) % 4 + 3
        return self._obs(), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        self._t += 1
        return self._obs(), float(np.asarray(action).reshape(-1)[0]), self._t >= self._length, False, {}

    def _obs(self) -> np.ndarray:
        return np.array([self._t, self._length + self.np_random.uniform(-0.1, 0.1)], dtype=np.float32)


if STAGGERED_ID not in gym.registry:
    gym.register(id=STAGGERED_ID, entry_point=StaggeredEnv, max_episode_steps=STAGGERED_LIMIT)


class ConstantPolicy:
    """Always the same action; records each call's batch size and deterministic flag."""

    def __init__(self, value: float, act_dim: int = 1) -> None:
        self.value = value
        self.act_dim = act_dim
        self.deterministic_flags: list[bool] = []
        self.batch_sizes: list[int] = []

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        assert obs.ndim == 2 and obs.dtype == np.float32
        self.deterministic_flags.append(deterministic)
        self.batch_sizes.append(obs.shape[0])
        return np.full((obs.shape[0], self.act_dim), self.value, dtype=np.float32)


class LinearPolicy:
    """tanh(obs @ W): a deterministic function of the observation row alone; counts its calls."""

    def __init__(self, obs_dim: int, act_dim: int, scale: float = 0.5, seed: int = 0) -> None:
        weights = np.random.default_rng(seed).normal(size=(obs_dim, act_dim)) * scale / np.sqrt(obs_dim)
        self.weights = weights.astype(np.float32)
        self.calls = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        self.calls += 1
        # Row by row: a (B, O) product's kernel, and so its last bits, can depend on B (it does with
        # OpenBLAS on AVX2 CPUs), and the protocols must get the same action for the same row.
        return np.stack([np.tanh(row @ self.weights) for row in obs])


def sequential_reference(policy: Policy, env_id: str, n_episodes: int, seed: int, **kwargs: Any) -> EpisodeStats:
    """The one-by-one protocol: one env, episode i from reset(seed=seed + i), one (1, O) call per step."""
    env = make_env(env_id, **kwargs)
    returns, lengths, terminals = [], [], []
    try:
        for episode in range(n_episodes):
            obs, _ = env.reset(seed=seed + episode)
            total, steps, terminated, truncated = 0.0, 0, False, False
            while not (terminated or truncated):
                action = policy.act(np.asarray(obs, dtype=np.float32)[None], deterministic=True)[0]
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                steps += 1
            returns.append(total)
            lengths.append(steps)
            terminals.append(bool(terminated))
    finally:
        env.close()
    return EpisodeStats(tuple(returns), tuple(lengths), tuple(terminals))


def test_evaluate_runs_whole_episodes_and_reports_their_returns() -> None:
    # Staggered episodes from seeds 0..3 last 3, 4, 5 then 6 steps; reward = action in env units ([0, 4]).
    policy = ConstantPolicy(0.5)  # -> 3.0 in env units
    stats = evaluate(policy, STAGGERED_ID, n_episodes=4, seed=0)
    assert stats.lengths == (3, 4, 5, 6)
    assert stats.returns == pytest.approx((9.0, 12.0, 15.0, 18.0))
    assert stats.terminated == (True, True, True, True)
    assert stats.return_mean == pytest.approx(13.5)
    assert stats.return_std == pytest.approx(np.std([9.0, 12.0, 15.0, 18.0]))
    assert (stats.return_min, stats.return_max) == (9.0, 18.0)
    assert stats.normalized_score is None
    assert policy.deterministic_flags and not any(policy.deterministic_flags)  # stochastic by default


def test_episodes_step_together_one_policy_call_per_vector_step() -> None:
    policy = ConstantPolicy(0.5)
    evaluate(policy, STAGGERED_ID, n_episodes=4, seed=0)
    # all four rows at every step (finished ones ignored), until the longest episode (6 steps) ends
    assert policy.batch_sizes == [4] * 6
    waves = ConstantPolicy(0.5)
    stats = evaluate(waves, STAGGERED_ID, n_episodes=4, seed=0, max_parallel=3)
    assert stats.lengths == (3, 4, 5, 6)
    assert waves.batch_sizes == [3] * 5 + [1] * 6  # seeds 0-2 (longest 5 steps), then seed 3 alone


@pytest.mark.mujoco
@pytest.mark.filterwarnings("ignore:.*Hopper-v4 is out of date:DeprecationWarning")
def test_batched_episodes_equal_the_one_by_one_protocol() -> None:
    # A fixed linear policy on Hopper: some episodes fall (terminated) before the time limit.
    policy = LinearPolicy(11, 3, seed=2)
    expected = sequential_reference(policy, "Hopper-v4", 6, seed=0, max_episode_steps=27)
    assert len(set(expected.lengths)) > 1 and any(expected.terminated) and not all(expected.terminated)
    policy.calls = 0
    stats = evaluate(policy, "Hopper-v4", 6, seed=0, deterministic=True, max_episode_steps=27)
    assert (stats.returns, stats.lengths, stats.terminated) == (expected.returns, expected.lengths, expected.terminated)
    assert stats.references == D4RL_REFERENCE_RETURNS["hopper"]
    assert policy.calls == max(expected.lengths)  # one call per vector step, not one per env step
    # waves of 4 + 2 episodes and one-by-one evaluation run the same episodes
    for cap in (4, 1):
        policy.calls = 0
        waves = evaluate(policy, "Hopper-v4", 6, seed=0, deterministic=True, max_episode_steps=27, max_parallel=cap)
        assert (waves.returns, waves.lengths, waves.terminated) == (stats.returns, stats.lengths, stats.terminated)
        assert policy.calls == sum(max(expected.lengths[i:i + cap]) for i in range(0, 6, cap))


def test_per_row_memory_is_reset_for_each_wave_and_stays_aligned() -> None:
    # The PI controller keeps the previous temperature per row; batched, each row must stay its episode.
    pi = PIController(seed=0)
    expected = []
    for i in range(3):
        pi.reset()
        expected.append(sequential_reference(pi, CSTR_ENV_ID, 1, seed=10 + i, max_episode_steps=30))
    evaluate(pi, CSTR_ENV_ID, 2, seed=99, deterministic=True, max_episode_steps=30)  # leave stale memory behind
    for cap in (3, 2):
        stats = evaluate(pi, CSTR_ENV_ID, 3, seed=10, deterministic=True, max_episode_steps=30, max_parallel=cap)
        assert stats.returns == tuple(e.returns[0] for e in expected) and stats.lengths == (30, 30, 30)


def test_a_one_row_policy_is_refused_in_batches_and_runs_one_by_one() -> None:
    class OneRow:
        def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
            return np.zeros((1, 1), np.float32)

    with pytest.raises(ValueError, match="max_parallel=1"):
        evaluate(OneRow(), "Pendulum-v1", n_episodes=2, max_episode_steps=5)
    assert evaluate(OneRow(), "Pendulum-v1", n_episodes=2, max_episode_steps=5, max_parallel=1).lengths == (5, 5)


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


def test_n_episodes_and_max_parallel_must_be_positive() -> None:
    with pytest.raises(ValueError):
        evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=0)
    with pytest.raises(ValueError):
        evaluate(ConstantPolicy(0.0), "Pendulum-v1", n_episodes=1, max_parallel=0)


def test_time_at_action_bounds_and_per_episode_figures_are_reported() -> None:
    saturated = evaluate(ConstantPolicy(1.0), STAGGERED_ID, n_episodes=2, seed=0)
    inside = evaluate(ConstantPolicy(0.5), STAGGERED_ID, n_episodes=2, seed=0)
    assert saturated.at_bounds == (1.0, 1.0) and inside.at_bounds == (0.0, 0.0)
    summary = saturated.to_dict()
    assert summary["time_at_action_bounds"] == 1.0
    assert summary["episode_lengths"] == [3, 4] and summary["episode_terminated"] == [True, True]
    assert summary["episode_returns"] == pytest.approx(list(saturated.returns))
    assert "eval/episode_returns" not in saturated.to_metrics() and saturated.to_metrics()["eval/time_at_action_bounds"] == 1.0
