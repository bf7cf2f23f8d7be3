"""DIMEAgent: update cadence, frozen critic in the actor step, clipping, hooks, state, determinism."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.agent.regularization import ActorStepContext, CriticStepContext
from dime_offline.errors import ConfigError
from dime_offline.types import Batch

OBS, ACT, ROWS = 4, 2, 32

SMALL = DIMEConfig.preset(
    "cpu",
    batch_size=ROWS,
    critic_hidden=(32, 32),
    score_hidden=(32, 32),
    score_frequencies=8,
    score_time_hidden=16,
    diffusion_steps=4,
    v_min=-20.0,
    v_max=20.0,
)


def make_batch(seed: int, rows: int = ROWS) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(rows, OBS, generator=gen),
        action=torch.rand(rows, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(rows, generator=gen),
        next_obs=torch.randn(rows, OBS, generator=gen),
        terminated=(torch.rand(rows, generator=gen) < 0.2).float(),
        truncated=torch.zeros(rows),
        mc_return=torch.full((rows,), float("nan")),
        is_offline=torch.zeros(rows),
    )


def run(agent: DIMEAgent, n: int, start: int = 0) -> list[dict[str, float]]:
    return [agent.update(make_batch(start + i)) for i in range(n)]


def test_presets_hold_the_authors_values() -> None:
    paper = DIMEConfig.preset("paper")
    expected = dict(
        gamma=0.99, batch_size=256, utd=2, policy_delay=3, learning_starts=5000, critic_hidden=(2048, 2048),
        n_critics=2, n_atoms=101, v_min=-1600.0, v_max=1600.0, critic_entropy_coef=0.005, brn_momentum=0.01,
        brn_warmup_steps=100_000, brn_eps=1e-3, critic_lr=3e-4, actor_lr=3e-4, alpha_lr=1e-3, adam_beta1=0.5,
        actor_grad_clip=1.0, alpha_init=1.0, alpha_mode="auto", diffusion_steps=16, prior_std=2.5, dt_init=0.1,
        friction_init=1.0, score_hidden=(256, 256, 256), score_frequencies=256, score_time_hidden=256,
    )
    assert {k: getattr(paper, k) for k in expected} == expected
    assert paper.target_entropy(6) == -24.0
    full = dataclasses.replace(paper, temperature_statistic="full_bound")
    assert full.target_entropy(1) == pytest.approx(-(4 - 0.5 * math.log(2 * math.pi * math.e * 6.25)))
    assert full.target_entropy(1) == pytest.approx(-1.665, abs=1e-3)
    cpu = DIMEConfig.preset("cpu")
    differing = {f.name for f in dataclasses.fields(DIMEConfig) if getattr(cpu, f.name) != getattr(paper, f.name)}
    assert differing == {"critic_hidden"}
    with pytest.raises(ConfigError, match="unknown DIME preset"):
        DIMEConfig.preset("gpu")
    with pytest.raises(ConfigError):
        DIMEConfig.preset("cpu", v_min=5.0, v_max=1.0)


def test_actor_and_temperature_update_on_every_third_critic_update() -> None:
    agent = DIMEAgent(OBS, ACT, SMALL, seed=0)
    metrics = run(agent, 7)
    with_actor = [i + 1 for i, m in enumerate(metrics) if "actor/loss" in m]
    assert with_actor == [3, 6]
    assert agent.critic_updates == 7 and agent.actor_updates == 2
    for m in metrics:
        assert all(math.isfinite(v) for v in m.values())
    assert agent.critic.training


def test_actor_step_leaves_critic_weights_and_batch_statistics_untouched() -> None:
    """Same seed, policy delay 3 vs never: after the 3rd update the critics must be bit-identical."""
    with_actor = DIMEAgent(OBS, ACT, SMALL, seed=0)
    critic_only = DIMEAgent(OBS, ACT, dataclasses.replace(SMALL, policy_delay=10**9), seed=0)
    run(with_actor, 3)
    run(critic_only, 3)
    assert with_actor.actor_updates == 1 and critic_only.actor_updates == 0
    for key, value in with_actor.critic.state_dict().items():
        assert torch.equal(value, critic_only.critic.state_dict()[key]), key


def test_actor_gradients_are_clipped_element_wise() -> None:
    class Push:
        weight = 1.0

        def __call__(self, ctx: ActorStepContext) -> tuple[torch.Tensor, dict[str, float]]:
            return 1e4 * ctx.policy.score_net.out.weight.sum() - 1e4 * ctx.policy.raw_dt, {}

    agent = DIMEAgent(OBS, ACT, SMALL, seed=0, actor_regularizer=Push())
    seen: list[float] = []
    step = agent.actor_optimizer.step

    def spy_step(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.extend(float(p.grad.abs().max()) for p in agent.policy.parameters() if p.grad is not None)
        return step(*args, **kwargs)

    agent.actor_optimizer.step = spy_step  # type: ignore[method-assign]
    run(agent, 3)
    assert max(seen) == 1.0  # the 1e4 gradients were clipped entry-wise, not rescaled by a norm
    assert agent.policy.score_net.out.weight.grad.abs().min() == 1.0


def test_regularizers_receive_context_and_are_skipped_at_zero_weight() -> None:
    calls: dict[str, int] = {"critic": 0, "actor": 0}

    class CriticPenalty:
        weight = 0.0

        def __call__(self, ctx: CriticStepContext) -> tuple[torch.Tensor, dict[str, float]]:
            calls["critic"] += 1
            assert ctx.logits.shape == (2, ROWS, SMALL.n_atoms) and ctx.logits.requires_grad
            sampled = ctx.sample_actions(ctx.obs)
            assert sampled.action.shape == (ROWS, ACT) and not sampled.action.requires_grad
            return self.weight * ctx.logits.square().mean(), {"critic/penalty": 1.0}

    class BehaviourCloning:
        weight = 0.5

        def __call__(self, ctx: ActorStepContext) -> tuple[torch.Tensor, dict[str, float]]:
            calls["actor"] += 1
            assert ctx.q.shape == (ROWS,) and not ctx.critic.training
            bound = ctx.policy.path_log_likelihood_bound(ctx.obs, ctx.batch.action)
            return -self.weight * bound.mean(), {"actor/bc_bound": float(bound.detach().mean())}

    critic_reg, actor_reg = CriticPenalty(), BehaviourCloning()
    agent = DIMEAgent(OBS, ACT, SMALL, seed=0, critic_regularizer=critic_reg, actor_regularizer=actor_reg)
    metrics = run(agent, 3)
    assert calls == {"critic": 0, "actor": 1}
    assert "actor/bc_bound" in metrics[2]
    critic_reg.weight = 2.0  # switched at an offline -> online style boundary
    metrics = run(agent, 1, start=3)
    assert calls["critic"] == 1 and metrics[0]["critic/penalty"] == 1.0


def test_same_seed_gives_identical_metrics_and_another_seed_does_not() -> None:
    a, b, c = (DIMEAgent(OBS, ACT, SMALL, seed=s) for s in (7, 7, 8))
    ma, mb, mc = run(a, 6), run(b, 6), run(c, 6)
    assert ma == mb
    assert ma != mc
    obs = np.random.default_rng(0).normal(size=(3, OBS)).astype(np.float32)
    assert np.array_equal(a.act(obs), b.act(obs))


def test_state_dict_round_trip_resumes_identically() -> None:
    agent = DIMEAgent(OBS, ACT, SMALL, seed=1, obs_normalizer=(np.ones(OBS), 2 * np.ones(OBS)))
    run(agent, 4)
    state = agent.state_dict()
    clone = DIMEAgent(OBS, ACT, SMALL, seed=99)
    clone.load_state_dict(state)
    assert clone.critic_updates == 4 and clone.actor_updates == 1 and clone.alpha == agent.alpha
    assert run(clone, 5, start=10) == run(agent, 5, start=10)
    obs = np.zeros((2, OBS), np.float32)
    assert np.array_equal(clone.act(obs), agent.act(obs))


def test_act_shapes_range_and_deterministic_modes() -> None:
    agent = DIMEAgent(OBS, ACT, SMALL, seed=0)
    single = agent.act(np.zeros(OBS, np.float32))
    assert single.shape == (ACT,) and single.dtype == np.float32
    many = agent.act(np.zeros((5, OBS), np.float32))
    assert many.shape == (5, ACT) and np.all(np.abs(many) <= 1)
    assert not np.array_equal(many[0], many[1])  # stochastic by default, like the authors' evaluation
    obs = np.random.default_rng(3).normal(size=(6, OBS)).astype(np.float32)
    for mode in ("noise_free", "best_of_k"):
        deterministic = DIMEAgent(OBS, ACT, dataclasses.replace(SMALL, deterministic_act=mode), seed=0)
        first = deterministic.act(obs, deterministic=True)
        # A function of the observation alone: the same again, and row by row the same as in a batch.
        assert np.array_equal(first, deterministic.act(obs, deterministic=True))
        np.testing.assert_allclose(deterministic.act(obs[2], deterministic=True), first[2], atol=1e-6)
    with pytest.raises(ConfigError, match="deterministic_act"):
        dataclasses.replace(SMALL, deterministic_act="stochastic")  # type: ignore[arg-type]


def test_best_of_k_takes_the_candidate_the_critics_value_most() -> None:
    agent = DIMEAgent(OBS, ACT, dataclasses.replace(SMALL, deterministic_act="best_of_k", act_candidates=8), seed=0)
    obs = np.random.default_rng(4).normal(size=(5, OBS)).astype(np.float32)
    chosen = agent.act(obs, deterministic=True)
    x = torch.from_numpy(obs)
    noise = agent._candidate_noise(8).expand(-1, -1, 5, -1).reshape(agent.policy.n_steps + 1, 40, ACT)
    candidates = agent.policy.action_from_noise(x.repeat(8, 1), noise).clamp(-1, 1).view(8, 5, ACT)
    q = torch.stack([agent.q_values(obs, candidates[j].detach().numpy()).mean(0) for j in range(8)])  # (8, 5)
    best = candidates[q.argmax(0), torch.arange(5)].detach().numpy()
    np.testing.assert_allclose(chosen, best, atol=1e-6)
    noise_free = agent.policy.sample_action(x, noise_free=True).clamp(-1, 1).detach().numpy()
    assert bool((q.max(0).values >= q[0]).all())  # never worse by the critics than candidate 0, the noise-free chain
    np.testing.assert_allclose(candidates[0].detach().numpy(), noise_free, atol=1e-6)


def test_observation_normaliser_is_applied_inside_act_update_and_q_values() -> None:
    mean, std = np.arange(OBS, dtype=np.float32), np.full(OBS, 3.0, np.float32)
    normalised = DIMEAgent(OBS, ACT, SMALL, seed=0, obs_normalizer={"mean": mean, "std": std})
    plain = DIMEAgent(OBS, ACT, SMALL, seed=0)
    raw = np.random.default_rng(1).normal(size=(4, OBS)).astype(np.float32) * 5
    assert np.array_equal(normalised.act(raw), plain.act((raw - mean) / std))
    batch = make_batch(0)
    shifted = batch._replace(obs=batch.obs * torch.from_numpy(std) + torch.from_numpy(mean),
                             next_obs=batch.next_obs * torch.from_numpy(std) + torch.from_numpy(mean))
    m1, m2 = normalised.update(shifted), plain.update(batch)
    assert m1 == pytest.approx(m2, rel=1e-4, abs=1e-5)
    q1 = normalised.q_values(shifted.obs, batch.action)
    q2 = plain.q_values(batch.obs, batch.action)
    assert q1.shape == (2, ROWS) and torch.allclose(q1, q2, atol=1e-4)


def test_targets_stop_at_terminations_not_truncations() -> None:
    base = make_batch(3)._replace(terminated=torch.zeros(ROWS))
    truncated = base._replace(truncated=torch.ones(ROWS))
    terminated = base._replace(terminated=torch.ones(ROWS))
    losses = []
    for batch in (base, truncated, terminated):
        agent = DIMEAgent(OBS, ACT, SMALL, seed=0)
        losses.append(agent.update(batch)["critic/loss"])
    assert losses[0] == losses[1]
    assert losses[0] != losses[2]


@pytest.mark.parametrize("statistic", ["running_cost", "full_bound"])
@pytest.mark.parametrize(("target_per_dim", "direction"), [(10.0, 1), (-100.0, -1)])
def test_temperature_moves_toward_its_entropy_target(statistic: str, target_per_dim: float, direction: int) -> None:
    cfg = dataclasses.replace(SMALL, target_entropy_per_dim=target_per_dim, temperature_statistic=statistic)
    agent = DIMEAgent(OBS, ACT, cfg, seed=0)
    metrics = run(agent, 3)
    assert (agent.alpha - 1.0) * direction > 0
    expected = -metrics[2]["actor/running_cost"] if statistic == "running_cost" else metrics[2]["actor/entropy_bound"]
    assert metrics[2]["alpha/entropy_estimate"] == pytest.approx(expected, rel=1e-5)
    fixed = DIMEAgent(OBS, ACT, dataclasses.replace(SMALL, alpha_mode="fixed", alpha_init=0.2), seed=0)
    run(fixed, 6)
    assert fixed.alpha == pytest.approx(0.2)
