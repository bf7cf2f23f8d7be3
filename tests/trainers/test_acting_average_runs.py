"""``agent.acting_average_decay`` through the trainers: set on fine-tuning a checkpoint that has no
average, kept in the run's checkpoint, acted with by ``evaluate`` (which reproduces the run's score),
and resumed bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import trainer_factories as tf
from test_resume import (
    Killed,
    _assert_same_state,
    _finetune_cfg,
    _kill_at_update,
    _metrics,
    _state,
)

from dime_offline.checkpoints import load_checkpoint, resolve_checkpoint_dir
from dime_offline.errors import ConfigError
from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint
from dime_offline.trainers.online import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained Pendulum checkpoint without an average (decay 0, the default)."""
    return tf.pretrained_pendulum(tmp_path_factory.mktemp("average") / "pre")


def test_finetune_starts_an_average_on_a_checkpoint_and_evaluate_acts_with_it(pretrained: Path, tmp_path: Path) -> None:
    out = tmp_path / "ft"
    result = finetune(FinetuneConfig(
        env_id="Pendulum-v1", checkpoint=str(pretrained), steps=50, out_dir=str(out), agent={"acting_average_decay": 0.9},
        eval_every=0, eval_episodes=2, max_episode_steps=20, tensorboard=False, quiet=True,
    ))
    directory = resolve_checkpoint_dir(out / "checkpoint")  # the learner (the run directory stands for its champion)
    assert json.loads((directory / "config.json").read_text())["acting_average_decay"] == 0.9
    agent, _, _ = load_checkpoint(directory)
    assert agent.critic_updates > 0 and agent.acting_policy is not agent.policy
    assert any(not torch.equal(a, b) for a, b in zip(agent.acting_policy.parameters(), agent.policy.parameters()))
    # evaluate acts with the run's deployed policy (its champion, acting with the average) as the run's
    # deterministic evaluation did: the same score
    evaluated = evaluate_checkpoint(EvaluateConfig(checkpoint=str(out)))
    assert evaluated.as_run and evaluated.stats.returns == result.loop.final.stats.returns
    # a decay outside [0, 1) is refused in one line
    with pytest.raises(ConfigError, match="acting_average_decay"):
        finetune(FinetuneConfig(
            env_id="Pendulum-v1", checkpoint=str(pretrained), steps=5, out_dir=str(tmp_path / "bad"),
            agent={"acting_average_decay": 1.0}, quiet=True, tensorboard=False,
        ))


def test_a_fine_tuning_with_an_average_killed_mid_run_resumes_to_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = {**tf.TINY_AGENT, "learning_starts": 30, "acting_average_decay": 0.9}
    whole = finetune(_finetune_cfg(tmp_path / "whole", agent=agent))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 2 * (80 - 30))  # after the periodic checkpoint at env step 70
        with pytest.raises(Killed):
            finetune(_finetune_cfg(tmp_path / "killed", agent=agent))
    resumed = finetune(_finetune_cfg(tmp_path / "killed", agent=agent, resume=True))
    assert "acting_policy" in _state(resumed.out_dir)
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)  # the evaluations act with the resumed average
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))


def test_the_average_stretches_over_a_share_of_the_run() -> None:
    from dime_offline.trainers.online import run_length_decay

    assert run_length_decay(0.99, 0.1, 10_000) == pytest.approx(0.999)  # 1000-update horizon
    assert run_length_decay(0.99, 0.1, 40_000) == pytest.approx(0.99975)
    assert run_length_decay(0.99, 0.1, 1_000) == 0.99  # short runs keep the agent's decay
    assert run_length_decay(0.99, 0.1, 5) == 0.99
    assert run_length_decay(0.0, 0.1, 10_000) == 0.0  # no average stays no average
    assert run_length_decay(0.99, None, 10_000) == 0.99


@pytest.mark.parametrize(("share", "expected"), [(0.1, 0.9), (None, 0.5)])
def test_finetune_records_the_decay_it_acted_with(pretrained: Path, tmp_path: Path, share: float | None, expected: float) -> None:
    out = tmp_path / "ft"
    finetune(FinetuneConfig(
        env_id="Pendulum-v1", checkpoint=str(pretrained), steps=50, out_dir=str(out), agent={"acting_average_decay": 0.5},
        acting_average_share=share, eval_every=0, eval_episodes=1, max_episode_steps=20, tensorboard=False, quiet=True,
    ))  # 50 env steps x utd 2 = 100 updates: a 10-update horizon is decay 0.9
    assert json.loads((resolve_checkpoint_dir(out / "checkpoint") / "config.json").read_text())["acting_average_decay"] == pytest.approx(expected)
    with pytest.raises(ConfigError, match="acting_average_share"):
        FinetuneConfig(env_id="Pendulum-v1", acting_average_share=0.0)
