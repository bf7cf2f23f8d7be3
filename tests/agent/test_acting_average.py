"""Averaged weights for acting (``DIMEConfig.acting_average_decay``): the exponential moving average of the
policy and critics, used by deterministic acting, checkpoints and deployment; exploration stays live."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import test_agent
import torch
from test_agent import ACT, OBS, make_batch

from dime_offline import load_policy
from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_checkpoint, save_checkpoint
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import ConfigError
from dime_offline.export import export_policy

DECAY = 0.8
# batch renorm past its warm-up, float32 products: deployment's precision, so actions compare to 1e-5;
# SMALL keeps no average (the live weights), AVERAGED one
SMALL = dataclasses.replace(test_agent.SMALL, brn_warmup_steps=2, matmul_precision="float32", acting_average_decay=0.0)
AVERAGED = dataclasses.replace(SMALL, acting_average_decay=DECAY)
SPACES = SpaceSpec(obs_dim=OBS, action_dim=ACT, action_low=(-2.0, -1.0), action_high=(2.0, 3.0))


def trained(cfg: DIMEConfig, updates: int = 6, seed: int = 0) -> DIMEAgent:
    agent = DIMEAgent(OBS, ACT, cfg, seed=seed)
    for i in range(updates):
        agent.update(make_batch(i))
    return agent


def states(agent: DIMEAgent) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(live, acting) weights and buffers of policy and critics, flat, cloned."""
    def flat(policy: torch.nn.Module, critic: torch.nn.Module) -> dict[str, torch.Tensor]:
        return {f"{part}.{k}": v.clone() for part, m in (("policy", policy), ("critic", critic)) for k, v in m.state_dict().items()}
    return flat(agent.policy, agent.critic), flat(agent.acting_policy, agent.acting_critic)


def live_only_copy(agent: DIMEAgent, weights_from: str) -> DIMEAgent:
    """An agent without an average whose live networks hold ``agent``'s live or acting weights."""
    copy = DIMEAgent(OBS, ACT, SMALL, seed=0)
    copy.policy.load_state_dict(getattr(agent, weights_from + "policy").state_dict())
    copy.critic.load_state_dict(getattr(agent, weights_from + "critic").state_dict())
    copy.act_generator.set_state(agent.act_generator.get_state())
    return copy


OBS_ROWS = np.random.default_rng(0).normal(size=(7, OBS)).astype(np.float32)


def test_the_average_is_the_closed_form_moving_average_of_the_live_weights() -> None:
    agent = DIMEAgent(OBS, ACT, AVERAGED, seed=0)
    history = [states(agent)[0]]
    for i in range(5):
        agent.update(make_batch(i))
        history.append(states(agent)[0])
    live, average = states(agent)
    n = len(history) - 1
    for key, value in average.items():
        if not value.is_floating_point():  # batch-renorm step counts follow the live ones
            assert torch.equal(value, live[key]), key
            continue
        # a_n = d^n w_0 + sum_i (1 - d) d^(n - i) w_i
        expected = DECAY**n * history[0][key].double() + sum(
            (1 - DECAY) * DECAY ** (n - i) * history[i][key].double() for i in range(1, n + 1)
        )
        torch.testing.assert_close(value.double(), expected, atol=1e-6, rtol=1e-5, msg=key)
    changed = [k for k, v in average.items() if v.is_floating_point() and not torch.equal(v, live[k])]
    assert any(k.startswith("policy.") for k in changed) and any("running_mean" in k for k in changed)
    without = trained(SMALL, updates=2)
    assert without.acting_policy is without.policy and without.acting_critic is without.critic
    with pytest.raises(ConfigError, match="acting_average_decay"):
        dataclasses.replace(SMALL, acting_average_decay=1.0)
    with pytest.raises(ConfigError, match="acting_average_decay"):
        dataclasses.replace(SMALL, acting_average_decay=-0.1)


@pytest.mark.parametrize("mode", ["noise_free", "best_of_k"])
def test_deterministic_acting_uses_the_average_and_exploration_the_live_weights(mode: str) -> None:
    agent = trained(dataclasses.replace(AVERAGED, deterministic_act=mode))
    on_average, on_live = live_only_copy(agent, "acting_"), live_only_copy(agent, "")
    for other in (on_average, on_live):
        other.cfg = dataclasses.replace(other.cfg, deterministic_act=mode)
    deterministic = agent.act(OBS_ROWS, deterministic=True)
    np.testing.assert_allclose(deterministic, on_average.act(OBS_ROWS, deterministic=True), atol=1e-6, rtol=0)
    assert np.abs(deterministic - on_live.act(OBS_ROWS, deterministic=True)).max() > 1e-4  # the average is not the live policy
    np.testing.assert_allclose(agent.act(OBS_ROWS), on_live.act(OBS_ROWS), atol=1e-6, rtol=0)  # the same draws, live weights
    # One cached set of acting constants per policy: alternating modes recomputes nothing.
    kept = agent.acting_constants.get(agent.acting_policy)
    assert agent.acting_constants.get(agent.policy) is not kept
    assert agent.acting_constants.get(agent.acting_policy) is kept


