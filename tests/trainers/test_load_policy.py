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
    assert policy.agent.acting_constants.frozen  # a deployed policy does not train: no per-call parameter check


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


@pytest.mark.parametrize("mode", ["best_of_k", "noise_free", "stochastic"])
def test_the_onnxruntime_backend_gives_the_torch_backends_actions(run_dir: Path, mode: str) -> None:
    pytest.importorskip("onnxruntime")
    deterministic = mode != "stochastic"
    kwargs = {"deterministic": deterministic, "seed": 3, "mode": None if mode == "stochastic" else mode}
    torch_policy = load_policy(run_dir, **kwargs)  # type: ignore[arg-type]
    onnx_policy = load_policy(run_dir, backend="onnxruntime", **kwargs)  # type: ignore[arg-type]
    assert onnx_policy.backend == "onnxruntime"
    for batch in (1, 16):
        obs = np.random.default_rng(batch).normal(size=(batch, 3)).astype(np.float32)
        expected = torch_policy(obs)  # stochastic: both streams seeded alike, so the same draws in turn
        np.testing.assert_allclose(onnx_policy(obs), expected, atol=1e-5)
        np.testing.assert_allclose(onnx_policy.act(obs[0]), torch_policy.act(obs[0]), atol=1e-5)
    np.testing.assert_allclose(  # the other kind of action on request, as the agent's act gives it
        onnx_policy.act(obs, deterministic=not deterministic), torch_policy.act(obs, deterministic=not deterministic),
        atol=1e-5,
    )


def test_the_onnxruntime_backend_without_its_packages_or_misnamed_is_a_one_line_error(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match="unknown policy backend 'onnx'"):
        load_policy(run_dir, backend="onnx")  # type: ignore[arg-type]
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'dime-offline\[onnx\]' \(missing: onnxruntime\)"):
        load_policy(run_dir, backend="onnxruntime")
