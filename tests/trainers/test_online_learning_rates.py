"""Online learning rates: ``agent.critic_lr``, ``agent.actor_lr`` and ``agent.alpha_lr`` may be set when
fine-tuning a checkpoint; the optimisers then step at those rates with the moments pretraining left,
the run's checkpoint records the rates, and a resumed run is the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import trainer_factories as tf
from test_resume import Killed, _assert_same_state, _finetune_cfg, _kill_at_update, _metrics, _state

from dime_offline.checkpoints import load_checkpoint, resolve_checkpoint_dir
from dime_offline.errors import ConfigError
from dime_offline.trainers.online import FinetuneConfig, finetune

ONLINE_RATES = {"critic_lr": 2e-4, "actor_lr": 5e-5, "alpha_lr": 3e-4}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tf.pretrained_pendulum(tmp_path_factory.mktemp("rates") / "pre")


def _rates(agent) -> tuple[float, float, float]:
    return tuple(opt.param_groups[0]["lr"] for opt in (agent.critic_optimizer, agent.actor_optimizer, agent.alpha_optimizer))


def test_fine_tuning_a_checkpoint_at_other_learning_rates_keeps_the_moments(pretrained: Path, tmp_path: Path) -> None:
    before, _, _ = load_checkpoint(pretrained)
    assert _rates(before) == (3e-4, 3e-4, 1e-3)  # pretraining's (the preset's)
    steps_before = before.actor_optimizer.state_dict()["state"][0]["step"]
    out = tmp_path / "ft"
    finetune(FinetuneConfig(
        env_id="Pendulum-v1", checkpoint=str(pretrained), steps=40, out_dir=str(out), agent=dict(ONLINE_RATES),
        eval_every=0, eval_episodes=1, max_episode_steps=20, tensorboard=False, quiet=True,
    ))
    saved = json.loads((resolve_checkpoint_dir(out / "checkpoint") / "config.json").read_text())
    assert {name: saved[name] for name in ONLINE_RATES} == ONLINE_RATES
    after, cfg, _ = load_checkpoint(out / "checkpoint")
    assert _rates(after) == (2e-4, 5e-5, 3e-4) and cfg.actor_lr == 5e-5
    # Adam went on from pretraining's moments: its step count continues past pretraining's
    assert after.actor_optimizer.state_dict()["state"][0]["step"] > steps_before


def test_the_optimisers_step_at_the_new_rate(pretrained: Path) -> None:
    """The same batch, the same moments: the actor's first step is ~lr-proportional (Adam's step is
    lr x m / sqrt(v) with the same m and v), so a tenth of the rate moves the weights a tenth as far."""
    moves = {}
    for lr in (3e-4, 3e-5):
        agent, _, _ = load_checkpoint(pretrained)
        agent.set_learning_rates(agent.cfg.critic_lr, lr, agent.cfg.alpha_lr)
        start = [p.detach().clone() for p in agent.policy.parameters()]
        obs = torch.zeros(8, 3)  # Pendulum's observation width
        agent.actor_optimizer.zero_grad()
        agent.policy.sample(obs, generator=torch.Generator().manual_seed(1)).action.sum().backward()
        agent.actor_optimizer.step()
        moves[lr] = sum(float((p.detach() - s).abs().sum()) for p, s in zip(agent.policy.parameters(), start))
    assert moves[3e-5] == pytest.approx(moves[3e-4] / 10, rel=1e-3)


def test_a_rate_that_is_not_positive_is_refused_in_one_line(pretrained: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning rates must be > 0"):
        finetune(FinetuneConfig(
            env_id="Pendulum-v1", checkpoint=str(pretrained), steps=5, out_dir=str(tmp_path / "bad"),
            agent={"actor_lr": 0.0}, quiet=True, tensorboard=False,
        ))
    assert not (tmp_path / "bad").exists()


def test_a_fine_tuning_at_other_rates_killed_mid_run_resumes_to_the_same_run(
    pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    changes = {"checkpoint": str(pretrained), "agent": dict(ONLINE_RATES)}
    whole = finetune(_finetune_cfg(tmp_path / "whole", **changes))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 2 * 40)  # updates from env step 32 (one batch stored), two per step: after the checkpoint at step 70
        with pytest.raises(Killed):
            finetune(_finetune_cfg(tmp_path / "killed", **changes))
    resumed = finetune(_finetune_cfg(tmp_path / "killed", resume=True, **changes))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))
    agent, _, _ = load_checkpoint(Path(resumed.out_dir) / "checkpoint")
    assert _rates(agent) == (2e-4, 5e-5, 3e-4)
