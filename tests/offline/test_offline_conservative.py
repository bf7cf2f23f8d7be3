"""The conservative penalty: the gap by hand, calibration, neutrality, row layout, stability bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from offline_factories import tiny_config

from dime_offline.agent.dime import DIMEAgent
from dime_offline.agent.regularization import CriticStepContext
from dime_offline.data.replay import ReplayStore
from dime_offline.regularizers import CandidateValues, ConservativePenalty, conservative_gap, soft_return_floor
from dime_offline.types import Batch

NAN = float("nan")


def values(data: list[float], uniform: list[list[float]], policy: list[list[float]]) -> CandidateValues:
    """One critic: data (B,), uniform and policy (M, B)."""
    return CandidateValues(
        data=torch.tensor([data], requires_grad=True),
        uniform=torch.tensor([uniform], requires_grad=True),
        policy=torch.tensor([policy], requires_grad=True),
    )


def test_gap_is_a_temperature_scaled_log_mean_exp_minus_the_data_value() -> None:
    v = values([1.0], uniform=[[0.0], [2.0]], policy=[[1.0], [3.0]])
    gap, metrics = conservative_gap(v, torch.tensor([NAN]), temperature=1.0, lower_bound=True)
    expected = math.log((math.exp(0) + math.exp(2) + math.exp(1) + math.exp(3)) / 4) - 1.0
    assert gap.shape == (1, 1)
    assert gap.item() == pytest.approx(expected, rel=1e-6)
    # temperature 2: 2 * log mean exp(q / 2)
    gap2, _ = conservative_gap(v, torch.tensor([NAN]), temperature=2.0, lower_bound=True)
    expected2 = 2 * math.log((1 + math.exp(1) + math.exp(0.5) + math.exp(1.5)) / 4) - 1.0
    assert gap2.item() == pytest.approx(expected2, rel=1e-6)
    assert metrics["gap"] == pytest.approx(expected, rel=1e-6)
    assert metrics["q_uniform"] == pytest.approx(1.0) and metrics["q_policy"] == pytest.approx(2.0)


def test_gap_is_zero_when_every_candidate_equals_the_data_value() -> None:
    v = values([5.0, -3.0], uniform=[[5.0, -3.0]] * 3, policy=[[5.0, -3.0]] * 3)
    for temperature in (0.1, 1.0, 50.0):
        gap, _ = conservative_gap(v, torch.tensor([NAN, NAN]), temperature=temperature, lower_bound=False)
        assert torch.allclose(gap, torch.zeros(1, 2), atol=1e-5)


def test_gradient_pushes_the_data_value_up_and_the_candidates_down_by_their_softmax_weights() -> None:
    v = values([1.0], uniform=[[0.0], [2.0]], policy=[[1.0], [3.0]])
    gap, _ = conservative_gap(v, torch.tensor([NAN]), temperature=1.0, lower_bound=False)
    gap.sum().backward()
    weights = torch.softmax(torch.tensor([0.0, 2.0, 1.0, 3.0]), 0)
    assert v.data.grad.item() == pytest.approx(-1.0)
    assert torch.allclose(v.uniform.grad.reshape(-1), weights[:2])
    assert torch.allclose(v.policy.grad.reshape(-1), weights[2:])


def test_calibration_raises_policy_values_to_the_return_and_leaves_the_rest() -> None:
    # Three states: returns 3 (raises one policy value), -10 (raises none), NaN (online row: untouched).
    v = values(
        [0.0, 0.0, 0.0],
        uniform=[[-5.0, -20.0, -5.0]],
        policy=[[1.0, -12.0, 1.0], [5.0, 4.0, -7.0]],
    )
    mc = torch.tensor([3.0, -10.0, NAN])
    tau = 1e-3  # ~ hard maximum, so the gap shows exactly which values were used
    gap, metrics = conservative_gap(v, mc, temperature=tau, lower_bound=True)
    # state 0: policy (1, 5) -> (3, 5); uniform -5 untouched although below the return -> max 5
    # state 1: policy (-12, 4) -> (-10, 4) -> max 4; state 2: no return -> policy (1, -7) -> max 1
    assert gap.detach().numpy() == pytest.approx(np.array([[5.0, 4.0, 1.0]]) - tau * math.log(3), abs=1e-3)
    assert metrics["calibrated_fraction"] == pytest.approx(2 / 6)
    assert metrics["rows_with_return"] == pytest.approx(2 / 3)
    assert metrics["q_policy_calibrated"] == pytest.approx((3 + 5 - 10 + 4 + 1 - 7) / 6)
    # A raised value passes no gradient back to the critic; the others do.
    gap.sum().backward()
    assert v.policy.grad[0, 0, 0] == 0.0 and v.policy.grad[0, 0, 1] == 0.0
    # the uniform value -5 below the return 3 was not raised: it keeps its (tiny) softmax gradient
    assert v.uniform.grad[0, 0, 0] >= 0.0


def test_without_calibration_the_returns_are_ignored() -> None:
    v = values([0.0], uniform=[[-5.0]], policy=[[1.0]])
    raised, _ = conservative_gap(v, torch.tensor([30.0]), temperature=1e-3, lower_bound=True)
    plain, metrics = conservative_gap(v, torch.tensor([30.0]), temperature=1e-3, lower_bound=False)
    assert raised.item() == pytest.approx(30.0 - 1e-3 * math.log(2), abs=1e-4)
    assert plain.item() == pytest.approx(1.0 - 1e-3 * math.log(2), abs=1e-4)
    assert metrics["calibrated_fraction"] == 0.0


def test_the_floor_is_the_soft_return_of_the_logged_rewards() -> None:
    mc_return = torch.tensor([10.0, -4.0, NAN])
    horizon = torch.tensor([0.0, 9.0, 9.0])
    # alpha E[log pi] = 0.5 per step: the soft value loses 0.5 per discounted step after the first.
    floor = soft_return_floor(mc_return, horizon, 0.5)
    assert floor[:2].tolist() == [10.0, -8.5] and bool(floor[2].isnan())
    assert soft_return_floor(mc_return, None, 0.5) is mc_return  # a batch without horizons keeps the return
    # The policy candidate is raised to the soft floor, not to the reward-only return.
    v = values([0.0], uniform=[[-50.0]], policy=[[-20.0]])
    gap, metrics = conservative_gap(v, soft_return_floor(torch.tensor([-4.0]), torch.tensor([9.0]), 0.5), temperature=1e-3, lower_bound=True)
    assert gap.item() == pytest.approx(-8.5 - 1e-3 * math.log(2), abs=1e-4)
    assert metrics["floor"] == -8.5 and metrics["q_data_minus_floor"] == 8.5


def _context(agent: DIMEAgent, batch: Batch, extra_logits: torch.Tensor) -> CriticStepContext:
    obs = agent.normalize_obs(batch.obs)
    logits = agent.critic(obs, batch.action)
    return CriticStepContext(agent.critic, obs, batch, logits, agent.sample_actions, extra_logits)


def _batch(n: int = 8, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(n, 3, generator=g)
    return Batch(
        obs=obs, action=torch.rand(n, 2, generator=g) * 2 - 1, reward=torch.randn(n, generator=g), next_obs=obs.flip(0),
        terminated=torch.zeros(n), truncated=torch.zeros(n), mc_return=torch.full((n,), NAN), is_offline=torch.ones(n),
    )


def test_extra_rows_layout_uniform_then_policy_each_state_repeated_per_candidate() -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    batch = _batch()
    penalty = ConservativePenalty(0.5, n_actions=3, seed=4)
    obs = agent.normalize_obs(batch.obs)
    policy_states = penalty.policy_states(obs)
    assert policy_states.shape == (3 * 8, 3)
    policy_actions = agent.sample_actions(policy_states).action
    next_actions = agent.sample_actions(agent.normalize_obs(batch.next_obs)).action
    rows_obs, rows_action = penalty.extra_rows(obs, batch, policy_actions, next_actions)
    assert rows_obs.shape == (2 * 3 * 8, 3) and rows_action.shape == (2 * 3 * 8, 2)
    for j in range(6):  # block j holds every state once, in batch order
        assert torch.equal(rows_obs[j * 8 : (j + 1) * 8], obs)
    uniform = rows_action[: 3 * 8]
    assert uniform.min() >= -1 and uniform.max() <= 1 and uniform.std() > 0.4  # U[-1, 1]: std 0.577
    # The same seed gives the same uniform candidates.
    assert torch.equal(rows_action[3 * 8 :], policy_actions)
    again = ConservativePenalty(0.5, n_actions=3, seed=4).extra_rows(obs, batch, policy_actions, next_actions)[1][: 3 * 8]
    assert torch.equal(again, uniform)


def test_reused_next_state_actions_replace_one_policy_sample_per_state() -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    batch = _batch()
    penalty = ConservativePenalty(0.5, n_actions=3, seed=4, reuse_next_actions=True)
    obs = agent.normalize_obs(batch.obs)
    policy_states = penalty.policy_states(obs)
    assert policy_states.shape == (2 * 8, 3)  # chains for M - 1 samples per state
    policy_actions = agent.sample_actions(policy_states).action
    next_actions = agent.sample_actions(agent.normalize_obs(batch.next_obs)).action
    rows_obs, rows_action = penalty.extra_rows(obs, batch, policy_actions, next_actions)
    assert rows_obs.shape == (2 * 3 * 8, 3) and rows_action.shape == (2 * 3 * 8, 2)
    for j in range(6):  # every candidate block is scored at the batch's states, next-state ones too
        assert torch.equal(rows_obs[j * 8 : (j + 1) * 8], obs)
    assert torch.equal(rows_action[3 * 8 : 4 * 8], next_actions)
    assert torch.equal(rows_action[4 * 8 :], policy_actions)
    assert ConservativePenalty.from_dict(penalty.to_dict()).reuse_next_actions


def test_with_reuse_the_agent_runs_chains_for_one_sample_fewer_per_state() -> None:
    store = ReplayStore.empty(3, 2, online_capacity=64)
    rng = np.random.default_rng(0)
    store.add(rng.normal(size=(64, 3)), rng.uniform(-1, 1, (64, 2)), rng.normal(size=64), rng.normal(size=(64, 3)),
              np.zeros(64, bool), np.zeros(64, bool))
    chain_rows = {}
    for reuse in (False, True):
        agent = DIMEAgent(3, 2, tiny_config(batch_size=16), seed=0,
                          critic_regularizer=ConservativePenalty(0.5, n_actions=2, reuse_next_actions=reuse))
        sample = agent.policy.sample
        agent.policy.sample = lambda obs, *a, _s=sample, _r=reuse, **k: chain_rows.setdefault(_r, obs.shape[0]) and _s(obs, *a, **k)
        metrics = agent.update(store.sample(16))
        assert np.isfinite(metrics["conservative/gap"])
    assert chain_rows == {False: 16 * 3, True: 16 * 2}  # s' plus M (or M - 1) samples per state


def test_one_candidate_of_each_kind_with_reuse_runs_no_chain_of_its_own() -> None:
    """M = 1 with the next-state action reused: the agent's one chain holds the s' rows alone, and the
    critics' joint pass holds data, next-state, one uniform and one policy row per state."""
    store = ReplayStore.empty(3, 2, online_capacity=64)
    rng = np.random.default_rng(0)
    store.add(rng.normal(size=(64, 3)), rng.uniform(-1, 1, (64, 2)), rng.normal(size=64), rng.normal(size=(64, 3)),
              np.zeros(64, bool), np.zeros(64, bool))
    agent = DIMEAgent(3, 2, tiny_config(batch_size=16, policy_delay=2), seed=0,
                      critic_regularizer=ConservativePenalty(0.5, n_actions=1, reuse_next_actions=True))
    chain_rows, critic_rows = [], []
    sample, critic_forward = agent.policy.sample, agent.critic.forward
    agent.policy.sample = lambda obs, *a, **k: chain_rows.append(obs.shape[0]) or sample(obs, *a, **k)
    agent.critic.forward = lambda obs, action: critic_rows.append(obs.shape[0]) or critic_forward(obs, action)
    metrics = agent.update(store.sample(16))
    assert chain_rows == [16] and critic_rows == [16 * 4]
    assert np.isfinite(metrics["conservative/gap"]) and metrics["conservative/gap"] != 0.0


