"""``select_acting``: before each evaluation every deterministic mode is scored on episodes of its own,
and the better one acts in the reported evaluation and in the checkpoints."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import trainer_factories as tf

from dime_offline.checkpoints import resolve_checkpoint_dir
from dime_offline.regularizers import OfflineConfig
from dime_offline.trainers import scaffold
from dime_offline.trainers.collect import CollectConfig, collect
from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET, SELECTION_SEED_OFFSET, selection_seed

SEED = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "pendulum.parquet"
    collect(CollectConfig(env_id="Pendulum-v1", steps=100, out=str(path), quiet=True, max_episode_steps=20, seed=3))
    return str(path)


def _cfg(out: Path, data: str, **changes: Any) -> PretrainConfig:
    return PretrainConfig(
        data=data, steps=20, out_dir=str(out), seed=SEED, agent=dict(tf.TINY_AGENT), eval_every=10, eval_episodes=2,
        log_every=10, max_episode_steps=20, tensorboard=False, quiet=True,
        offline=OfflineConfig(conservative_weight=0.5, behaviour_weight=1.0, n_actions=2), **changes,
    )


def _recording_evaluate(monkeypatch: pytest.MonkeyPatch, favoured: str) -> list[tuple[int, str]]:
    """Record (episode seed, acting mode) of every evaluation; on the selection episodes ``favoured``
    scores 1000 more than it did, so the choice is known in advance."""
    calls: list[tuple[int, str]] = []
    real = scaffold.evaluate

    def evaluate(agent: Any, env_id: str, n: int, seed: int, **kwargs: Any):
        calls.append((seed, agent.cfg.deterministic_act))
        stats = real(agent, env_id, n, seed=seed, **kwargs)
        if seed >= SEED + SELECTION_SEED_OFFSET and agent.cfg.deterministic_act == favoured:
            stats = dataclasses.replace(stats, returns=tuple(r + 1000.0 for r in stats.returns))
        return stats

    monkeypatch.setattr(scaffold, "evaluate", evaluate)
    return calls


@pytest.mark.parametrize("favoured", ["noise_free", "best_of_k"])
def test_the_better_mode_on_the_selection_episodes_acts_and_is_saved(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch, favoured: str
) -> None:
    calls = _recording_evaluate(monkeypatch, favoured)
    result = pretrain(_cfg(tmp_path / "run", data, select_acting=True))
    report = SEED + EVAL_SEED_OFFSET
    # each evaluation (steps 10 and 20): both modes on the selection episodes, then the report in the winner
    expected_modes = {"noise_free", "best_of_k"}
    assert len(calls) == 6
    for first, step in ((0, 10), (3, 20)):
        assert {seed for seed, _ in calls[first:first + 2]} == {selection_seed(SEED, step, 2)}
        assert {mode for _, mode in calls[first:first + 2]} == expected_modes
        assert calls[first + 2] == (report, favoured)
    for folder in ("checkpoint", "best"):
        saved = json.loads((resolve_checkpoint_dir(tmp_path / "run" / folder) / "config.json").read_text())
        assert saved["deterministic_act"] == favoured
    monkeypatch.undo()
    again = evaluate_checkpoint(EvaluateConfig(checkpoint=str(tmp_path / "run")))
    assert again.as_run and again.acting == favoured
    assert again.stats.returns == pytest.approx(result.loop.evaluations[-1].stats.returns)
    with open(tmp_path / "run" / "metrics.csv") as handle:
        logged = {(int(row["step"]), row["key"]) for row in csv.DictReader(handle)}
    assert {(step, f"eval/selection_{mode}") for step in (10, 20) for mode in expected_modes} <= logged


def test_without_it_the_evaluation_episodes_alone_run_in_the_agents_mode(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _recording_evaluate(monkeypatch, "noise_free")
    pretrain(_cfg(tmp_path / "run", data))
    assert calls == [(SEED + EVAL_SEED_OFFSET, "best_of_k")] * 2
