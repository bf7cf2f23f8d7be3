"""`evaluate` beside baselines: controllers on the policy's own episode seeds, and the logged episodes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import trainer_factories as tf
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.agent.dime import DIMEAgent
from dime_offline.data.load import load_dataset
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.pi_controller import PIController
from dime_offline.errors import EnvironmentMismatchError
from dime_offline.evaluation.baselines import UniformRandomPolicy
from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint
from dime_offline.trainers.online import FinetuneConfig, finetune

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"
SHORT = 60
"""Steps per CSTR evaluation episode (the registered 240 are not needed to see trips and tracking)."""


def _checkpoint(root: Path, env_id: str) -> Path:
    """A tiny agent after a few env steps (no updates: learning starts later); its policy is poor, which is all
    the baselines need."""
    out = root / "run"
    finetune(FinetuneConfig(
        env_id=env_id, steps=40, out_dir=str(out), agent=dict(tf.TINY_AGENT), eval_every=0, eval_episodes=1,
        log_every=40, max_episode_steps=20, tensorboard=False, quiet=True,
    ))
    return out


@pytest.fixture(scope="module")
def cstr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("cstr"), CSTR_ENV_ID)


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("pendulum"), "Pendulum-v1")


def _invoke(*args: Any):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_every_controller_starts_from_the_policys_initial_states(cstr_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first_calls: list[tuple[object, np.ndarray]] = []  # (acting object, observations of its first call), kept alive

    for cls in (DIMEAgent, PIController, UniformRandomPolicy):
        original = cls.act

        def act(self: Any, obs: np.ndarray, *args: Any, _original: Any = original, **kwargs: Any) -> np.ndarray:
            if all(actor is not self for actor, _ in first_calls):
                first_calls.append((self, np.array(obs, copy=True)))
            return _original(self, obs, *args, **kwargs)

        monkeypatch.setattr(cls, "act", act)
    result = evaluate_checkpoint(EvaluateConfig(
        checkpoint=str(cstr_run), episodes=3, seed=11, max_episode_steps=SHORT, baselines=("pi", "random", "pi_operator"),
    ))
    policy_first, *baseline_firsts = (obs for _, obs in first_calls)
    assert len(baseline_firsts) == 3 and policy_first.shape == (3, 6)
    assert len({tuple(row) for row in policy_first}) == 3  # three different episodes...
    for first in baseline_firsts:
        np.testing.assert_array_equal(first, policy_first)  # ...each one the same for every controller
    assert result.episode_seeds == [11, 12, 13]


def test_pi_baseline_on_the_twin_never_trips_beats_random_and_pairs_by_seed(cstr_run: Path) -> None:
    result = evaluate_checkpoint(EvaluateConfig(
        checkpoint=str(cstr_run), episodes=3, seed=0, max_episode_steps=SHORT, baselines=("pi", "random"),
    ))
    summary = result.to_dict()
    pi, random = summary["baselines"]
    assert (pi["baseline"], random["baseline"]) == ("pi", "random") and pi["paired"] and random["paired"]
    assert pi["terminated_episodes"] == 0 and pi["episode_lengths"] == [SHORT] * 3  # no trip: every episode ran to the end
    assert pi["return_mean"] > random["return_mean"] and min(pi["episode_returns"]) > max(random["episode_returns"])
    for block in (pi, random):
        expected = np.subtract(summary["episode_returns"], block["episode_returns"])
        assert block["difference"]["per_seed"] == pytest.approx(expected.tolist())
        assert block["difference"]["return_mean"] == pytest.approx(summary["return_mean"] - block["return_mean"])
        assert block["difference"]["policy_better"] == int((expected > 0).sum())
    again = evaluate_checkpoint(EvaluateConfig(checkpoint=str(cstr_run), episodes=3, seed=0, max_episode_steps=SHORT, baselines=("pi",)))
    assert again.baselines[0].stats.returns == result.baselines[0].stats.returns  # the PI loop alone is deterministic


def test_data_baseline_reports_the_logged_episode_returns(pendulum_run: Path) -> None:
    table = pq.read_table(SAMPLE, columns=["episode_id", "reward"])
    ids, inverse = np.unique(table["episode_id"].to_numpy(), return_inverse=True)
    returns = np.bincount(inverse, weights=table["reward"].to_numpy().astype(np.float64))
    lengths = np.bincount(inverse)
    result = _invoke("evaluate", "--checkpoint", pendulum_run, "--episodes", "2", "--baseline", "data", "--data", SAMPLE,
                     "--set", "max_episode_steps=20", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    (logged,) = summary["baselines"]
    assert logged["baseline"] == "data" and not logged["paired"] and logged["episodes"] == len(ids) == 15
    assert logged["episode_returns"] == pytest.approx(returns.tolist())
    assert logged["episode_lengths"] == lengths.tolist()
    assert logged["return_mean"] == pytest.approx(returns.mean()) and logged["return_std"] == pytest.approx(returns.std())
    meta = load_dataset(SAMPLE).metadata
    low, high = meta.ref_min_score, meta.ref_max_score
    assert logged["normalized_score"] == pytest.approx(100 * (returns.mean() - low) / (high - low))
    # the dataset's references normalise the policy's score too, and the unpaired difference is of the means
    assert summary["normalized_score"] == pytest.approx(100 * (summary["return_mean"] - low) / (high - low))
    assert logged["difference"]["return_mean"] == pytest.approx(summary["return_mean"] - returns.mean())
    assert logged["difference"]["per_seed"] is None
    per_step = sum(summary["episode_returns"]) / sum(summary["episode_lengths"]) - returns.sum() / lengths.sum()
    assert logged["difference"]["return_per_step"] == pytest.approx(per_step)


def test_the_checkpoint_acting_another_way_is_a_paired_baseline(pendulum_run: Path) -> None:
    """``--baseline noise_free`` etc.: the same checkpoint on the same episodes in another acting mode, each
    equal to evaluating that mode on its own, so the table answers "which mode do I deploy"."""
    episodes = {"checkpoint": str(pendulum_run), "episodes": 3, "seed": 5, "max_episode_steps": 20}
    result = evaluate_checkpoint(EvaluateConfig(**episodes, baselines=("noise_free", "stochastic", "best_of_k")))
    assert result.acting == "best_of_k" and all(b.paired for b in result.baselines)
    by_name = {b.name: b.stats for b in result.baselines}
    assert by_name["best_of_k"].returns == result.stats.returns  # the policy's own mode: the same episodes
    alone = evaluate_checkpoint(EvaluateConfig(**episodes, deterministic_act="noise_free"))
    assert by_name["noise_free"].returns == alone.stats.returns
    assert by_name["noise_free"].returns != result.stats.returns  # the two modes act differently
    as_noise_free = evaluate_checkpoint(EvaluateConfig(**episodes, deterministic_act="noise_free", baselines=("best_of_k",)))
    assert as_noise_free.acting == "noise_free" and as_noise_free.baselines[0].stats.returns == result.stats.returns
    assert by_name["stochastic"].returns != result.stats.returns  # samples act otherwise


def test_the_text_output_shows_the_baselines_and_the_paired_seeds(cstr_run: Path) -> None:
    result = _invoke("evaluate", "--checkpoint", cstr_run, "--episodes", "2", "--seed", "40", "--baseline", "pi",
                     "--set", f"max_episode_steps={SHORT}")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("pi ") and "paired; policy better on" in line for line in lines)
    header = next(line for line in lines if line.startswith("seed"))
    assert header.split() == ["seed", "policy", "pi", "policy", "−", "pi"]
    assert [line.split()[0] for line in lines[lines.index(header) + 2:]] == ["40", "41"]


@pytest.mark.parametrize(("args", "expected"), [
    (["--baseline", "optimal"], "unknown baseline 'optimal' for environment 'Pendulum-v1'"),
    (["--baseline", "pi"], "controller of dime_offline/CSTR-v0 only"),
    (["--baseline", "data"], "needs a dataset"),
    (["--baseline", "random", "--baseline", "random"], "each baseline once"),
    (["--baseline", "data", "--data", "missing.parquet"], "missing.parquet"),
])
def test_bad_baselines_are_one_line_exit_2(pendulum_run: Path, args: list[str], expected: str) -> None:
    result = _invoke("evaluate", "--checkpoint", pendulum_run, *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr and "Traceback" not in result.output


def test_a_dataset_of_another_environment_is_refused_before_any_rollout(cstr_run: Path) -> None:
    with pytest.raises(EnvironmentMismatchError, match="does not match"):
        evaluate_checkpoint(EvaluateConfig(checkpoint=str(cstr_run), baselines=("data",), data=str(SAMPLE)))
