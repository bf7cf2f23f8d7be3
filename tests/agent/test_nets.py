"""Network details that a port silently gets wrong: init, time features, schedule, exact rewrites."""

from __future__ import annotations

import math

import pytest
import torch

from dime_offline.nets.critic import DistributionalCritic
from dime_offline.nets.diffusion import DiffusionPolicy, cosine_schedule
from dime_offline.nets.mlp import dense
from dime_offline.nets.score_net import ScoreNet


def test_dense_init_is_lecun_normal_truncated_with_zero_bias() -> None:
    torch.manual_seed(0)
    layer = dense(400, 300)
    std = 1.0 / math.sqrt(400)
    assert layer.weight.std().item() == pytest.approx(std, rel=0.03)
    assert layer.weight.abs().max().item() <= 2.0 * std / 0.87962566103423978 + 1e-6
    assert torch.count_nonzero(layer.bias) == 0


def test_score_net_last_layer_starts_at_constant_1e_8() -> None:
    net = ScoreNet(3, 5)
    assert torch.all(net.out.weight == 1e-8) and torch.count_nonzero(net.out.bias) == 0
    assert torch.count_nonzero(net.phase) == 0
    u = net(torch.randn(4, 3), torch.randn(4, 5), torch.tensor([0.0, 1.0, 7.0, 15.0]))
    assert u.abs().max() < 1e-4


def test_time_features_use_the_raw_step_index_and_fixed_frequencies() -> None:
    net = ScoreNet(2, 3, n_frequencies=256)
    assert torch.allclose(net.frequencies, torch.linspace(0.1, 100.0, 256))
    assert "frequencies" not in dict(net.named_parameters())
    steps = torch.tensor([0.0, 3.0])
    with torch.no_grad():
        net.phase.fill_(0.25)
        angles = steps[:, None] * torch.linspace(0.1, 100.0, 256) + 0.25
        expected = net.time_mlp(torch.cat([angles.sin(), angles.cos()], -1))
        assert torch.allclose(net.time_embedding(steps), expected)


def test_split_first_layer_equals_the_concatenated_forward() -> None:
    torch.manual_seed(0)
    net = ScoreNet(3, 5, hidden=(16, 16), n_frequencies=8, time_hidden=8)
    with torch.no_grad():
        net.out.weight.normal_()
    x, obs = torch.randn(7, 3), torch.randn(7, 5)
    steps = torch.arange(4, dtype=torch.float32)
    cond = net.prepare(obs, steps)
    for n in range(4):
        reference = net(x, obs, torch.full((7,), float(n)))
        assert torch.allclose(net.control(x, cond[n]), reference, atol=1e-5)
        assert torch.allclose(net.control(x[None], cond[n : n + 1])[0], reference, atol=1e-5)


def test_score_output_is_clipped() -> None:
    net = ScoreNet(2, 2, hidden=(4,), n_frequencies=2, time_hidden=2, output_clip=0.5)
    with torch.no_grad():
        net.out.weight.fill_(100.0)
        net.out.bias.fill_(100.0)
    assert net(torch.ones(3, 2), torch.ones(3, 2), torch.zeros(3)).abs().max() == 0.5


def test_cosine_schedule_matches_the_authors_values_and_direction() -> None:
    expected = [1.000, 0.988, 0.958, 0.910, 0.847, 0.771, 0.684, 0.591,
                0.494, 0.398, 0.305, 0.220, 0.145, 0.084, 0.038, 0.0104]
    c = cosine_schedule(16)
    assert torch.allclose(c, torch.tensor(expected), atol=6e-4)
    assert (c[1:] < c[:-1]).all()  # largest step at n = 0, the noise end


def test_policy_initial_step_size_friction_and_shapes() -> None:
    policy = DiffusionPolicy(5, 3)
    eta = policy.step_sizes()
    assert eta.shape == (16, 3)
    assert eta.sum(0).detach() == pytest.approx(torch.full((3,), 0.1 * float(cosine_schedule(16).sum())), rel=1e-5)
    assert float(torch.nn.functional.softplus(policy.raw_friction.detach())[0]) == pytest.approx(1.0, rel=1e-6)
    s = policy.sample(torch.randn(4, 5))
    assert s.action.shape == (4, 3) and s.running_cost.shape == (4,) and s.terminal_cost.shape == (4,)
    assert (s.action.abs() <= 1).all()
    assert torch.allclose(s.action, torch.tanh(s.pre_tanh))


def test_policy_gradients_reach_score_net_step_size_and_friction_but_not_the_prior_sample() -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(5, 3, score_hidden=(32, 32), n_frequencies=8, time_hidden=8)
    with torch.no_grad():
        policy.score_net.out.weight.normal_(0, 0.1)
    s = policy.sample(torch.randn(16, 5))
    assert s.terminal_cost.grad_fn is None and not s.terminal_cost.requires_grad
    (s.running_cost.mean() + s.action.sum()).backward()
    for name, p in policy.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert float(policy.raw_dt.grad) != 0.0


def test_noise_free_sampling_is_deterministic() -> None:
    policy = DiffusionPolicy(5, 3)
    obs = torch.randn(2, 5)
    a1 = policy.sample(obs, noise_free=True).action
    a2 = policy.sample(obs, noise_free=True).action
    assert torch.equal(a1, a2)


def test_critic_ensemble_members_are_independent_and_batched_correctly() -> None:
    torch.manual_seed(0)
    critic = DistributionalCritic(4, 2, hidden=(16, 16), n_atoms=11, v_min=-5, v_max=5, n_critics=2)
    obs, act = torch.randn(8, 4), torch.rand(8, 2) * 2 - 1
    logits = critic(obs, act)
    assert logits.shape == (2, 8, 11)
    assert not torch.allclose(logits[0], logits[1])  # different weights per member
    # member 0 by hand: BRN -> Dense -> ReLU -> BRN -> Dense -> ReLU -> BRN -> Dense (train mode, warm-up)
    def bn(x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-3)
    layers = [m for m in critic.net if hasattr(m, "weight") and m.weight.dim() == 3]
    h = bn(torch.cat([obs, act], -1))
    h = bn(torch.relu(h @ layers[0].weight[0] + layers[0].bias[0]))
    h = bn(torch.relu(h @ layers[1].weight[0] + layers[1].bias[0]))
    assert torch.allclose(h @ layers[2].weight[0] + layers[2].bias[0], logits[0], atol=1e-4)
    q = critic.expected_q(obs, act)
    assert q.shape == (2, 8) and (q.abs() <= 5).all()


@pytest.mark.parametrize("noise_free", [False, True])
def test_action_only_chain_gives_the_sampled_action_for_the_same_noise(noise_free: bool) -> None:
    torch.manual_seed(0)
    policy = DiffusionPolicy(5, 2)
    with torch.no_grad():
        policy.score_net.out.weight.normal_(0.0, 0.1)
        obs = torch.randn(7, 5)
        full = policy.sample(obs, generator=torch.Generator().manual_seed(3), noise_free=noise_free).action
        action = policy.sample_action(obs, generator=torch.Generator().manual_seed(3), noise_free=noise_free)
    assert torch.equal(action, full)
