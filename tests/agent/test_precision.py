"""Fast paths must not change the maths: bfloat16 products and the fused no-gradient score net.

The fused Dense + GELU path on float32 must match the eager layers to 1e-5; bfloat16 runs must stay
within stated tolerances of the float32 ones on the same noise (bfloat16 keeps 8 significant bits,
so per-product relative errors are ~0.4 %; the tolerances below are ~10x what was measured),
and everything the algorithm reads (actions, costs, logits) comes out in float32.
"""

from __future__ import annotations

import pytest
import torch

import dime_offline.nets.precision as precision
import dime_offline.nets.score_net as score_net
from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.nets.critic import DistributionalCritic
from dime_offline.nets.diffusion import ChainSample, DiffusionPolicy
from dime_offline.types import Batch

ROWS = 256  # at the score net's bfloat16 threshold, so the fast paths apply
OBS, ACT = 11, 3


def chain(policy: DiffusionPolicy, obs: torch.Tensor, seed: int = 0, grad: bool = False) -> ChainSample:
    with torch.set_grad_enabled(grad):
        return policy.sample(obs, generator=torch.Generator().manual_seed(seed))


def trained_looking_policy(dtype: torch.dtype = torch.float32) -> DiffusionPolicy:
    """A policy whose control term is not ~0 (the init's last layer is 1e-8), so the chain depends on the net."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(OBS, ACT)
    with torch.no_grad():
        policy.score_net.out.weight.normal_(0.0, 0.05)
    policy.matmul_dtype = dtype
    return policy


def test_resolve_matmul_dtype_honours_explicit_choices_and_decides_auto_by_the_hardware() -> None:
    cpu = torch.device("cpu")
    assert precision.resolve_matmul_dtype("float32", cpu) == torch.float32
    assert precision.resolve_matmul_dtype("bfloat16", cpu) == torch.bfloat16
    expected = torch.bfloat16 if precision.native_bf16(cpu) else torch.float32
    assert precision.resolve_matmul_dtype("auto", cpu) == expected
    assert precision.score_net_dtype(torch.bfloat16, ROWS - 1, cpu) == torch.float32  # small passes: float32
    assert precision.score_net_dtype(torch.bfloat16, ROWS, cpu) == torch.bfloat16


def test_auto_keeps_float32_on_a_cuda_gpu_even_with_bfloat16_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Launch-bound there: bfloat16 measured slower on an H200 (docs/benchmarks.md "On a CUDA GPU")."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    cuda = torch.device("cuda")
    assert precision.native_bf16(cuda)
    assert precision.resolve_matmul_dtype("auto", cuda) == torch.float32
    assert precision.resolve_matmul_dtype("bfloat16", cuda) == torch.bfloat16


@pytest.mark.skipif(not score_net._fused_linear_gelu_works(), reason="no oneDNN fused kernel in this torch build")
def test_fused_no_gradient_chain_matches_the_eager_layers_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fused path is chosen by the CPU (AVX-512 only); its maths is checked wherever the kernel runs.
    monkeypatch.setattr(score_net, "fused_linear_gelu_available", lambda device: True)
    policy = trained_looking_policy()
    obs = torch.randn(ROWS, OBS)
    assert policy.score_net.fused_hidden_layers(torch.float32) is None  # gradients are on here
    with torch.no_grad():
        assert policy.score_net.fused_hidden_layers(torch.float32) is not None
    fused = chain(policy, obs)
    monkeypatch.setattr(score_net, "fused_linear_gelu_available", lambda device: False)
    eager = chain(policy, obs)
    assert torch.allclose(fused.action, eager.action, atol=1e-5)
    assert torch.allclose(fused.running_cost, eager.running_cost, atol=1e-4, rtol=1e-5)
    assert torch.equal(fused.terminal_cost, eager.terminal_cost)


@pytest.mark.parametrize("grad", [False, True], ids=["no-gradient", "with-gradient"])
def test_bfloat16_chain_stays_close_to_float32_on_the_same_noise(grad: bool) -> None:
    obs = torch.randn(ROWS, OBS)
    exact = chain(trained_looking_policy(torch.float32), obs, grad=grad)
    fast = chain(trained_looking_policy(torch.bfloat16), obs, grad=grad)
    for name in ChainSample._fields:
        assert getattr(fast, name).dtype == torch.float32, name
    # Measured: actions differ by at most 3.6e-4 (mean 4e-5), running costs by 7e-5 of their scale.
    assert (fast.action - exact.action).abs().max() < 3e-3
    assert (fast.action - exact.action).abs().mean() < 3e-4
    # The running cost sums 16 steps x 3 dimensions of squared residuals: compare in its own scale.
    scale = exact.running_cost.abs().mean()
    assert (fast.running_cost - exact.running_cost).abs().mean() < 1e-3 * scale


def test_bfloat16_chain_gradients_point_the_same_way_as_float32() -> None:
    obs = torch.randn(ROWS, OBS)
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        policy = trained_looking_policy(dtype)
        sample = chain(policy, obs, grad=True)
        (sample.running_cost.mean() + sample.action.square().mean()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]))
        assert all(p.grad.dtype == torch.float32 for p in policy.parameters() if p.grad is not None)
    cosine = torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0)
    assert cosine > 0.99, cosine


def test_bfloat16_critic_keeps_float32_statistics_logits_and_parameters() -> None:
    torch.manual_seed(0)
    critic = DistributionalCritic(OBS, ACT, hidden=(64, 64), n_atoms=11)
    obs, action = torch.randn(2 * ROWS, OBS), torch.rand(2 * ROWS, ACT) * 2 - 1
    exact = critic(obs, action)
    exact_running_var = [m.running_var.clone() for m in critic.modules() if hasattr(m, "running_var")]
    critic.set_matmul_dtype(torch.bfloat16)
    fast = critic(obs, action)
    assert fast.dtype == torch.float32
    assert (fast - exact).abs().max() < 5e-2 and (fast - exact).abs().mean() < 1e-2
    fast.logsumexp(-1).sum().backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in critic.parameters())
    for module, before in zip((m for m in critic.modules() if hasattr(m, "running_var")), exact_running_var):
        assert module.running_var.dtype == torch.float32 and not torch.equal(module.running_var, before)


def _batch(seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(ROWS, OBS, generator=gen), action=torch.rand(ROWS, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(ROWS, generator=gen), next_obs=torch.randn(ROWS, OBS, generator=gen),
        terminated=torch.zeros(ROWS), truncated=torch.zeros(ROWS), mc_return=torch.full((ROWS,), float("nan")),
        is_offline=torch.zeros(ROWS),
    )


def test_a_bfloat16_run_repeats_exactly_in_one_process() -> None:
    cfg = DIMEConfig.preset("cpu", critic_hidden=(64, 64), score_hidden=(64, 64, 64), matmul_precision="bfloat16")
    runs = []
    for _ in range(2):
        agent = DIMEAgent(OBS, ACT, cfg, seed=3)
        runs.append([agent.update(_batch(i)) for i in range(6)])
    assert runs[0] == runs[1]
    assert runs[0][-1]["critic/loss"] == runs[0][-1]["critic/loss"]  # finite, not NaN


def test_precision_is_a_compute_setting_a_loaded_agent_may_change() -> None:
    agent = DIMEAgent(OBS, ACT, DIMEConfig.preset("cpu", matmul_precision="float32"), seed=0)
    assert agent.matmul_dtype == torch.float32 and agent.policy.matmul_dtype == torch.float32
    agent.set_matmul_precision("bfloat16")
    assert agent.cfg.matmul_precision == "bfloat16" and agent.policy.matmul_dtype == torch.bfloat16
    hidden = [m for m in agent.critic.net if hasattr(m, "compute_dtype")]
    assert [m.compute_dtype for m in hidden] == [torch.bfloat16, torch.bfloat16, torch.float32]  # atoms head float32


def test_the_fused_kernel_is_chosen_by_the_cpu_capability() -> None:
    cpu = torch.device("cpu")
    avx512 = torch.backends.cpu.get_cpu_capability().startswith("AVX512")
    assert score_net.fused_linear_gelu_available(cpu) == (avx512 and score_net._fused_linear_gelu_works())
    assert not score_net.fused_linear_gelu_available(torch.device("meta"))


@pytest.mark.parametrize("rows", [1, 128, 300])
def test_tanh_gelu_is_torchs_tanh_gelu_on_every_path(rows: int) -> None:
    x = 4 * torch.randn(rows, 256, generator=torch.Generator().manual_seed(rows))
    reference = torch.nn.functional.gelu(x.double(), approximate="tanh")  # exact for these float32 inputs
    with torch.no_grad():
        fast = score_net.tanh_gelu(x)  # the sigmoid form from 128 rows on
    torch.testing.assert_close(fast.double(), reference, rtol=1e-6, atol=1e-7)
    assert score_net.tanh_gelu(x.to(torch.bfloat16)).dtype == torch.bfloat16
    leaf = x.clone().requires_grad_()
    score_net.tanh_gelu(leaf).sum().backward()  # gradient passes: torch's kernel and its backward
    expected = x.clone().requires_grad_()
    torch.nn.functional.gelu(expected, approximate="tanh").sum().backward()
    assert torch.equal(leaf.grad, expected.grad)
