"""The critics' value support grows online when the values reach its top (trainers/handover.py
``SupportGrowth``, ``DIMEAgent.extend_value_support``): only clipped values move, and upwards; a critic
whose true values lie above the fitted support learns them only when it may grow; fine-tuning records
the grown support in its checkpoints and a killed run resumes to the same run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import trainer_factories as tf
from test_resume import Killed, _assert_same_state, _kill_at_update, _metrics, _state

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_checkpoint
from dime_offline.trainers import handover
from dime_offline.trainers.handover import HandoverConfig, SupportGrowth
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.types import Batch

OBS, ACT = 3, 1


def _agent(**changes) -> DIMEAgent:
    tiny = {k: tuple(v) if isinstance(v, list) else v for k, v in tf.TINY_AGENT.items()}
    cfg = DIMEConfig.preset("cpu", **{**tiny, "gamma": 0.9, "v_min": -2.0, "v_max": 4.0, "n_atoms": 25,
                                      "alpha_mode": "fixed", "alpha_init": 1e-6, **changes})
    return DIMEAgent(OBS, ACT, cfg, seed=0)


def _constant_reward_batch(rows: int, reward: float = 1.0) -> Batch:
    """Reward 1 for ever at gamma 0.9: every value is 10, above the support's top (4)."""
    gen = torch.Generator().manual_seed(0)
    return Batch(
        obs=torch.randn(rows, OBS, generator=gen), action=torch.rand(rows, ACT, generator=gen) * 2 - 1,
        reward=torch.full((rows,), reward), next_obs=torch.randn(rows, OBS, generator=gen),
        terminated=torch.zeros(rows), truncated=torch.zeros(rows), mc_return=torch.full((rows,), float("nan")),
        is_offline=torch.zeros(rows),
    )


