"""Dense-layer helpers with the initialisation the authors' JAX/flax code gets by default.

flax ``nn.Dense`` initialises kernels with LeCun normal (a normal truncated to two standard deviations,
variance 1/fan_in after truncation) and biases with zeros. PyTorch's ``nn.Linear`` default (Kaiming
uniform with a=sqrt(5), uniform bias) is a different distribution, so every dense layer of the port goes
through :func:`lecun_normal_`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

# Standard deviation of a unit normal truncated to [-2, 2]; dividing by it restores unit variance
# after truncation (the constant flax's variance_scaling uses for "truncated_normal").
_TRUNCATED_NORMAL_STD = 0.87962566103423978


@torch.no_grad()
def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Fill ``weight`` in place with LeCun-normal values (truncated at 2 std, variance 1/fan_in)."""
    std = (1.0 / fan_in) ** 0.5 / _TRUNCATED_NORMAL_STD
    return nn.init.trunc_normal_(weight, mean=0.0, std=std, a=-2.0 * std, b=2.0 * std)


def dense(in_features: int, out_features: int) -> nn.Linear:
    """An ``nn.Linear`` (weight (out, in)) with flax's default init: LeCun normal kernel, zero bias."""
    layer = nn.Linear(in_features, out_features)
    lecun_normal_(layer.weight, fan_in=in_features)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: Callable[[], nn.Module],
) -> nn.Sequential:
    """Dense -> activation for each hidden width, then a final Dense; input (..., in), output (..., out)."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [dense(width, h), activation()]
        width = h
    layers.append(dense(width, out_features))
    return nn.Sequential(*layers)
