"""The CSTR twin: gymnasium API, seeding, truncation vs termination, physics, PI controller."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import dime_offline.envs  # noqa: F401  (registers the twin)
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.cstr import CSTREnv, CSTRParams, integrate, steady_state
from dime_offline.envs.pi_controller import PIConfig, PIController


@pytest.mark.filterwarnings("ignore:.*symmetric and normalized space:UserWarning")  # engineering units by design
def test_registered_and_passes_the_gymnasium_checker() -> None:
    env = gym.make(CSTR_ENV_ID)
    check_env(env.unwrapped, skip_render_check=True)
    assert env.unwrapped.obs_names == ["reactor_temp", "concentration_a", "jacket_temp", "temp_setpoint", "feed_temp",
                                       "prev_jacket_sp"]
    assert env.unwrapped.obs_units[:3] == ["K", "mol/L", "K"] and env.unwrapped.action_units == ["K"]
    assert env.action_space.low.tolist() == [280.0] and env.action_space.high.tolist() == [310.0]
    assert env.unwrapped.dt_seconds == 30.0


def test_seeded_runs_are_identical_and_seeds_differ() -> None:
    def rollout(seed: int) -> np.ndarray:
        env = CSTREnv()
        obs, _ = env.reset(seed=seed)
        out = [obs]
        for _ in range(50):
            obs, *_ = env.step(np.array([298.0], np.float32))
            out.append(obs)
        return np.array(out)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.array_equal(rollout(7), rollout(8))


def test_truncated_at_the_horizon_never_terminated() -> None:
    env = CSTREnv(horizon=25)
    obs, _ = env.reset(seed=0)
    pi = PIController(seed=0)
    for t in range(25):
        obs, reward, terminated, truncated, _ = env.step(pi.command(obs, deterministic=True))
        assert not terminated
        assert truncated == (t == 24)


def test_overheating_trips_the_interlock_and_terminates() -> None:
    env = CSTREnv()
    obs, _ = env.reset(seed=0)
    for _ in range(200):
        obs, reward, terminated, truncated, info = env.step(np.array([310.0], np.float32))  # full heating
        if terminated:
            break
    assert terminated and not truncated and info["tripped"]
    assert reward < -100.0
    assert obs[0] > env.params.trip_temperature - 1.0


def test_steady_state_is_a_fixed_point_and_the_plant_runs_away_near_ignition() -> None:
    p = CSTRParams()
    for temperature in (318.0, 325.0, 332.0):
        ca, tc = steady_state(p, temperature)
        (ca2, t2, tc2), tripped, _, _ = integrate(p, (ca, temperature, tc), tc, p.tf_nominal)
        assert not tripped and abs(t2 - temperature) < 1e-6 and abs(ca2 - ca) < 1e-8
    # Holding the jacket 2 K above the 332 K steady state ignites the reactor within the hour.
    ca, tc = steady_state(p, 332.0)
    state, tripped = (ca, 332.0, tc), False
    for _ in range(120):
        state, tripped, _, _ = integrate(p, state, tc + 2.0, p.tf_nominal)
        if tripped:
            break
    assert tripped


def test_reward_is_tracking_error_plus_move_penalty() -> None:
    env = CSTREnv()
    obs, _ = env.reset(seed=3)
    setpoint, u_prev = float(obs[3]), float(obs[5])
    obs2, reward, *_ = env.step(np.array([u_prev + 2.0], np.float32))
    expected = -abs(float(np.float64(env.plant_state[1])) - setpoint) - env.params.move_weight * 4.0
    assert reward == pytest.approx(expected, abs=1e-4)
    assert obs2[5] == pytest.approx(u_prev + 2.0, abs=1e-4)


def test_reset_can_continue_a_plant() -> None:
    env = CSTREnv()
    env.reset(seed=1)
    obs, *_ = env.step(np.array([299.0], np.float32))
    state, sp, tf = env.plant_state, env.setpoint, env.feed_temp
    obs2, _ = env.reset(options={"state": state, "setpoint": sp, "feed_temp": tf, "u_prev": 299.0})
    np.testing.assert_allclose(obs2, obs, rtol=1e-6)


def test_deterministic_pi_tracks_the_setpoint_and_the_operator_adds_noise() -> None:
    env = CSTREnv()
    errors = []
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        pi = PIController(seed=seed)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(pi.command(obs, deterministic=True))
            errors.append(abs(info["tracking_error"]))
            assert not terminated
            done = truncated
    assert np.median(errors) < 0.5
    pi = PIController(PIConfig(manual_probability=0.2), seed=0)
    obs, _ = env.reset(seed=0)
    modes = []
    for _ in range(100):
        obs, *_ = env.step(pi.command(obs))
        modes.append(pi.mode[0])
    assert "MAN" in modes and "AUTO" in modes


def test_pi_act_follows_the_policy_protocol() -> None:
    pi = PIController(seed=0)
    obs = np.tile(np.array([320.0, 0.9, 298.0, 325.0, 350.0, 298.0], np.float32), (4, 1))
    act = pi.act(obs, deterministic=True)
    assert act.shape == (4, 1) and np.all(np.abs(act) <= 1.0)
    u = pi.params.u_low + (act[:, 0] + 1.0) / 2.0 * (pi.params.u_high - pi.params.u_low)
    # Below setpoint: the integral term raises the jacket setpoint by Kc dt / tau_I * 5 K.
    np.testing.assert_allclose(u, 298.0 + 2.0 * 0.5 / 2.0 * 5.0, rtol=1e-6)
