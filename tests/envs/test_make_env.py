"""make_env: [-1, 1] action rescaling, one-line errors, seeding, flattening; space checks."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from dime_offline.data.schema import DatasetMetadata
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.envs.make import make_env, spaces_of
from dime_offline.errors import ConfigError, EnvironmentMismatchError

RECORDER_ID = "DimeTest/ActionRecorder-v0"
LOW = np.array([0.0, -3.0], dtype=np.float32)
HIGH = np.array([10.0, -1.0], dtype=np.float32)


class ActionRecorderEnv(gym.Env[Any, np.ndarray]):
    """Asymmetric action bounds; remembers the last action it received (in its own units)."""

    def __init__(self, action_space: gym.Space[Any] | None = None, observation_space: gym.Space[Any] | None = None) -> None:
        self.action_space = action_space or gym.spaces.Box(LOW, HIGH, dtype=np.float32)
        self.observation_space = observation_space or gym.spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float64)
        self.received: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: np.ndarray) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        self.received = np.array(action, copy=True)
        return self.observation_space.sample(), 0.0, False, False, {}


if RECORDER_ID not in gym.registry:
    gym.register(id=RECORDER_ID, entry_point=ActionRecorderEnv, max_episode_steps=50)


def _sent(env: gym.Env[Any, Any], action: list[float]) -> np.ndarray:
    env.step(np.asarray(action, dtype=np.float32))
    received = env.unwrapped.received
    assert received is not None
    return received


def test_actions_in_unit_box_map_affinely_onto_asymmetric_bounds() -> None:
    env = make_env(RECORDER_ID, seed=0)
    env.reset()
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    np.testing.assert_allclose(_sent(env, [-1.0, -1.0]), LOW)
    np.testing.assert_allclose(_sent(env, [1.0, 1.0]), HIGH)
    np.testing.assert_allclose(_sent(env, [0.0, 0.5]), [5.0, -1.5])
    np.testing.assert_allclose(_sent(env, [-0.5, 0.0]), [2.5, -2.0])
    assert _sent(env, [0.0, 0.0]).dtype == np.float32


def test_out_of_range_actions_are_clipped_to_the_bounds() -> None:
    env = make_env(RECORDER_ID, seed=0)
    env.reset()
    np.testing.assert_allclose(_sent(env, [3.0, -7.0]), [10.0, -3.0])


def test_unknown_id_is_a_one_line_config_error_with_gymnasiums_hint() -> None:
    with pytest.raises(ConfigError) as info:
        make_env("Pendulm-v1")
    message = info.value.one_line()
    assert "\n" not in message
    assert "Pendulm-v1" in message and "Pendulum" in message


def test_empty_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no environment id"):
        make_env("")


def test_discrete_action_space_is_refused() -> None:
    with pytest.raises(EnvironmentMismatchError, match=r"CartPole-v1.*Discrete\(2\).*Box"):
        make_env("CartPole-v1")


def test_unbounded_action_space_is_refused() -> None:
    unbounded = gym.spaces.Box(-np.inf, np.inf, shape=(2,), dtype=np.float32)
    with pytest.raises(EnvironmentMismatchError, match="not finite"):
        make_env(RECORDER_ID, action_space=unbounded)


def test_dict_observations_are_flattened_to_one_vector() -> None:
    dict_space = gym.spaces.Dict(
        {"a": gym.spaces.Box(-1.0, 1.0, shape=(2,)), "b": gym.spaces.Box(0.0, 5.0, shape=(3,))}
    )
    env = make_env(RECORDER_ID, seed=1, observation_space=dict_space)
    obs, _ = env.reset()
    assert obs.shape == (5,)
    assert spaces_of(env).obs_dim == 5


def test_discrete_observations_are_refused() -> None:
    with pytest.raises(EnvironmentMismatchError, match="observation space"):
        make_env(RECORDER_ID, observation_space=gym.spaces.Discrete(4))


def test_same_seed_gives_the_same_episode_and_another_seed_does_not() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = make_env("Pendulum-v1", seed=seed)
        obs, _ = env.reset()
        trace = [obs]
        for _ in range(5):
            obs, *_ = env.step(env.action_space.sample())
            trace.append(obs)
        return np.stack(trace)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.allclose(rollout(3), rollout(4))


def test_max_episode_steps_overrides_the_time_limit_as_truncation() -> None:
    env = make_env("Pendulum-v1", seed=0, max_episode_steps=7)
    env.reset()
    flags = [env.step(np.zeros(1, np.float32))[2:4] for _ in range(7)]
    assert flags[-1] == (False, True)
    assert all(f == (False, False) for f in flags[:-1])


def test_space_spec_reads_the_env_bounds_before_rescaling_and_round_trips() -> None:
    spec = spaces_of(make_env("Pendulum-v1"))
    assert spec.obs_dim == 3 and spec.action_dim == 1
    assert spec.action_low == (-2.0,) and spec.action_high == (2.0,)
    assert spec.obs_low == (-1.0, -1.0, -8.0)
    assert SpaceSpec.from_dict(spec.to_dict()) == spec
    unbounded = spaces_of(make_env(RECORDER_ID))
    assert unbounded.obs_low is None and unbounded.obs_high is None


def test_check_spaces_match_accepts_float32_round_off_and_names_the_first_mismatch() -> None:
    spec = SpaceSpec(obs_dim=3, action_dim=1, action_low=(-2.0,), action_high=(2.0,))
    check_spaces_match(
        spec, SpaceSpec(3, 1, (float(np.float32(-2.0000001)),), (2.0,), obs_low=(0.0, 0.0, 0.0), obs_high=(1.0, 1.0, 1.0)),
        expected_from="checkpoint c", actual_from="environment 'e'",
    )
    with pytest.raises(EnvironmentMismatchError) as info:
        check_spaces_match(spec, SpaceSpec(4, 1, (-2.0,), (2.0,)), expected_from="checkpoint c", actual_from="environment 'e'")
    assert info.value.one_line() == "environment 'e' does not match checkpoint c: observation dim 4, expected 3"
    with pytest.raises(EnvironmentMismatchError, match="action dim 2, expected 1"):
        check_spaces_match(spec, SpaceSpec(3, 2, (-2.0, -2.0), (2.0, 2.0)), expected_from="c", actual_from="e")
    with pytest.raises(EnvironmentMismatchError, match=r"action high \[1\], expected \[2\]"):
        check_spaces_match(spec, SpaceSpec(3, 1, (-2.0,), (1.0,)), expected_from="c", actual_from="e")
    bounded = SpaceSpec(3, 1, (-2.0,), (2.0,), obs_low=(0.0,) * 3, obs_high=(1.0,) * 3)
    with pytest.raises(EnvironmentMismatchError, match="observation high"):
        check_spaces_match(bounded, SpaceSpec(3, 1, (-2.0,), (2.0,), obs_low=(0.0,) * 3, obs_high=(9.0,) * 3),
                           expected_from="c", actual_from="e")


def test_space_spec_from_dataset_metadata() -> None:
    assert SpaceSpec.from_metadata(DatasetMetadata(), 3, 1) is None
    meta = DatasetMetadata(action_low=[0.0, -3.0], action_high=[10.0, -1.0])
    spec = SpaceSpec.from_metadata(meta, 3, 2)
    assert spec is not None
    check_spaces_match(spec, spaces_of(make_env(RECORDER_ID)), expected_from="dataset d", actual_from="env")
