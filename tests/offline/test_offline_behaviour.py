"""The actor's behaviour term: its value by hand, offline rows only, and that it raises the bound in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from offline_factories import bandit_dataset, tiny_config

from dime_offline.agent.dime import DIMEAgent
from dime_offline.agent.regularization import ActorStepContext
from dime_offline.data.replay import ReplayStore
from dime_offline.regularizers import BehaviourLikelihood, behaviour_penalty
from dime_offline.regularizers.behaviour import advantage_kept


def test_penalty_is_minus_weight_times_unit_times_the_mean_bound() -> None:
    bound = torch.tensor([-1.0, -3.0, 2.0], requires_grad=True)
    penalty, metrics = behaviour_penalty(bound, weight=0.5, value_unit=4.0)
    assert penalty.item() == pytest.approx(-0.5 * 4.0 * (-2.0 / 3.0))
    assert metrics["log_likelihood_bound"] == pytest.approx(-2.0 / 3.0)
    penalty.backward()
    assert torch.allclose(bound.grad, torch.full((3,), -0.5 * 4.0 / 3.0))
    empty, metrics = behaviour_penalty(torch.zeros(0), weight=1.0, value_unit=1.0)
    assert empty.item() == 0.0 and np.isnan(metrics["log_likelihood_bound"])


def _actor_context(agent: DIMEAgent, store: ReplayStore, is_offline: torch.Tensor) -> ActorStepContext:
    batch = store.sample(is_offline.numel(), generator=torch.Generator().manual_seed(0))._replace(is_offline=is_offline)
    obs = agent.normalize_obs(batch.obs)
    sample = agent.policy.sample(obs)
    q = agent.critic.expected_q(obs, sample.action).mean(0)
    return ActorStepContext(agent.policy, agent.critic, obs, batch, sample, q)


def test_only_offline_rows_are_cloned() -> None:
    store = ReplayStore.from_transitions(bandit_dataset(episodes=5), online_capacity=0)
    agent = DIMEAgent(2, 1, tiny_config(), seed=0)
    term = BehaviourLikelihood(2.0, seed=3)
    online_only, metrics = term(_actor_context(agent, store, torch.zeros(16)))
    assert online_only.item() == 0.0 and metrics["behaviour/offline_rows"] == 0.0
    half = torch.cat([torch.ones(8), torch.zeros(8)])
    ctx = _actor_context(agent, store, half)
    penalty, metrics = term(ctx)
    assert metrics["behaviour/offline_rows"] == 0.5
    # The same number as the bound of the 8 offline rows alone, with the same noising paths.
    expected = agent.policy.path_log_likelihood_bound(ctx.obs[:8], ctx.batch.action[:8], generator=torch.Generator().manual_seed(3))
    atom = float(agent.critic.support[1] - agent.critic.support[0])
    assert penalty.item() == pytest.approx(-2.0 * atom * expected.mean().item(), rel=1e-5)
    assert metrics["behaviour/weight"] == 2.0


def test_a_filtered_penalty_averages_over_every_offline_row() -> None:
    kept_bounds = torch.tensor([-1.0, -3.0], requires_grad=True)
    penalty, _ = behaviour_penalty(kept_bounds, weight=0.5, value_unit=4.0, rows=8)  # 6 of 8 rows filtered out
    assert penalty.item() == pytest.approx(-0.5 * 4.0 * (-4.0 / 8))
    assert advantage_kept(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 2.0, 2.0])).tolist() == [False, True, True]


def test_the_advantage_filter_clones_only_logged_actions_valued_above_the_policys() -> None:
    store = ReplayStore.from_transitions(bandit_dataset(episodes=5), online_capacity=0)
    agent = DIMEAgent(2, 1, tiny_config(), seed=0)
    agent.critic.eval()  # as in the actor step: batch renorm's running statistics, the same values in any pass
    ctx = _actor_context(agent, store, torch.cat([torch.ones(12), torch.zeros(4)]))
    with torch.no_grad():
        q_data = agent.critic.expected_q(ctx.obs[:12], ctx.batch.action[:12]).mean(0)
        q_policy = agent.critic.expected_q(ctx.obs[:12], ctx.sample.action[:12]).mean(0)
    kept = q_data >= q_policy
    assert 0 < int(kept.sum()) < 12  # an untrained critic splits them: the case worth checking
    penalty, metrics = BehaviourLikelihood(2.0, advantage_filter=True, seed=3)(ctx)
    # the kept rows' bounds, with the same noising paths, summed over the kept rows and averaged over all 12
    bound = agent.policy.path_log_likelihood_bound(ctx.obs[:12][kept], ctx.batch.action[:12][kept], generator=torch.Generator().manual_seed(3))
    atom = float(agent.critic.support[1] - agent.critic.support[0])
    assert penalty.item() == pytest.approx(-2.0 * atom * bound.sum().item() / 12, rel=1e-5)
    assert metrics["behaviour/kept_share"] == pytest.approx(float(kept.float().mean()))
    # where the policy samples the logged actions themselves, every row is kept and nothing changes
    same = ActorStepContext(ctx.policy, ctx.critic, ctx.obs, ctx.batch, ctx.sample._replace(action=ctx.batch.action), ctx.q)
    filtered, metrics = BehaviourLikelihood(2.0, advantage_filter=True, seed=3)(same)
    unfiltered, _ = BehaviourLikelihood(2.0, seed=3)(same)
    assert metrics["behaviour/kept_share"] == 1.0 and filtered.item() == pytest.approx(unfiltered.item(), rel=1e-6)


def test_the_description_carries_the_scored_steps_and_older_ones_score_every_step() -> None:
    term = BehaviourLikelihood(0.5, n_paths=2, scored_steps=4, seed=9)
    again = BehaviourLikelihood.from_dict(term.to_dict())
    assert (again.weight, again.n_paths, again.scored_steps, again.seed, again.advantage_filter) == (0.5, 2, 4, 9, False)
    assert BehaviourLikelihood.from_dict(BehaviourLikelihood(0.5, advantage_filter=True).to_dict()).advantage_filter
    older = {k: v for k, v in term.to_dict().items() if k not in ("scored_steps", "advantage_filter")}  # before the options
    assert BehaviourLikelihood.from_dict(older).scored_steps is None
    assert not BehaviourLikelihood.from_dict(older).advantage_filter
    with pytest.raises(ValueError, match="scored_steps"):
        BehaviourLikelihood(0.5, scored_steps=0)


def _held_out_bound(agent: DIMEAgent, obs: torch.Tensor, action: torch.Tensor) -> float:
    with torch.no_grad():
        bound = agent.policy.path_log_likelihood_bound(
            agent.normalize_obs(obs), action, generator=torch.Generator().manual_seed(5), n_paths=8
        )
    return float(bound.mean())


def test_training_with_the_behaviour_term_raises_the_data_likelihood_bound() -> None:
    """DIME with a small fixed temperature chases its critic and *lowers* the bound on the logged
    actions; the same run with the behaviour term raises it."""
    data = bandit_dataset(episodes=20)
    store = ReplayStore.from_transitions(data, online_capacity=0, gamma=0.9)
    held = store.sample(256, generator=torch.Generator().manual_seed(99))
    cfg = tiny_config(policy_delay=1, actor_lr=1e-3, gamma=0.9, v_min=-20.0, v_max=20.0, alpha_mode="fixed", alpha_init=1e-3)
    after = {}
    for weight, scored_steps in ((0.0, None), (10.0, None), (10.0, 4)):
        regularizer = BehaviourLikelihood(weight, scored_steps=scored_steps) if weight else None
        agent = DIMEAgent(2, 1, cfg, seed=0, actor_regularizer=regularizer)
        before = _held_out_bound(agent, held.obs, held.action)
        generator = torch.Generator().manual_seed(0)
        for _ in range(200):
            metrics = agent.update(store.sample(cfg.batch_size, generator=generator))
        after[weight, scored_steps] = _held_out_bound(agent, held.obs, held.action)
        if weight:
            assert np.isfinite(metrics["behaviour/log_likelihood_bound"])
    for scored_steps in (None, 4):  # every kernel, and 4 of the 16 kernels per path (the same bound, estimated)
        assert after[10.0, scored_steps] > before + 0.2
        assert after[10.0, scored_steps] > after[0.0, None] + 1.0