def _distributions(agent: DIMEAgent, batch: Batch, critic: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        was_training = critic.training
        critic.eval()
        probs = critic(agent.normalize_obs(batch.obs), batch.action).softmax(-1)
        critic.train(was_training)
    return probs


def test_extending_the_support_moves_only_clipped_values_and_only_upwards() -> None:
    agent = _agent(critic_lr=3e-3)
    batch = _constant_reward_batch(agent.cfg.batch_size)
    for _ in range(150):  # values climb into the top atom
        agent.update(batch)
    support = agent.critic.support.clone()
    spacing = float(support[1] - support[0])
    before = {name: _distributions(agent, batch, critic) for name, critic in (("live", agent.critic), ("average", agent.acting_critic))}
    agent.extend_value_support(12)

    assert agent.cfg.n_atoms == 37 and agent.cfg.v_max == pytest.approx(4.0 + 12 * spacing)
    assert torch.allclose(agent.critic.support[:25], support, atol=1e-6)
    for name, critic in (("live", agent.critic), ("average", agent.acting_critic)):
        p_old = before[name]
        q_old = p_old @ support
        q_new = _distributions(agent, batch, critic) @ critic.support
        top = p_old[..., -1]
        assert top.max() > 0.05, name  # the check has clipped values to move
        assert (q_new >= q_old - 1e-5).all(), name
        bound = top * (0.59 * (support[-1] - q_old) + 0.93 * spacing) + 1e-5
        assert (q_new - q_old <= bound).all(), name
    head = agent.critic.head
    for param in (head.weight, head.bias):
        moments = [v for v in agent.critic_optimizer.state[param].values() if torch.is_tensor(v) and v.dim() == param.dim()]
        assert moments and all(m.shape == param.shape for m in moments)
    agent.update(batch)  # the grown head trains
    copy = DIMEAgent(OBS, ACT, agent.cfg, seed=1)
    copy.load_state_dict(agent.state_dict())
    assert torch.equal(copy.critic.support, agent.critic.support)
    with pytest.raises(ValueError, match="extra_atoms must be >= 1"):
        agent.extend_value_support(0)


def test_a_critic_learns_values_above_its_support_only_when_the_support_may_grow() -> None:
    final = {}
    for grow in (False, True):
        agent = _agent(critic_lr=3e-3)
        batch = _constant_reward_batch(agent.cfg.batch_size)
        growth = SupportGrowth()
        for _ in range(1500):
            metrics = agent.update(batch)
            if grow:
                growth.observe(agent, metrics["critic/top_atom_mass"])
        final[grow] = (metrics["critic/q_data"], agent.cfg.v_max)
    assert final[False][0] <= 4.0 and final[False][1] == 4.0
    assert final[True][1] > 4.0
    assert final[True][0] > 4.5, final  # on its way to the true 10, past the fitted top


def test_growth_waits_for_the_running_average_and_stops_at_the_cap() -> None:
    agent = _agent()
    growth = SupportGrowth()
    for _ in range(500):
        assert growth.observe(agent, 0.09) is None  # never above the limit on average
    growth = SupportGrowth()
    steps = next(n for n in range(1, 100) if growth.observe(agent, 1.0) is not None)
    assert steps == 11  # 1 - 0.99^11 > 0.1 > 1 - 0.99^10
    assert agent.cfg.n_atoms == 25 + 12 and growth.top_atom_mass == 0.0
    capped = _agent(n_atoms=handover.MAX_GROWN_ATOMS - 3)
    growth = SupportGrowth(top_atom_mass=1.0)
    assert growth.observe(capped, 1.0) is not None and capped.cfg.n_atoms == handover.MAX_GROWN_ATOMS
    growth.top_atom_mass = 1.0
    assert growth.observe(capped, 1.0) is None


def test_an_episodes_returns_near_the_top_grow_the_support_until_they_lie_below_its_top_sixth() -> None:
    agent = _agent()  # support [-2, 4]: the top sixth starts at 3
    growth = SupportGrowth(top_atom_mass=0.05)
    assert growth.observe_return(agent, float("nan")) is None  # no episode has ended
    assert growth.observe_return(agent, 2.9) is None and agent.cfg.v_max == 4.0 and growth.top_atom_mass == 0.05
    assert growth.observe_return(agent, 3.1) == (4.0, pytest.approx(7.0))  # one extension: 12 atoms, width 9
    assert agent.cfg.n_atoms == 37 and growth.top_atom_mass == 0.0
    old_v_max, new_v_max = growth.observe_return(agent, 40.0)  # several extensions in one go
    cfg = agent.cfg
    assert old_v_max == pytest.approx(7.0) and new_v_max == pytest.approx(cfg.v_max)
    assert 40.0 <= cfg.v_max - handover.RETURN_HEADROOM * (cfg.v_max - cfg.v_min)
    spacing = (cfg.v_max - cfg.v_min) / (cfg.n_atoms - 1)
    assert spacing == pytest.approx(6.0 / 24)  # the spacing pretraining fitted stays
    capped = _agent(n_atoms=handover.MAX_GROWN_ATOMS - 3)
    assert growth.observe_return(capped, 1e9) is not None and capped.cfg.n_atoms == handover.MAX_GROWN_ATOMS
    assert growth.observe_return(capped, 1e9) is None


def _finetune_cfg(out: Path, **changes) -> FinetuneConfig:
    # Pendulum's values (-100 to -1600) lie far above this support: the top atom fills within a few updates.
    cfg = FinetuneConfig(
        env_id="Pendulum-v1", steps=90, out_dir=str(out), seed=4,
        agent={**tf.TINY_AGENT, "learning_starts": 30, "v_min": -2000.0, "v_max": -1990.0, "n_atoms": 11, "critic_lr": 3e-3},
        eval_every=40, eval_episodes=1, checkpoint_every=35, log_every=10, max_episode_steps=25,
        handover=HandoverConfig(grow_value_support=True), tensorboard=False, quiet=True,
    )
    return dataclasses.replace(cfg, **changes)


def test_fine_tuning_grows_the_support_records_it_and_resumes_to_the_same_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = finetune(_finetune_cfg(tmp_path / "whole"))
    saved = json.loads((tmp_path / "whole" / "checkpoint" / "config.json").read_text())
    agent_cfg = saved.get("agent", saved)
    assert agent_cfg["v_max"] > -1990.0 and agent_cfg["n_atoms"] > 11
    v_max_logged = {int(step): float(v) for step, k, v in _metrics(whole.out_dir) if k == "online/v_max"}
    # the first episode (25 steps, returns near -100) ends before the first update and grows the support
    assert all(v > -1990.0 for v in v_max_logged.values()) and v_max_logged[90] == pytest.approx(agent_cfg["v_max"])
    first_grown = min(v_max_logged)
    for deployed in ("champion", "best"):  # a champion taken before the growth keeps its own support
        agent, _, _ = load_checkpoint(Path(whole.out_dir) / deployed)
        assert agent.critic.support.shape[0] == agent.cfg.n_atoms

    with monkeypatch.context() as patch:  # killed after the periodic checkpoint at 70, after the growth
        _kill_at_update(patch, 2 * (80 - 30))
        with pytest.raises(Killed):
            finetune(_finetune_cfg(tmp_path / "killed"))
    resumed = finetune(_finetune_cfg(tmp_path / "killed", resume=True))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))
    assert first_grown <= 70  # grown before the checkpoint the resumed run started from

    for name, setting in (("never", False), ("default", None)):  # from scratch the default keeps the preset's support
        fixed = finetune(_finetune_cfg(tmp_path / name, handover=HandoverConfig(grow_value_support=setting)))
        saved = json.loads((Path(fixed.out_dir) / "checkpoint" / "config.json").read_text())
        assert saved.get("agent", saved)["v_max"] == -1990.0, name


def test_fine_tuning_a_pretrained_agent_grows_its_support_by_default(tmp_path: Path) -> None:
    low_support = {"v_min": -2000.0, "v_max": -1990.0, "n_atoms": 11, "critic_lr": 3e-3}
    pretrain(PretrainConfig(
        data=str(tf.PENDULUM_SAMPLE), steps=3, out_dir=str(tmp_path / "pre"), agent={**tf.TINY_AGENT, **low_support},
        eval_every=0, eval_episodes=1, max_episode_steps=5, tensorboard=False, quiet=True,
    ))
    # Pendulum's values lie far above this support: the top atom fills and the support grows at ~65 env steps
    # (updates start once the store holds a batch); "never" (False) is the from-scratch test's.
    run = finetune(FinetuneConfig(
        env_id="Pendulum-v1", steps=85, out_dir=str(tmp_path / "tuned"), checkpoint=str(tmp_path / "pre"), seed=4,
        eval_every=0, eval_episodes=1, max_episode_steps=25, tensorboard=False, quiet=True,
    ))
    saved = json.loads((Path(run.out_dir) / "checkpoint" / "config.json").read_text())
    assert saved.get("agent", saved)["v_max"] > -1990.0
