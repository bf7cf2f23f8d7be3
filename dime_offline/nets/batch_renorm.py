"""Batch renormalisation (Ioffe 2017) as used by CrossQ and DIME's critics, for ensembles of layers.

Semantics follow the flax layer the authors use (see docs/algorithm.md, item 9):

* training mode, warm-up (fewer than ``warmup_steps`` training-mode forward passes so far): plain batch
  normalisation with the batch mean and the *biased* batch variance, computed as E[x^2] - E[x]^2;
* training mode after warm-up: renormalised with r = clip(std_B / std_run, 1/r_max, r_max) and
  d = clip((mu_B - mu_run) / std_run, -d_max, d_max), both without gradient, written as normalisation by
  mean mu_B - d sqrt(var_B) / r and variance var_B / r^2 (eps added once, inside the square root);
* in both training cases the running statistics then move by ``momentum`` (PyTorch convention: 0.01 here
  is flax's 0.99) toward the batch statistics, and the pass counter increments;
* eval mode: normalise with the running statistics; nothing is updated.

The running variance starts at 1 and the running mean at 0. Learnable scale (1) and bias (0).
"""

from __future__ import annotations

import torch
from torch import nn


class BatchRenorm(nn.Module):
    """Batch renorm over dim -2 of inputs (*S, B, F), with statistics and affine parameters of shape (*S, F).

    ``ensemble_shape=()`` is an ordinary layer on (B, F) inputs; ``ensemble_shape=(E,)`` holds E independent
    layers applied to (E, B, F) inputs (each member normalises over its own batch rows).
    """

    def __init__(
        self,
        num_features: int,
        ensemble_shape: tuple[int, ...] = (),
        momentum: float = 0.01,
        eps: float = 1e-3,
        r_max: float = 3.0,
        d_max: float = 5.0,
        warmup_steps: int = 100_000,
    ) -> None:
        super().__init__()
        shape = (*ensemble_shape, num_features)
        self.momentum = momentum
        self.eps = eps
        self.r_max = r_max
        self.d_max = d_max
        self.warmup_steps = warmup_steps
        self.weight = nn.Parameter(torch.ones(shape))
        self.bias = nn.Parameter(torch.zeros(shape))
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise x (*S, B, F) -> (*S, B, F), in float32 for reduced-precision inputs (bfloat16 products)."""
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        weight, bias = self.weight.unsqueeze(-2), self.bias.unsqueeze(-2)
        if not self.training:
            scale = weight * torch.rsqrt(self.running_var.unsqueeze(-2) + self.eps)
            return torch.addcmul(bias - self.running_mean.unsqueeze(-2) * scale, x, scale)
        mean, var, r, d = self._batch_statistics(x)
        with torch.no_grad():
            self.running_mean.lerp_(mean.squeeze(-2), self.momentum)
            self.running_var.lerp_(var.squeeze(-2), self.momentum)
            self.steps += 1
        return _RenormalizeInBatch.apply(x, weight, bias, mean, var, r, d, self.eps)

    @torch.no_grad()
    def _batch_statistics(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Batch mean and biased variance (*S, 1, F), and renorm's r and d (None during warm-up).

        flax's "fast variance" E[x^2] - E[x]^2, as the authors' layer computes it; also far faster
        than torch.var_mean's Welford kernel on CPU. Computed without gradient: the gradient through
        the statistics is :class:`_RenormalizeInBatch`'s closed form.
        """
        mean = x.mean(dim=-2, keepdim=True)
        var = ((x * x).mean(dim=-2, keepdim=True) - mean.square()).clamp_min(0.0)
        if int(self.steps) < self.warmup_steps:
            return mean, var, None, None
        running_std = torch.sqrt(self.running_var.unsqueeze(-2) + self.eps)
        r = (torch.sqrt(var + self.eps) / running_std).clamp(1.0 / self.r_max, self.r_max)
        d = ((mean - self.running_mean.unsqueeze(-2)) / running_std).clamp(-self.d_max, self.d_max)
        return mean, var, r, d


class _RenormalizeInBatch(torch.autograd.Function):
    """y = (x - m) w / sqrt(v + eps) + b with the batch's normalising mean and variance
    m = mu - d sigma / r, v = sigma^2 / r^2 (mu, sigma^2: the batch statistics over dim -2; r, d:
    constants, absent during warm-up, where m = mu, v = sigma^2), differentiated through mu and
    sigma^2 as autograd would, in closed form.

    Autograd through the same expression records a dozen operations over the (*S, B, F) activations
    (the statistics, their backward, the gradient sums); the closed form makes two reductions and
    two elementwise passes backward. Batch renorm is bound by memory traffic, not arithmetic: a
    critic forward+backward on 512 rows ran 1.04-1.11x faster, a pretraining step 1.09x and a
    fine-tuning step with the penalty's 1536-row joint pass 1.14x (docs/benchmarks.md). With g the
    output's gradient, per feature:

        dx = w rho [g - mean(g) + (x - mu) (d mean(g) / (r sigma) - rho^2 mean(g (x - m)) / r^2)],
        dw = rho sum(g (x - m)),  db = sum(g),  rho = 1 / sqrt(v + eps).

    sigma is floored at 1e-6 in the d / sigma term (a constant feature, e.g. a dead ReLU unit, has
    sigma = 0; there x - mu = 0 and the term vanishes anyway).
    """

    @staticmethod
    def forward(ctx, x, weight, bias, mean, var, r, d, eps):  # type: ignore[override]
        if r is None:
            norm_mean, norm_var = mean, var
        else:
            norm_mean = mean - d * torch.sqrt(var.clamp_min(1e-12)) / r
            norm_var = var / r.square()
        rho = torch.rsqrt(norm_var + eps)
        scale = weight * rho
        ctx.save_for_backward(x, weight, mean, var, r, d, norm_mean, rho)
        return torch.addcmul(bias - norm_mean * scale, x, scale)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, weight, mean, var, r, d, norm_mean, rho = ctx.saved_tensors
        rows = x.shape[-2]
        grad_sum = grad.sum(dim=-2, keepdim=True)
        # sum g (x - m) = sum g x - m sum g
        centred_grad_sum = (grad * x).sum(dim=-2, keepdim=True) - norm_mean * grad_sum
        grad_mean, centred_grad_mean = grad_sum / rows, centred_grad_sum / rows
        scale = weight * rho
        if r is None:
            slope = -rho.square() * centred_grad_mean
        else:
            sigma = torch.sqrt(var.clamp_min(1e-12))
            slope = d * grad_mean / (r * sigma) - rho.square() * centred_grad_mean / r.square()
        # dx = scale g + scale slope x + scale (-mean(g) - slope mu)
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.addcmul(scale * (-grad_mean - slope * mean), x, scale * slope).addcmul_(grad, scale)
        grad_weight = rho * centred_grad_sum if ctx.needs_input_grad[1] else None
        grad_bias = grad_sum if ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias, None, None, None, None, None