def test_penalty_is_zero_when_the_candidates_are_the_data_actions() -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    batch = _batch()
    penalty = ConservativePenalty(0.7, n_actions=2)
    with torch.no_grad():
        data_logits = agent.critic(agent.normalize_obs(batch.obs), batch.action)
    # The joint pass's candidate logits, as if every candidate were the state's own data action.
    extra = data_logits.repeat(1, 2 * 2, 1)
    loss, metrics = penalty(_context(agent, batch, extra))
    assert loss.item() == pytest.approx(0.0, abs=1e-4)
    assert metrics["conservative/gap"] == pytest.approx(0.0, abs=1e-2)
    assert metrics["conservative/weight"] == 0.7


def test_penalty_scales_the_mean_gap_by_weight_over_support_width_summed_over_critics() -> None:
    agent = DIMEAgent(3, 2, tiny_config(v_min=-50.0, v_max=150.0), seed=0)
    batch = _batch()
    penalty = ConservativePenalty(0.3, n_actions=2, temperature=1.0)
    ctx = _context(agent, batch, torch.randn(2, 2 * 2 * 8, 101))
    loss, _ = penalty(ctx)
    candidates = penalty.candidate_values(ctx)
    atom = 200.0 / 100
    gap, _ = conservative_gap(candidates, batch.mc_return, temperature=atom, lower_bound=True)
    assert loss.item() == pytest.approx(0.3 / 200.0 * gap.mean(-1).sum().item(), rel=1e-5)


