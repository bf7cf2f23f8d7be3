"""Batch renormalisation: batch norm during warm-up, running statistics in eval, clipped r/d after warm-up."""

from __future__ import annotations

import torch
from torch import nn

from dime_offline.nets.batch_renorm import BatchRenorm


def batches(n: int, rows: int = 64, features: int = 5, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [3.0 + 2.0 * torch.randn(rows, features, generator=gen) for _ in range(n)]


def test_equals_batch_norm_during_warm_up_outputs_and_gradients() -> None:
    brn = BatchRenorm(5, momentum=0.01, eps=1e-3, warmup_steps=100)
    bn = nn.BatchNorm1d(5, eps=1e-3, momentum=0.01)
    with torch.no_grad():
        for layer in (brn, bn):
            layer.weight.copy_(torch.linspace(0.5, 2.0, 5))
            layer.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    running_var = torch.ones(5)
    for x in batches(5):
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        y1, y2 = brn(x1), bn(x2)
        assert torch.allclose(y1, y2, atol=1e-5)
        upstream = torch.randn_like(y1)
        (y1 * upstream).sum().backward()
        (y2 * upstream).sum().backward()
        assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
        assert torch.allclose(brn.weight.grad, bn.weight.grad, atol=1e-4)
        brn.weight.grad = bn.weight.grad = None
        # Running mean as BN; running variance from the *biased* batch variance (BN uses the unbiased one).
        running_var = 0.99 * running_var + 0.01 * x.var(0, unbiased=False)
        assert torch.allclose(brn.running_mean, bn.running_mean, atol=1e-6)
        assert torch.allclose(brn.running_var, running_var, atol=1e-6)
    assert int(brn.steps) == 5


def test_eval_mode_uses_running_statistics_and_updates_nothing() -> None:
    brn = BatchRenorm(5, warmup_steps=0)
    for x in batches(3):
        brn(x)
    brn.eval()
    mean, var, steps = brn.running_mean.clone(), brn.running_var.clone(), int(brn.steps)
    x = batches(1, seed=9)[0]
    expected = (x - mean) / torch.sqrt(var + 1e-3)
    assert torch.allclose(brn(x), expected, atol=1e-5)
    assert torch.equal(brn.running_mean, mean) and torch.equal(brn.running_var, var)
    assert int(brn.steps) == steps
    single = brn(x[:1])  # eval output of a row does not depend on the rest of the batch
    assert torch.allclose(single, brn(x)[:1], atol=1e-6)


def reference_renorm(x: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor, eps: float,
                     r_max: float, d_max: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ioffe's renorm written with r and d as constants: returns (output, r, d)."""
    var, mean = torch.var_mean(x, dim=0, correction=0)
    running_std = torch.sqrt(running_var + eps)
    r = (torch.sqrt(var + eps) / running_std).clamp(1 / r_max, r_max).detach()
    d = ((mean - running_mean) / running_std).clamp(-d_max, d_max).detach()
    out = (x - (mean - d * torch.sqrt(var) / r)) / torch.sqrt(var / r**2 + eps)
    return out, r, d


def test_after_warm_up_r_and_d_are_clipped_and_carry_no_gradient() -> None:
    brn = BatchRenorm(5, eps=1e-3, r_max=3.0, d_max=5.0, warmup_steps=0)
    with torch.no_grad():  # running statistics far from the batch's: both r and d hit their clips
        brn.running_mean.copy_(torch.tensor([3.0, 100.0, -100.0, 3.0, 3.0]))
        brn.running_var.copy_(torch.tensor([4.0, 4.0, 4.0, 1e-4, 400.0]))
    rm, rv = brn.running_mean.clone(), brn.running_var.clone()
    x = batches(1)[0]
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = brn(x1)
    expected, r, d = reference_renorm(x2, rm, rv, 1e-3, 3.0, 5.0)
    assert torch.allclose(out, expected, atol=1e-5)
    assert d[1] == -5.0 and d[2] == 5.0  # clipped shift
    assert r[3] == 3.0 and r[4] == 1 / 3  # clipped scale
    upstream = torch.randn_like(out)
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-4)
    # Not batch norm any more: with running stats = batch stats it would be, so it must differ here.
    assert not torch.allclose(out, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-3), atol=1e-2)


