"""An ensemble of independent C51 (categorical) critics with batch renormalisation, CrossQ style.

Each member k: concat(obs, action) -> BRN -> [Dense H -> ReLU -> BRN] x L -> Dense K -> softmax over the K
atoms z = linspace(v_min, v_max, K). Members have separate weights and separate BRN statistics.

All members run as one batched computation: weights are stored stacked, (E, in, out), and every layer is a
single ``torch.baddbmm`` over the ensemble dimension, so the two critics cost one kernel per layer
instead of a Python loop over modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from dime_offline.nets.batch_renorm import BatchRenorm
from dime_offline.nets.mlp import lecun_normal_


def repeat_last_atom(tensor: torch.Tensor, copies: int) -> torch.Tensor:
    """``tensor`` (..., K) with its last entry along the atoms axis appended ``copies`` times: (..., K + copies)."""
    return torch.cat([tensor, tensor[..., -1:].expand(*tensor.shape[:-1], copies)], -1)


class EnsembleDense(nn.Module):
    """E independent dense layers: x (E, B, in) -> (E, B, out); LeCun-normal weights, zero bias.

    ``compute_dtype`` (float32 unless the critic sets it) is the dtype the product runs in: weights,
    bias and input are cast per call and the output stays in that dtype; the parameters and their
    gradients stay float32.
    """

    def __init__(self, n_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(n_members, 1, out_features))
        for member in self.weight:
            lecun_normal_(member, fan_in=in_features)
        self.compute_dtype = torch.float32

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.compute_dtype
        if dtype == torch.float32:
            return torch.baddbmm(self.bias, x, self.weight)
        return torch.baddbmm(self.bias.to(dtype), x.to(dtype), self.weight.to(dtype))


class DistributionalCritic(nn.Module):
    """E categorical critics over a shared support.

    Args:
        obs_dim, act_dim: input sizes (observations already normalised; actions in [-1, 1]).
        hidden: hidden widths per member (authors: 2048, 2048).
        n_atoms: K (authors: 101).
        v_min, v_max: support end points (authors: +-200 DMC, +-1600 gym).
        n_critics: E (authors: 2).
        brn_momentum, brn_eps, brn_warmup_steps, brn_r_max, brn_d_max: see :class:`BatchRenorm`.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (2048, 2048),
        n_atoms: int = 101,
        v_min: float = -1600.0,
        v_max: float = 1600.0,
        n_critics: int = 2,
        brn_momentum: float = 0.01,
        brn_eps: float = 1e-3,
        brn_warmup_steps: int = 100_000,
        brn_r_max: float = 3.0,
        brn_d_max: float = 5.0,
    ) -> None:
        super().__init__()
        self.n_critics = n_critics

        def brn(width: int) -> BatchRenorm:
            return BatchRenorm(width, (n_critics,), brn_momentum, brn_eps, brn_r_max, brn_d_max, brn_warmup_steps)

        layers: list[nn.Module] = [brn(obs_dim + act_dim)]
        width = obs_dim + act_dim
        for h in hidden:
            layers += [EnsembleDense(n_critics, width, h), nn.ReLU(), brn(h)]
            width = h
        layers.append(EnsembleDense(n_critics, width, n_atoms))
        self.net = nn.Sequential(*layers)
        self.register_buffer("support", torch.linspace(v_min, v_max, n_atoms))

    def set_matmul_dtype(self, dtype: torch.dtype) -> None:
        """Run the hidden layers' products in ``dtype`` (``nets/precision.py``). The atoms head stays
        float32, and batch renormalisation computes its statistics in float32 either way."""
        *hidden, head = [m for m in self.net if isinstance(m, EnsembleDense)]
        for layer in hidden:
            layer.compute_dtype = dtype
        head.compute_dtype = torch.float32

    @property
    def head(self) -> EnsembleDense:
        """The last layer: one logit per atom."""
        return self.net[-1]

    @torch.no_grad()
    def extend_support(self, extra_atoms: int, v_max: float, logit_gap: float) -> None:
        """Append ``extra_atoms`` atoms above the top one, the support running on to ``v_max`` at its
        spacing. Each new atom's head row copies the top atom's weights, its bias lower by ``logit_gap``
        per atom: its logit follows the top atom's at that distance for every input, so only inputs
        with mass on the top atom change their distribution (part of that mass moves up), and the new
        rows learn from the features the top atom already uses."""
        head = self.head
        offsets = logit_gap * torch.arange(1, extra_atoms + 1, dtype=head.bias.dtype, device=head.bias.device)
        head.weight.data = repeat_last_atom(head.weight, extra_atoms)
        head.bias.data = torch.cat([head.bias, head.bias[..., -1:] - offsets], -1)
        head.weight.grad = head.bias.grad = None
        self.support = torch.linspace(self.v_min, v_max, self.support.shape[0] + extra_atoms, device=self.support.device)

    @property
    def v_min(self) -> float:
        return float(self.support[0])

    @property
    def v_max(self) -> float:
        return float(self.support[-1])

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Atom logits (E, B, K) for obs (B, O) and action (B, d). BRN statistics update in train mode."""
        x = torch.cat([obs, action], dim=-1)
        return self.net(x.unsqueeze(0).expand(self.n_critics, *x.shape))

    def expected_q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Expected value sum_i p_i z_i per critic, (E, B)."""
        return self.forward(obs, action).softmax(-1) @ self.support
