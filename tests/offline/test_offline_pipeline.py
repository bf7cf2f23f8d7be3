"""collect -> pretrain -> finetune -> evaluate through the CLI, in-process, with tiny budgets.

Checks the artefacts of every stage, that the checkpoint reloads to identical actions, and that the
regularisers' weights, the calibration and the temperature mode switch at the offline -> online
boundary as the pretraining config says (read back from the runs' metrics).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from offline_factories import TINY_AGENT, bandit_dataset
from typer.testing import CliRunner

from dime_offline.checkpoints import load_checkpoint, read_checkpoint_meta
from dime_offline.config import from_dict, load_config
from dime_offline.data.parquet import write_parquet
from dime_offline.data.returns import discounted_returns_to_go
from dime_offline.regularizers import OfflineConfig, describe_regularizers
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline_cli.main import app

TINY = [
    "agent.critic_hidden=[32, 32]", "agent.score_hidden=[32, 32]", "agent.score_frequencies=8",
    "agent.score_time_hidden=16", "agent.diffusion_steps=4", "agent.batch_size=32",
]
OFFLINE = [
    "offline.conservative_weight=0.5", "offline.conservative_weight_online=0.2", "offline.calibration=true",
    "offline.calibration_online=false", "offline.behaviour_weight=2.0", "offline.behaviour_weight_online=0",
    "offline.n_actions=2", "offline.alpha_mode=fixed", "offline.alpha=0.1",
]
SHORT_EVAL = ["max_episode_steps=50", "eval_episodes=1", "log_every=10", "tensorboard=false"]
PRETRAIN_STEPS, FINETUNE_STEPS = 30, 30


def _invoke(*args: object):
    return CliRunner().invoke(app, [str(a) for a in args])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def _sets(*items: str) -> list[str]:
    return [part for item in items for part in ("--set", item)]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("pipeline")
    data = root / "pendulum.parquet"
    collected = _json(_invoke("collect", "--env", "Pendulum-v1", "--steps", 400, "--out", data, "--seed", 3, "--json"))
    pre = _json(_invoke(
        "pretrain", "--data", data, "--steps", PRETRAIN_STEPS, "--out", root / "pre", "--seed", 1,
        *_sets(*TINY, *OFFLINE, *SHORT_EVAL, "eval_every=15"), "--json",
    ))
    ft = _json(_invoke(
        "finetune", "--env", "Pendulum-v1", "--checkpoint", root / "pre", "--data", data, "--steps", FINETUNE_STEPS,
        "--out", root / "ft", "--seed", 1, *_sets("agent.batch_size=32", *SHORT_EVAL, "eval_every=15"), "--json",
    ))
    evaluated = _json(_invoke("evaluate", "--checkpoint", root / "ft", "--episodes", 1, "--json"))
    return {"root": root, "data": data, "collect": collected, "pretrain": pre, "finetune": ft, "evaluate": evaluated}


def test_every_stage_reports_and_leaves_readable_artefacts(pipeline: dict) -> None:
    root: Path = pipeline["root"]
    assert pipeline["collect"]["steps"] == 400
    pre = pipeline["pretrain"]
    assert (pre["command"], pre["env"], pre["steps"], pre["updates"]) == ("pretrain", "Pendulum-v1", PRETRAIN_STEPS, PRETRAIN_STEPS)
    assert pre["data"] == str(pipeline["data"]) and pre["transitions"] == 400
    assert pre["final"]["step"] == PRETRAIN_STEPS and pre["final"]["episodes"] == 1 and pre["best"] is not None
    for name in ("metrics.csv", "learning_curve.png", "summary.json", "pretrain_config.json",
                 "checkpoint/config.json", "checkpoint/meta.json", "checkpoint/state.pt", "best/state.pt"):
        assert (root / "pre" / name).is_file(), name
    assert (root / "pre" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((root / "pre" / "summary.json").read_text()) == pre
    saved = load_config(PretrainConfig, root / "pre" / "pretrain_config.json")
    assert saved.steps == PRETRAIN_STEPS and saved.offline.conservative_weight_online == 0.2 and saved.quiet
    metrics = read_metrics_csv(root / "pre" / "metrics.csv")
    assert {"train/critic/loss", "train/conservative/gap", "train/behaviour/log_likelihood_bound", "eval/return_mean"} <= set(metrics)
    ft = pipeline["finetune"]
    assert (ft["command"], ft["steps"], ft["updates"]) == ("finetune", FINETUNE_STEPS, 2 * FINETUNE_STEPS)  # no warm-up
    for name in ("metrics.csv", "learning_curve.png", "checkpoint/state.pt", "summary.json"):
        assert (root / "ft" / name).is_file(), name
    evaluated = pipeline["evaluate"]
    assert evaluated["env"] == "Pendulum-v1" and evaluated["episodes"] == 1 and np.isfinite(evaluated["return_mean"])


def test_the_checkpoint_reloads_to_identical_actions(pipeline: dict) -> None:
    obs = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    first, _, meta = load_checkpoint(pipeline["root"] / "pre")
    second, _, _ = load_checkpoint(pipeline["root"] / "pre" / "checkpoint")
    assert np.array_equal(first.act(obs), second.act(obs))
    assert np.array_equal(first.act(obs[0]), second.act(obs[0]))
    assert not np.array_equal(first.act(obs), first.act(obs))  # still a stochastic policy
    # The dataset's observation statistics travel with the checkpoint.
    assert meta.normalization is not None and meta.normalization.count == 400
    assert np.allclose(first.obs_normalizer[0].numpy(), meta.normalization.obs_mean)


def test_the_boundary_switches_weights_calibration_and_temperature_as_configured(pipeline: dict) -> None:
    root: Path = pipeline["root"]
    pre = read_metrics_csv(root / "pre" / "metrics.csv")
    ft = read_metrics_csv(root / "ft" / "metrics.csv")
    # Offline: the offline weights, calibration on, the temperature fixed at 0.1.
    assert np.allclose(pre["offline/conservative_weight"][1], 0.5)
    assert np.allclose(pre["offline/behaviour_weight"][1], 2.0)
    assert np.allclose(pre["offline/calibration"][1], 1.0)
    assert np.allclose(pre["train/alpha/value"][1], 0.1) and "train/alpha/loss" not in pre
    # Online: the online weights (the behaviour term is off, so it logs nothing), calibration off,
    # and the temperature auto-tunes from the pretrained value.
    assert np.allclose(ft["online/conservative_weight"][1], 0.2)
    assert np.allclose(ft["train/conservative/weight"][1], 0.2)
    assert np.allclose(ft["online/behaviour_weight"][1], 0.0) and not any(k.startswith("train/behaviour/") for k in ft)
    assert np.allclose(ft["online/calibration"][1], 0.0)
    assert "train/alpha/loss" in ft and not np.allclose(ft["train/alpha/value"][1], 0.1)
    # The checkpoints say so too: config.json is the online agent, meta.json the online regularisers.
    meta = read_checkpoint_meta(root / "pre")
    assert meta.extra["regularizers"]["critic"]["weight"] == 0.2 and meta.extra["regularizers"]["actor"]["weight"] == 0.0
    assert meta.extra["offline"]["conservative_weight"] == 0.5 and meta.extra["offline_agent_config"]["alpha_mode"] == "fixed"
    assert json.loads((root / "pre" / "checkpoint" / "config.json").read_text())["alpha_mode"] == "auto"
    assert read_checkpoint_meta(root / "ft").extra["regularizers"] == meta.extra["regularizers"]


def test_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    missing = _invoke("pretrain", "--data", tmp_path / "nope.parquet", "--out", tmp_path / "run")
    bad_weight = _invoke("pretrain", "--data", tmp_path / "nope.parquet", "--set", "offline.conservative_weight=-1")
    no_data = _invoke("pretrain", "--out", tmp_path / "run")
    for result, fragment in ((missing, "nope.parquet"), (bad_weight, "offline.conservative_weight"), (no_data, "--data")):
        assert result.exit_code == 2, result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0] and "Traceback" not in result.output, result.output


def test_pretrain_without_an_environment_and_the_returned_agent_is_the_online_one(tmp_path: Path) -> None:
    """A dataset that names no environment: no evaluation, no plot, still a checkpoint; the agent in
    the result has left the offline phase exactly as the checkpoint records it."""
    data = tmp_path / "bandit.parquet"
    write_parquet(bandit_dataset(episodes=4), data)
    cfg = PretrainConfig(
        data=str(data), steps=6, out_dir=str(tmp_path / "run"), agent=dict(TINY_AGENT), tensorboard=False, quiet=True,
        offline=from_dict(OfflineConfig, {"alpha_mode": "fixed", "alpha": 0.2, "conservative_weight_online": 0.1}),
    )
    result = pretrain(cfg)
    summary = result.to_dict()
    assert summary["env"] is None and summary["final"] is None and summary["learning_curve"] is None
    assert summary["transitions"] == 80 and summary["updates"] == 6
    meta = read_checkpoint_meta(result.checkpoint)
    assert meta.env_id is None and meta.spaces.action_low == (-1.0,)
    assert describe_regularizers(result.agent) == meta.extra["regularizers"]
    assert result.agent.critic_regularizer.weight == 0.1
    assert result.agent.cfg.alpha_mode == "auto" and result.agent.alpha == pytest.approx(0.2)
    loaded, _, _ = load_checkpoint(result.checkpoint)
    assert loaded.cfg == result.agent.cfg and loaded.target_entropy == result.agent.target_entropy


def test_the_value_support_is_fitted_to_the_data_unless_the_user_sets_it(tmp_path: Path) -> None:
    data = tmp_path / "bandit.parquet"
    logged = bandit_dataset(episodes=4)
    write_parquet(logged, data)

    def support(name: str, offline: dict, agent: dict) -> tuple[float, float]:
        cfg = PretrainConfig(
            data=str(data), steps=2, out_dir=str(tmp_path / name), agent={**TINY_AGENT, **agent}, tensorboard=False,
            quiet=True, offline=from_dict(OfflineConfig, offline),
        )
        saved = load_checkpoint(pretrain(cfg).checkpoint)[1]
        return saved.v_min, saved.v_max

    gamma = TINY_AGENT.get("gamma", 0.99)
    v_min, v_max = support("fitted", {"value_support": "data", "value_support_margin": 0.5}, {})
    # Rewards in [0, 1] held for ever reach 1 / (1 - gamma); the core [0, that] widened by half its width each side.
    core_high = max(float(logged.reward.max()) / (1 - gamma), 0.0)
    assert v_min == pytest.approx(-0.5 * core_high, rel=1e-3) and v_max == pytest.approx(1.5 * core_high, rel=1e-3)
    assert support("preset", {"value_support": "preset"}, {}) == (-1600.0, 1600.0)
    assert support("user", {}, {"v_min": -7.0}) == (-7.0, 1600.0)

    # A trip: the last step of the first episode terminates with a penalty of -50. It counts once, so
    # the low end is -50 (and the margin), not the -50 / (1 - gamma) of a penalty held for ever.
    reward, terminated, truncated = logged.reward.copy(), logged.terminated.copy(), logged.truncated.copy()
    last = int(np.flatnonzero(logged.episode_id == 0)[-1])
    reward[last], terminated[last], truncated[last] = -50.0, True, False
    write_parquet(dataclasses.replace(logged, reward=reward, terminated=terminated, truncated=truncated), data)
    v_min, v_max = support("trip", {"value_support": "data", "value_support_margin": 0.0}, {})
    assert v_min == pytest.approx(-50.0, rel=1e-3) and v_max == pytest.approx(core_high, rel=1e-3)
    # "returns" (the default): the logged discounted sums alone (the trip's -50 once; nothing held for ever, no tail).
    observed = discounted_returns_to_go(reward, terminated | truncated, terminated, gamma, truncation="zero")
    v_min, v_max = support("returns", {"value_support_margin": 0.0}, {})
    assert v_min == pytest.approx(min(observed.min(), 0.0), abs=1e-3) and v_max == pytest.approx(observed.max(), abs=1e-3)
    assert v_max < 0.5 * core_high  # 20-step episodes: far below a reward of 1 held for ever
