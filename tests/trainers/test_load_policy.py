"""`load_policy`: a run's policy as a function from raw observations to actions in env units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trainer_factories as tf

from dime_offline import load_policy
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.trainers.online import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("policy") / "run"
    finetune(FinetuneConfig(
        env_id="Pendulum-v1", steps=120, out_dir=str(out), agent=dict(tf.TINY_AGENT), eval_every=0, eval_episodes=1,
        log_every=60, max_episode_steps=50, tensorboard=False, quiet=True,
    ))
    return out


def test_actions_come_out_in_env_units_for_one_observation_or_a_batch(run_dir: Path) -> None:
    policy = load_policy(run_dir)
    assert policy.env_id == "Pendulum-v1" and policy.spaces.obs_dim == 3
    obs = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32)
    actions = policy(obs)
    assert actions.shape == (64, 1) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 2.0)  # Pendulum's torque bounds, not the policy's [-1, 1]
    unit = policy.act(obs)  # the same deterministic chain in [-1, 1]
    np.testing.assert_allclose(actions, 2.0 * unit, rtol=1e-6, atol=1e-6)
    assert policy(obs[0]).shape == (1,)


def test_deterministic_means_deterministic_and_stochastic_replays_with_its_seed(run_dir: Path) -> None:
    obs = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32)
    policy = load_policy(run_dir)
    np.testing.assert_array_equal(policy(obs), policy(obs))
    first, second = load_policy(run_dir, deterministic=False, seed=5), load_policy(run_dir, deterministic=False, seed=5)
    a, b = first(obs), second(obs)
    np.testing.assert_array_equal(a, b)  # the same seed replays the same actions
    assert not np.array_equal(a, first(obs))  # and the chain is stochastic
    assert not np.array_equal(a, load_policy(run_dir, deterministic=False, seed=6)(obs))


def test_bad_observations_and_paths_are_one_line_errors(run_dir: Path, tmp_path: Path) -> None:
    policy = load_policy(run_dir)
    with pytest.raises(ConfigError, match=r"expects \(3,\)"):
        policy(np.zeros(4, np.float32))
    with pytest.raises(ConfigError, match="NaN"):
        policy(np.array([0.0, np.nan, 1.0], np.float32))
    with pytest.raises(CheckpointError):
        load_policy(tmp_path / "nothing-here")
    with pytest.raises(ConfigError, match="device"):
        load_policy(run_dir, device="tpu9")
