"""collect: flags exactly as gymnasium reports them, env-unit actions, metadata, checkpoint policies."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trainer_factories as tf

from dime_offline.checkpoints import save_checkpoint
from dime_offline.data.parquet import read_parquet
from dime_offline.envs.make import make_env, spaces_of
from dime_offline.errors import ConfigError, EnvironmentMismatchError
from dime_offline.evaluation.metrics import D4RL_REFERENCE_RETURNS
from dime_offline.trainers.collect import CollectConfig, collect


def _collect(tmp_path: Path, **kwargs) -> tuple:
    cfg = CollectConfig(out=str(tmp_path / "d.parquet"), quiet=True, **kwargs)
    result = collect(cfg)
    data, _ = read_parquet(result.out)
    data.validate()
    return result, data


def test_flags_follow_gymnasium_and_the_cut_episode_is_truncated(tmp_path: Path) -> None:
    # Countdown episodes terminate after 3, 4, 5, 6, 3, ... steps, counted over resets (make_env's
    # seeding reset takes the first); the time limit is 6, so the 6-step episode is flagged
    # terminated *and* truncated by gymnasium: it is stored as terminated.
    result, data = _collect(tmp_path, env_id=tf.COUNTDOWN_ID, steps=20)
    lengths = data.episode_lengths().tolist()
    assert lengths == [4, 5, 6, 3, 2]
    ends = np.cumsum(lengths) - 1
    assert data.terminated[ends].tolist() == [True, True, True, True, False]
    assert data.truncated[ends].tolist() == [False, False, False, False, True]  # the budget cut the last one
    assert data.terminated.sum() == 4 and data.truncated.sum() == 1
    assert result.episodes == 5 and result.completed.episodes == 4
    assert result.to_dict()["dataset_episodes"] == 5


def test_a_shorter_time_limit_gives_truncated_episodes(tmp_path: Path) -> None:
    _, data = _collect(tmp_path, env_id=tf.COUNTDOWN_ID, steps=15, max_episode_steps=4)
    lengths = data.episode_lengths().tolist()
    assert lengths == [4, 4, 4, 3]  # episodes of 5 and 6 steps are cut at 4
    ends = np.cumsum(lengths) - 1
    assert data.terminated[ends].tolist() == [True, False, False, True]
    # the last episode ended on its own exactly at the budget: not marked truncated
    assert data.truncated[ends].tolist() == [False, True, True, False]


def test_actions_are_stored_in_env_units_with_bounds_and_rewards_that_match(tmp_path: Path) -> None:
    _, data = _collect(tmp_path, env_id=tf.COUNTDOWN_ID, steps=40, seed=3)
    meta = data.metadata
    assert (meta.action_low, meta.action_high) == ([0.0], [4.0])
    assert meta.env_id == tf.COUNTDOWN_ID and meta.ref_min_score is None
    assert meta.extra["collect"]["policy"] == "random"
    assert data.action.min() >= 0.0 and data.action.max() <= 4.0
    assert data.action.max() > 2.5 and data.action.min() < 1.5  # the whole range, not [-1, 1]
    np.testing.assert_allclose(data.reward, data.action[:, 0])  # Countdown's reward is the applied action
    # continuity inside episodes: next_obs is the next row's obs
    same = data.episode_id[1:] == data.episode_id[:-1]
    np.testing.assert_array_equal(data.next_obs[:-1][same], data.obs[1:][same])


def test_same_seed_same_dataset_and_noise_changes_checkpoint_actions(tmp_path: Path) -> None:
    _, first = _collect(tmp_path / "a", env_id="Pendulum-v1", steps=30, seed=1)
    _, second = _collect(tmp_path / "b", env_id="Pendulum-v1", steps=30, seed=1)
    np.testing.assert_array_equal(first.action, second.action)
    np.testing.assert_array_equal(first.obs, second.obs)
    meta = first.metadata
    assert meta.obs_low == [-1.0, -1.0, -8.0] and meta.action_high == [2.0]

    env = make_env("Pendulum-v1")
    agent = tf.tiny_agent(3, 1)
    save_checkpoint(tmp_path / "ckpt", agent, agent.cfg, None, spaces=spaces_of(env), env_id="Pendulum-v1")
    _, plain = _collect(tmp_path / "c", env_id="Pendulum-v1", steps=30, seed=1, policy=str(tmp_path / "ckpt"))
    _, noisy = _collect(tmp_path / "d", env_id="Pendulum-v1", steps=30, seed=1, policy=str(tmp_path / "ckpt"), action_noise=0.5)
    assert not np.allclose(plain.action, noisy.action)
    assert np.all(np.abs(noisy.action) <= 2.0)


def test_d4rl_reference_returns_travel_with_mujoco_datasets(tmp_path: Path) -> None:
    result, data = _collect(tmp_path, env_id="Hopper-v5", steps=300)
    low, high = D4RL_REFERENCE_RETURNS["hopper"]
    assert (data.metadata.ref_min_score, data.metadata.ref_max_score) == (low, high)
    assert data.terminated.any()  # random actions make the hopper fall: true terminal states
    assert result.completed.normalized_score == pytest.approx(100 * (result.completed.return_mean - low) / (high - low))


def test_a_checkpoint_for_another_env_is_refused(tmp_path: Path) -> None:
    agent = tf.tiny_agent(3, 1)
    spaces = spaces_of(make_env("Pendulum-v1"))
    save_checkpoint(tmp_path / "ckpt", agent, agent.cfg, None, spaces=spaces, env_id="Pendulum-v1")
    with pytest.raises(EnvironmentMismatchError, match="observation dim 2, expected 3"):
        collect(CollectConfig(env_id="MountainCarContinuous-v0", policy=str(tmp_path / "ckpt"), steps=5,
                              out=str(tmp_path / "x.parquet"), quiet=True))
    assert not (tmp_path / "x.parquet").exists()


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="steps"):
        CollectConfig(env_id="Pendulum-v1", steps=0)
    with pytest.raises(ConfigError, match="action_noise"):
        CollectConfig(env_id="Pendulum-v1", action_noise=-1.0)


def test_feature_names_and_units_the_env_publishes_are_kept(tmp_path: Path) -> None:
    from dime_offline.envs import CSTR_ENV_ID
    from dime_offline.envs.cstr import ACTION_NAMES, ACTION_UNITS, OBS_NAMES, OBS_UNITS

    _, data = _collect(tmp_path, env_id=CSTR_ENV_ID, steps=20)
    meta = data.metadata
    assert meta.obs_names == list(OBS_NAMES) and meta.obs_units == list(OBS_UNITS)
    assert meta.action_names == list(ACTION_NAMES) and meta.action_units == list(ACTION_UNITS)
    _, pendulum = _collect(tmp_path / "p", env_id="Pendulum-v1", steps=5)
    assert pendulum.metadata.obs_names is None  # gymnasium's classic envs publish none
