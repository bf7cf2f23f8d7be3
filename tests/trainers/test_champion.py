"""The champion (``trainers/champion.py``): a fine-tuning run deploys the policy that did best on the
selection episodes, replaced by the learner only when it does at least as well there; evaluations,
``best/``, ``champion/`` and the run directory's policy are that champion."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
import trainer_factories as tf

from dime_offline.checkpoints import load_checkpoint, read_checkpoint_meta
from dime_offline.errors import ConfigError
from dime_offline.trainers import scaffold
from dime_offline.trainers.champion import acting_copy, challenger_wins
from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET, SELECTION_SEED_OFFSET, selection_seed

SEED = 5
EVAL_EVERY = 20


def test_the_challenger_wins_by_its_paired_mean_difference() -> None:
    assert challenger_wins([10.0, 12.0], [10.0, 12.0], margin=0.0)  # as good: it takes over
    assert not challenger_wins([9.0, 12.0], [10.0, 12.0], margin=0.0)
    # differences 1 and 3: mean 2, standard error 1
    assert challenger_wins([11.0, 15.0], [10.0, 12.0], margin=2.0)
    assert not challenger_wins([11.0, 15.0], [10.0, 12.0], margin=2.01)
    with pytest.raises(ValueError, match="paired"):
        challenger_wins([1.0], [1.0, 2.0], margin=0.0)


def _cfg(out: Path, **changes: Any) -> FinetuneConfig:
    return dataclasses.replace(FinetuneConfig(
        env_id="Pendulum-v1", steps=100, out_dir=str(out), seed=SEED, agent={**tf.TINY_AGENT, "learning_starts": 30},
        eval_every=EVAL_EVERY, eval_episodes=2, checkpoint_every=50, log_every=10, max_episode_steps=20,
        tensorboard=False, quiet=True,
    ), **changes)


def _scripted_evaluate(monkeypatch: pytest.MonkeyPatch, learner: Any, learner_wins_at: set[int]) -> list[tuple[int, int, str]]:
    """Real episodes, with ``learner``'s selection returns shifted so that it beats the champion by 1000
    at the steps in ``learner_wins_at`` and loses by 1000 elsewhere; records (step, seed, who) of each call."""
    calls: list[tuple[int, int, str]] = []
    real_evaluate, real_evaluation = scaffold.evaluate, scaffold.RunScaffold.evaluation
    at = {"step": 0}

    def evaluate(policy: Any, env_id: str, n: int, seed: int, **kwargs: Any):
        who = "learner" if policy is learner else "champion"
        calls.append((at["step"], seed, who))
        stats = real_evaluate(policy, env_id, n, seed=seed, **kwargs)
        if seed >= SEED + SELECTION_SEED_OFFSET and who == "learner":
            shift = 1000.0 if at["step"] in learner_wins_at else -1000.0
            stats = dataclasses.replace(stats, returns=tuple(r + shift for r in stats.returns))
        return stats

    def evaluation(self: Any, agent: Any, env_id: str, **kwargs: Any):
        run_evaluation = real_evaluation(self, agent, env_id, **kwargs)

        def at_step(step: int):
            at["step"] = step
            return run_evaluation(step)
        return at_step

    monkeypatch.setattr(scaffold, "evaluate", evaluate)
    monkeypatch.setattr(scaffold.RunScaffold, "evaluation", evaluation)
    return calls


def test_the_champion_is_replaced_only_by_a_learner_that_does_as_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    learner_agent, _, _ = load_checkpoint(tf.pretrained_pendulum(tmp_path / "pre"))
    calls = _scripted_evaluate(monkeypatch, learner_agent, learner_wins_at={40})
    out = tmp_path / "ft"
    result = finetune(_cfg(out), agent=learner_agent)
    report = SEED + EVAL_SEED_OFFSET
    # each evaluation: the learner and the champion on fresh selection episodes, then the report (the
    # champion's), played only for a new champion: the same deterministic policy on the same episodes
    assert calls == [
        (step, seed, who) for step in (20, 40, 60, 80, 100)
        for seed, who in ((selection_seed(SEED, step, 2), "learner"), (selection_seed(SEED, step, 2), "champion"), (report, "champion"))
        if seed != report or step in (20, 40)
    ]
    assert len({selection_seed(SEED, step, 2) + i for step in (20, 40) for i in range(2)}) == 4  # no episode repeats
    with open(out / "metrics.csv") as handle:
        champion_step = {int(r["step"]): float(r["value"]) for r in csv.DictReader(handle) if r["key"] == "eval/champion_step"}
    assert champion_step == {20: 0.0, 40: 40.0, 60: 40.0, 80: 40.0, 100: 40.0}
    meta = read_checkpoint_meta(out / "champion")
    assert meta.extra["champion"]["step"] == 40 and meta.extra["env_steps"] == 40
    assert result.to_dict()["champion_checkpoint"] == str(out / "champion")
    # the reported evaluations measure the champion: from step 40 on, the same policy on the same episodes
    reported = [r.stats.returns for r in result.loop.evaluations[1:]]
    assert all(returns == reported[0] for returns in reported)
    monkeypatch.undo()
    # the run directory stands for the champion: evaluate reproduces the run's final score
    again = evaluate_checkpoint(EvaluateConfig(checkpoint=str(out)))
    assert again.as_run and again.stats.returns == pytest.approx(result.loop.final.stats.returns)
    champion, _, _ = load_checkpoint(out)
    learner, _, _ = load_checkpoint(out / "checkpoint")
    assert any(not torch.equal(a, b) for a, b in zip(champion.policy.parameters(), learner.policy.parameters()))
    best, _, _ = load_checkpoint(out / "best")  # the best reported evaluation is the champion's
    assert all(torch.equal(a, b) for a, b in zip(best.policy.parameters(), champion.policy.parameters()))


def test_an_acting_copy_acts_as_the_agent_and_does_not_follow_it(tmp_path: Path) -> None:
    agent, _, _ = load_checkpoint(tf.pretrained_pendulum(tmp_path / "pre"))
    copy = acting_copy(agent)
    obs = torch.zeros(3, 3).numpy()
    assert (copy.act(obs, deterministic=True) == agent.act(obs, deterministic=True)).all()
    before = [p.clone() for p in copy.policy.parameters()]
    with torch.no_grad():
        for parameter in agent.policy.parameters():
            parameter.mul_(0.5)
    assert all(torch.equal(a, b) for a, b in zip(copy.policy.parameters(), before))
    assert copy.critic_regularizer is None and copy.actor_regularizer is None


def test_the_champion_can_be_switched_off_and_its_margin_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="champion_margin"):
        _cfg(tmp_path / "x", champion_margin=-1.0)
    run = finetune(_cfg(tmp_path / "off", champion=False, steps=40))
    assert run.champion_checkpoint is None and not (tmp_path / "off" / "champion").exists()


@pytest.mark.slow
def test_a_learner_that_unlearns_leaves_the_pretrained_policy_deployed(tmp_path: Path) -> None:
    """Learning, not scripted: fine-tuning with learning rates 100x too high wrecks the learner within 100
    env steps; the run keeps deploying (and reporting) the pretrained policy. 2-4 minutes on 2 cores."""
    from dime_offline.trainers.offline import PretrainConfig, pretrain

    pre = pretrain(PretrainConfig(
        data=str(tf.PENDULUM_SAMPLE), steps=1500, out_dir=str(tmp_path / "pre"), eval_every=1500, eval_episodes=5,
        quiet=True, tensorboard=False,
    ))
    boundary = pre.loop.final.stats.return_mean
    assert boundary > -700  # a pretrained policy worth keeping (random actions: about -1240)
    out = tmp_path / "ft"
    run = finetune(FinetuneConfig(
        env_id="Pendulum-v1", checkpoint=str(tmp_path / "pre"), data=str(tf.PENDULUM_SAMPLE), steps=300, out_dir=str(out),
        eval_every=100, eval_episodes=5, quiet=True, tensorboard=False, agent={"actor_lr": 3e-2, "critic_lr": 3e-2},
    ))
    with open(out / "metrics.csv") as handle:
        learner = [float(r["value"]) for r in csv.DictReader(handle) if r["key"] == "eval/selection_learner"]
    assert len(learner) == 3 and max(learner) < boundary - 300  # the learner unlearned at every evaluation
    reported = [r.stats.return_mean for r in run.loop.evaluations]
    assert reported == pytest.approx([boundary] * 3)  # the pretrained policy, on the same episodes, every time
    assert read_checkpoint_meta(out).extra["champion"]["step"] == 0
    deployed = evaluate_checkpoint(EvaluateConfig(checkpoint=str(out)))
    assert deployed.stats.return_mean == pytest.approx(boundary)