def test_warm_up_switches_to_renorm_after_the_configured_number_of_passes() -> None:
    brn = BatchRenorm(5, warmup_steps=3, momentum=0.5)
    data = batches(5)
    for x in data[:3]:
        out = brn(x)
        assert torch.allclose(out, (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-3), atol=1e-5)
    rm, rv = brn.running_mean.clone(), brn.running_var.clone()
    expected, _, _ = reference_renorm(data[3], rm, rv, 1e-3, 3.0, 5.0)
    assert torch.allclose(brn(data[3]), expected, atol=1e-5)


def test_ensemble_members_are_independent_layers() -> None:
    ens = BatchRenorm(5, ensemble_shape=(2,), warmup_steps=0)
    singles = [BatchRenorm(5, warmup_steps=0) for _ in range(2)]
    with torch.no_grad():
        ens.weight.copy_(torch.tensor([[1.0] * 5, [2.0] * 5]))
        singles[1].weight.fill_(2.0)
    for step, (a, b) in enumerate(zip(batches(3, seed=1), batches(3, seed=2))):
        out = ens(torch.stack([a, b]))
        assert torch.allclose(out[0], singles[0](a), atol=1e-5), step
        assert torch.allclose(out[1], singles[1](b), atol=1e-5), step
    assert torch.allclose(ens.running_var[1], singles[1].running_var)


def test_dead_feature_gives_finite_gradients_after_warm_up() -> None:
    brn = BatchRenorm(3, warmup_steps=0)
    x = torch.randn(32, 3)
    x[:, 1] = 0.0  # a dead ReLU unit
    x.requires_grad_()
    brn(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(brn.weight.grad).all()


def autograd_renorm(layer: BatchRenorm, x: torch.Tensor) -> torch.Tensor:
    """The training pass written out for autograd (statistics differentiated, r and d constants),
    with the layer's parameters and running statistics: the reference for the closed-form backward."""
    weight, bias = layer.weight.unsqueeze(-2), layer.bias.unsqueeze(-2)
    mean = x.mean(dim=-2, keepdim=True)
    var = ((x * x).mean(dim=-2, keepdim=True) - mean.square()).clamp_min(0.0)
    if int(layer.steps) >= layer.warmup_steps:
        running_std = torch.sqrt(layer.running_var.unsqueeze(-2) + layer.eps)
        r = (torch.sqrt(var + layer.eps) / running_std).clamp(1.0 / layer.r_max, layer.r_max).detach()
        d = ((mean - layer.running_mean.unsqueeze(-2)) / running_std).clamp(-layer.d_max, layer.d_max).detach()
        mean, var = mean - d * torch.sqrt(var.clamp_min(1e-12)) / r, var / r.square()
    scale = weight * torch.rsqrt(var + layer.eps)
    return torch.addcmul(bias - mean * scale, x, scale)


def test_closed_form_gradients_equal_autograd_in_every_phase() -> None:
    gen = torch.Generator().manual_seed(3)
    for warmup_steps, clipped in ((100, False), (0, False), (0, True)):
        layer = BatchRenorm(6, ensemble_shape=(2,), warmup_steps=warmup_steps).double()
        with torch.no_grad():
            layer.weight.copy_(torch.rand(2, 6, generator=gen, dtype=torch.float64) + 0.5)
            layer.bias.copy_(torch.randn(2, 6, generator=gen, dtype=torch.float64))
            layer.running_mean.copy_(torch.randn(2, 6, generator=gen, dtype=torch.float64) * (50.0 if clipped else 0.3))
            layer.running_var.copy_(torch.rand(2, 6, generator=gen, dtype=torch.float64) * (1e-3 if clipped else 1.0) + 0.5 * (not clipped))
        x = (2.0 + 1.5 * torch.randn(2, 40, 6, generator=gen, dtype=torch.float64)).requires_grad_()
        x_ref = x.detach().clone().requires_grad_()
        upstream = torch.randn(2, 40, 6, generator=gen, dtype=torch.float64)
        expected = autograd_renorm(layer, x_ref)  # before the pass below moves the running statistics
        (expected * upstream).sum().backward()
        ref_grads = [x_ref.grad, layer.weight.grad.clone(), layer.bias.grad.clone()]
        layer.zero_grad()
        out = layer(x)
        (out * upstream).sum().backward()
        assert torch.allclose(out, expected, atol=1e-12)
        for got, want in zip((x.grad, layer.weight.grad, layer.bias.grad), ref_grads):
            assert torch.allclose(got, want, atol=1e-10), (warmup_steps, clipped)
