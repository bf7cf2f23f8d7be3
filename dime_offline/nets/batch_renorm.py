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
        """Normalise x (*S, B, F) -> (*S, B, F), in float32 whatever the input's dtype."""
        x = x.float()
        weight, bias = self.weight.unsqueeze(-2), self.bias.unsqueeze(-2)
        if not self.training:
            scale = weight * torch.rsqrt(self.running_var.unsqueeze(-2) + self.eps)
            return torch.addcmul(bias - self.running_mean.unsqueeze(-2) * scale, x, scale)
        # flax's "fast variance" E[x^2] - E[x]^2 (biased), as the authors' layer computes it; also far
        # faster than torch.var_mean's Welford kernel on CPU.
        mean = x.mean(dim=-2, keepdim=True)
        var = ((x * x).mean(dim=-2, keepdim=True) - mean.square()).clamp_min(0.0)
        if int(self.steps) >= self.warmup_steps:
            with torch.no_grad():
                running_std = torch.sqrt(self.running_var.unsqueeze(-2) + self.eps)
                r = (torch.sqrt(var + self.eps) / running_std).clamp(1.0 / self.r_max, self.r_max)
                d = ((mean - self.running_mean.unsqueeze(-2)) / running_std).clamp(-self.d_max, self.d_max)
            # clamp: a constant feature (e.g. a dead ReLU unit) has var 0, where sqrt's gradient is
            # inf and inf * 0 = NaN; the value changes by at most 1e-6.
            norm_mean = mean - d * torch.sqrt(var.clamp_min(1e-12)) / r
            norm_var = var / r.square()
        else:
            norm_mean, norm_var = mean, var
        with torch.no_grad():
            self.running_mean.lerp_(mean.squeeze(-2), self.momentum)
            self.running_var.lerp_(var.squeeze(-2), self.momentum)
            self.steps += 1
        scale = weight * torch.rsqrt(norm_var + self.eps)
        return torch.addcmul(bias - norm_mean * scale, x, scale)
