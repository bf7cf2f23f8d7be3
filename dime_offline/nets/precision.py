"""Where the networks may run their matrix products in bfloat16, and the switch that decides it.

DIME's cost is dominated by dense layers: the score net's three hidden layers, run once per chain
step, and the critics' hidden layers. On CPUs with native bfloat16 matrix units (Intel AMX or
AVX512-BF16) a bfloat16 product of these shapes runs 2-6x faster than float32 (docs/benchmarks.md).
On a CUDA GPU the same update is bound by kernel launches, not by arithmetic, and the casts add
kernels, so "auto" keeps float32 there (measured on an H200, docs/benchmarks.md "On a CUDA GPU").
Everything that carries the algorithm's numbers stays in
float32: the chain's state and its running and terminal costs, the score net's output layer, batch
renormalisation statistics, the critics' atom logits and everything after them (softmax, the C51
projection, cross-entropy and entropy terms), and all parameters and optimiser state (bfloat16 is a
compute type only: weights are cast per call, gradients flow back into the float32 parameters).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

MatmulPrecision = Literal["auto", "float32", "bfloat16"]

SCORE_NET_BF16_MIN_ROWS = 256
"""Below this many rows per step a bfloat16 score-net pass is slower than float32 on the CPUs
measured (casts and bfloat16 elementwise kernels outweigh the faster products): at batch 1 it takes
twice as long, at 128 rows 10 % longer, at 256 rows the no-gradient chain ties and the gradient
chain gains (docs/benchmarks.md). So acting and batched evaluation stay float32."""


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` has hardware bfloat16 matrix units (where bfloat16 pays)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # torch.cpu's feature probes are private: a build without them counts as having no bf16 units.
        probes = (getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
        return torch.backends.mkldnn.is_available() and any(probe is not None and probe() for probe in probes)
    return False


def resolve_matmul_dtype(precision: MatmulPrecision, device: torch.device) -> torch.dtype:
    """The compute dtype of the hidden layers: ``precision``, with "auto" meaning bfloat16 where it measured
    faster: CPUs with native bfloat16 units (:func:`native_bf16`). Not CUDA GPUs: at DIME's layer widths
    an update there costs its kernel launches, and on an H200 the ``cpu`` and ``paper`` presets' updates
    took 25 and 26 ms in float32 against 30 and 30 ms in bfloat16 (docs/benchmarks.md)."""
    if precision == "bfloat16" or (precision == "auto" and device.type == "cpu" and native_bf16(device)):
        return torch.bfloat16
    return torch.float32


def score_net_dtype(dtype: torch.dtype, rows: int, device: torch.device) -> torch.dtype:
    """The score net's compute dtype for a pass over ``rows`` rows: ``dtype``, except float32 for
    small CPU passes (:data:`SCORE_NET_BF16_MIN_ROWS`)."""
    if device.type == "cpu" and rows < SCORE_NET_BF16_MIN_ROWS:
        return torch.float32
    return dtype


def low_precision(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """An autocast region running matrix products in ``dtype`` (a no-op context for float32).

    One region per chain, so each weight is cast once per chain (autocast caches the casts of
    parameters within a region), not once per step.
    """
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
