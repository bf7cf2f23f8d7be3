"""The acting chain (nets/acting.py): cached constants, bare torch steps and NumPy steps give the module
chain's actions, and the cache follows the parameters, including the fused Adam step's in-place updates."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dime_offline.agent.dime import DIMEAgent
from dime_offline.nets import acting
from dime_offline.nets.diffusion import DiffusionPolicy
from tests.agent.test_agent import ACT, OBS, SMALL, run

# These tests perturb and update the live networks, so the agents act with them (no average).
LIVE = dataclasses.replace(SMALL, acting_average_decay=0.0)
WIDE = (64, 64)  # NumPy steps up to 64 rows (SMALL_BATCH_MAX_PRODUCT / 64^2)


def trained_like_policy(seed: int = 0) -> DiffusionPolicy:
    """A policy whose every parameter is away from its initial value (the output layer starts at 1e-8)."""
    torch.manual_seed(seed)
    policy = DiffusionPolicy(OBS, ACT, n_steps=6, score_hidden=WIDE, n_frequencies=8, time_hidden=16)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return policy


@pytest.mark.parametrize("rows", [1, 5, 100])
@pytest.mark.parametrize("noise_free", [False, True])
def test_cached_constants_give_the_same_actions_on_the_same_noise(rows: int, noise_free: bool) -> None:
    policy = trained_like_policy()
    assert acting.small_batch_applies(policy.score_net, rows, torch.device("cpu")) == (rows <= 64)
    obs = torch.randn(rows, OBS)
    cache = acting.ActingConstantsCache()
    with torch.inference_mode():
        reference_generator = torch.Generator().manual_seed(3)
        reference = policy.sample_action(obs, generator=reference_generator, noise_free=noise_free)
        generator = torch.Generator().manual_seed(3)
        got = policy.sample_action(obs, generator=generator, noise_free=noise_free, constants=cache.get(policy))
        noise = torch.randn(policy.n_steps + 1, rows, ACT)
        from_noise = policy.action_from_noise(obs, noise, cache.get(policy))
        from_noise_reference = policy.action_from_noise(obs, noise)
    assert reference.abs().max() > 0.1  # not a chain stuck at zero
    # NumPy steps: float32 rounding apart; bare torch steps: the module chain's operations, the same bits
    tolerance = 1e-6 if rows <= 64 else 0.0
    torch.testing.assert_close(got, reference, atol=tolerance, rtol=0)
    torch.testing.assert_close(from_noise, from_noise_reference, atol=tolerance, rtol=0)
    assert torch.equal(generator.get_state(), reference_generator.get_state())  # the same draws from the stream


@pytest.mark.parametrize("rows", [4, 10, 11, 16])
def test_a_256_wide_net_multiplies_batches_in_single_thread_blocks(rows: int) -> None:
    """The presets' 256-wide score net: up to 10 rows run NumPy steps whose hidden products are taken
    4 rows at a time (so OpenBLAS stays on one thread), and give the module chain's actions."""
    torch.manual_seed(1)
    policy = DiffusionPolicy(OBS, ACT, n_steps=4, score_hidden=(256, 256), n_frequencies=8, time_hidden=16)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert acting.small_batch_applies(policy.score_net, rows, torch.device("cpu")) == (rows <= 10)
    blocks = acting._row_blocks(rows, np.empty((256, 256), np.float32))
    assert [b.stop - b.start for b in blocks] == [4] * (rows // 4) + ([rows % 4] if rows % 4 else [])
    obs, noise = torch.randn(rows, OBS), torch.randn(policy.n_steps + 1, rows, ACT)
    with torch.inference_mode():
        got = policy.action_from_noise(obs, noise, acting.ActingConstantsCache().get(policy))
        reference = policy.action_from_noise(obs, noise)
    assert reference.abs().max() > 0.1
    torch.testing.assert_close(got, reference, atol=1e-6 if rows <= 10 else 0.0, rtol=0)


def test_the_cache_follows_in_place_parameter_changes_and_a_frozen_one_does_not() -> None:
    policy = trained_like_policy()
    cache = acting.ActingConstantsCache()
    first = cache.get(policy)
    assert cache.get(policy) is first  # unchanged parameters: kept
    with torch.no_grad():
        policy.score_net.time_mlp[0].weight[0, 0] += 1.0  # a time-MLP weight changes the time part
    changed = cache.get(policy)
    assert changed is not first and not torch.equal(changed.time_part, first.time_part)
    torch.testing.assert_close(changed.time_part, policy.acting_constants().time_part, atol=0, rtol=0)
    cache.freeze()
    with torch.no_grad():
        policy.raw_dt += 0.5
    assert cache.get(policy) is changed


def test_act_after_fused_adam_updates_uses_the_new_parameters() -> None:
    """Fused Adam writes parameters in place without bumping their version: the cache compares values."""
    cfg = dataclasses.replace(LIVE, score_hidden=WIDE, actor_lr=0.05)
    agent = DIMEAgent(OBS, ACT, cfg, seed=0)
    obs = np.random.default_rng(1).normal(size=(1, OBS)).astype(np.float32)
    before = agent.act(obs, deterministic=True)
    time_weight = agent.policy.score_net.time_mlp[0].weight
    version = time_weight._version
    kept = time_weight.detach().clone()
    run(agent, 3)  # the third update steps the actor
    assert agent.actor_updates == 1 and not torch.equal(time_weight.detach(), kept)
    assert time_weight._version == version  # why the cache cannot key on versions
    after = agent.act(obs, deterministic=True)
    with torch.inference_mode():
        expected = agent._best_of_k(torch.from_numpy(obs), agent.cfg.act_candidates).clamp(-1, 1).numpy()
    np.testing.assert_allclose(after, expected, atol=1e-6)
    assert not np.allclose(after, before, atol=1e-4)


@pytest.mark.parametrize("mode", ["stochastic", "noise_free", "best_of_k"])
@pytest.mark.parametrize("rows", [1, 3, 20])
def test_agent_act_matches_the_uncached_chain(mode: str, rows: int) -> None:
    cfg = dataclasses.replace(LIVE, score_hidden=WIDE, deterministic_act="best_of_k" if mode == "best_of_k" else "noise_free")
    agent = DIMEAgent(OBS, ACT, cfg, seed=0)
    with torch.no_grad():
        for p in agent.policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    obs = np.random.default_rng(rows).normal(size=(rows, OBS)).astype(np.float32)
    state = agent.act_generator.get_state()
    got = agent.act(obs, deterministic=mode != "stochastic")
    agent.act_generator.set_state(state)
    x = torch.from_numpy(obs)
    with torch.inference_mode():
        if mode == "stochastic":
            expected = agent.policy.sample_action(x, generator=agent.act_generator)
        elif mode == "noise_free":
            expected = agent.policy.sample_action(x, noise_free=True)
        else:
            expected = agent._best_of_k(x, cfg.act_candidates)
    np.testing.assert_allclose(got, expected.clamp(-1, 1).numpy(), atol=1e-6)


def test_cached_constants_refuse_gradients() -> None:
    policy = trained_like_policy()
    constants = policy.acting_constants()
    with pytest.raises(RuntimeError, match="no gradient"):
        policy.sample_action(torch.randn(2, OBS), constants=constants)