def test_the_state_dict_carries_the_average_and_a_resumed_agent_continues_it() -> None:
    agent = trained(AVERAGED)
    state = agent.state_dict()
    assert {"acting_policy", "acting_critic"} <= state.keys()
    clone = DIMEAgent(OBS, ACT, AVERAGED, seed=5)
    clone.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(states(clone)[1].values(), states(agent)[1].values()))
    for i in range(10, 14):
        agent.update(make_batch(i))
        clone.update(make_batch(i))
    assert all(torch.equal(a, b) for a, b in zip(states(clone)[1].values(), states(agent)[1].values()))
    assert "acting_policy" not in trained(SMALL, updates=1).state_dict()


def test_a_state_without_an_average_starts_it_at_the_live_weights_and_an_agent_without_one_ignores_it() -> None:
    old = trained(SMALL).state_dict()  # an older checkpoint, or one trained with decay 0
    agent = DIMEAgent(OBS, ACT, AVERAGED, seed=1)
    agent.load_state_dict(old)
    live, average = states(agent)
    assert all(torch.equal(average[k], v) for k, v in live.items())
    plain = DIMEAgent(OBS, ACT, SMALL, seed=1)
    plain.load_state_dict(trained(AVERAGED).state_dict())
    assert plain.acting_policy is plain.policy


def test_changing_the_decay_of_a_built_agent_keeps_starts_or_drops_the_average() -> None:
    agent = trained(SMALL)
    agent.set_acting_average_decay(0.5)  # a new average, from the live weights
    live, average = states(agent)
    assert agent.acting_policy is not agent.policy and all(torch.equal(average[k], v) for k, v in live.items())
    agent.update(make_batch(20))
    kept = agent.acting_policy
    agent.set_acting_average_decay(0.9)
    assert agent.acting_policy is kept and agent.cfg.acting_average_decay == 0.9
    agent.set_acting_average_decay(0.0)
    assert agent.acting_policy is agent.policy and agent.acting_critic is agent.critic
    with pytest.raises(ConfigError):
        agent.set_acting_average_decay(1.5)


@pytest.mark.parametrize("mode", ["noise_free", "best_of_k"])
def test_load_policy_and_export_act_with_the_average(tmp_path: Path, mode: str) -> None:
    cfg = dataclasses.replace(AVERAGED, deterministic_act=mode)
    agent = trained(cfg)
    save_checkpoint(tmp_path / "ckpt", agent, cfg, None, spaces=SPACES)
    low, half_range = np.array(SPACES.action_low), (np.array(SPACES.action_high) - np.array(SPACES.action_low)) / 2
    expected = low + (agent.act(OBS_ROWS, deterministic=True) + 1) * half_range
    live = low + (live_only_copy(agent, "").act(OBS_ROWS, deterministic=True) + 1) * half_range
    assert np.abs(expected - live).max() > 1e-4
    np.testing.assert_allclose(load_policy(tmp_path / "ckpt")(OBS_ROWS), expected, atol=1e-5, rtol=0)
    # deployment acts with the average in every mode: the stochastic chain too
    stochastic = load_policy(tmp_path / "ckpt", deterministic=False, seed=3)
    on_average = live_only_copy(agent, "acting_")
    on_average.act_generator.manual_seed(3)
    np.testing.assert_allclose(stochastic.act(OBS_ROWS), on_average.act(OBS_ROWS), atol=1e-5, rtol=0)
    export_policy(tmp_path / "ckpt", tmp_path / "policy.pt", fmt="torchscript")
    with torch.no_grad():
        exported = torch.jit.load(str(tmp_path / "policy.pt"))(torch.from_numpy(OBS_ROWS)).numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-5, rtol=0)
    # a loaded checkpoint keeps its average for training on
    reloaded, _, _ = load_checkpoint(tmp_path / "ckpt")
    assert all(torch.equal(a, b) for a, b in zip(states(reloaded)[1].values(), states(agent)[1].values()))