def test_the_agent_feeds_the_candidates_through_its_joint_training_pass() -> None:
    store = ReplayStore.empty(3, 2, online_capacity=64)
    rng = np.random.default_rng(0)
    store.add(rng.normal(size=(64, 3)), rng.uniform(-1, 1, (64, 2)), rng.normal(size=64), rng.normal(size=(64, 3)),
              np.zeros(64, bool), np.zeros(64, bool))
    agent = DIMEAgent(3, 2, tiny_config(batch_size=16), seed=0, critic_regularizer=ConservativePenalty(0.5, n_actions=2))
    steps_before = int(agent.critic.net[0].steps)
    metrics = agent.update(store.sample(16))
    # One training-mode pass per update (the warm-up counter counts passes), over 2 B + 2 M B rows.
    assert int(agent.critic.net[0].steps) == steps_before + 1
    for key in ("gap", "soft_max_q", "q_data", "q_uniform", "q_policy", "q_policy_calibrated", "calibrated_fraction",
                "rows_with_return", "penalty", "weight", "lower_bound"):
        assert np.isfinite(metrics[f"conservative/{key}"]), key
    assert metrics["conservative/rows_with_return"] == 0.0  # online rows carry no return


@pytest.mark.parametrize(("weight", "stable"), [(0.5, True), (0.9, True), (3.0, False)])
def test_pushing_up_a_fitted_categorical_value_is_stable_exactly_below_weight_one(weight: float, stable: bool) -> None:
    """Free logits fitted by cross-entropy to a target on atoms 4 and 5 of [0, 10], plus the penalty's
    push-up term -weight * Q / width: below weight 1 the value stays within the target's atoms (with
    the predicted tilt p_i = m_i / (1 - weight (z_i - Q) / width)); above it mass runs to v_max."""
    z = torch.linspace(0.0, 10.0, 11)
    target = torch.zeros(11)
    target[4] = target[5] = 0.5
    logits = torch.zeros(11, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    for _ in range(600):
        p = logits.softmax(-1)
        loss = -(target * torch.log(p + 1e-15)).sum() - weight * (p @ z) / 10.0
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    p = logits.detach().softmax(-1)
    q = float(p @ z)
    if stable:
        assert 4.0 <= q <= 5.0
        predicted = target[4:6] / (1 - weight * (z[4:6] - q) / 10.0)
        assert torch.allclose(p[4:6], predicted / predicted.sum(), atol=5e-3)
    else:
        assert p[-1] > 0.2 and q > 6.0
