"""The denoising chain for acting: the actions of :meth:`DiffusionPolicy.sample_action`, at a fraction of
the cost for the small batches a control loop asks for.

A batch-1 chain is N = 16 steps of ~10 tiny operations, so the cost of launching an operation, not
arithmetic, sets its time; and the score net's time conditioning (the time MLP on the N step indices
and the first layer's time part, ~8 MFLOP) costs twice the arithmetic of a whole one-row chain, although
it changes only when the policy trains. Three levers, all rewrites of the same computation:

* :class:`ActingConstantsCache` keeps what the chain needs that does not depend on the observations
  (:class:`ActingConstants`) and recomputes it only when a parameter it is computed from changed, judged
  by value: it keeps a copy of those parameters and compares them bit for bit (~1 MB, tens of us). Version
  counters cannot decide it: the fused Adam step updates parameters in place without bumping them. A
  frozen cache (deployed policies, which do not train) skips the comparison.
* :func:`final_state` runs the steps as bare tensor operations (no module calls, weights sliced and
  transposed once per chain, not per step): the same operations as ``DiffusionPolicy._denoise``'s
  float32 chain, so the same bits, at ~2/3 of its time for 16 rows.
* For up to 10 rows of the 256-wide score net (:func:`small_batch_applies`) the steps run in NumPy: a
  float32 product through NumPy's BLAS costs ~3 us against ~8 us through torch's dispatcher at one
  row, and in-place arithmetic on preallocated rows ~0.5 us an operation; the GELUs run torch's own
  kernel on the same memory. Products are taken in blocks of rows small enough for OpenBLAS to stay
  on one thread (:data:`SMALL_BATCH_MAX_PRODUCT`), so a batch of 10 (a stepped-together evaluation)
  costs three 4-row products per layer instead of one threaded one. Its products run in another BLAS, so these actions agree with the torch
  chain to float32 rounding (a few 1e-7), not bit for bit (``tests/agent/test_acting.py``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from dime_offline.nets.score_net import tanh_gelu

if TYPE_CHECKING:
    from dime_offline.nets.diffusion import DiffusionPolicy
    from dime_offline.nets.score_net import ScoreNet

SMALL_BATCH_MAX_PRODUCT = 4 * 256 * 256
"""The largest rows x inputs x outputs of one NumPy product in :func:`final_state` (larger batches are
multiplied in blocks of rows): OpenBLAS (NumPy's wheels) keeps a product of up to 65536 x 4
multiply-adds on one thread, and above it starts threads that wait for each other: on a loaded 2-core
machine 5-16 rows of the 256-wide score net took 40-360 us per product against 4-6 us for 1-4 rows."""
SMALL_BATCH_MAX_ROWS = 10
"""Most rows a NumPy chain takes in blocks (a net small enough for one block of more rows takes that
many). For the 256-wide score net at 10 rows (a stepped-together evaluation's batch) a blocked NumPy
action took 1.49-1.52 ms against 1.66-1.69 ms on the bare torch steps; at 16 rows they tie on one
thread and torch's steps won on two (docs/benchmarks.md, "Blocked NumPy products for batched actions")."""


class ActingConstants(NamedTuple):
    """What the no-gradient chain needs that does not depend on the observations (float32, no gradient)."""

    eta: torch.Tensor
    """(N, d) step sizes."""
    decay: torch.Tensor
    """(N, d) the prior drift's factor 1 - eta / sigma_0^2."""
    noise_std: torch.Tensor
    """(N, d) the injected noise's standard deviation sqrt(2 eta)."""
    time_part: torch.Tensor
    """(N, H) the score net's first-layer time part plus bias (:meth:`ScoreNet.time_part`)."""


class _KeptConstants(NamedTuple):
    constants: ActingConstants
    sources: list[np.ndarray]
    """Copies of the parameters the constants were computed from."""
    prior_std: float


class ActingConstantsCache:
    """Each policy's :class:`ActingConstants`, recomputed when a parameter they come from changed value.

    Kept per policy module (an agent acts with its live policy and, when it averages weights, with
    the averaged one): alternating between the two recomputes nothing.
    """

    def __init__(self) -> None:
        self._kept: weakref.WeakKeyDictionary[DiffusionPolicy, _KeptConstants] = weakref.WeakKeyDictionary()
        self.frozen = False
        """Skip the comparison once the constants exist (for policies that no longer train)."""

    def get(self, policy: DiffusionPolicy) -> ActingConstants:
        """The constants for ``policy``'s current parameters (a CPU policy)."""
        kept = self._kept.get(policy)
        if kept is not None and (self.frozen or _still_valid(kept, policy)):
            return kept.constants
        with torch.no_grad():
            constants = policy.acting_constants()
            sources = [t.detach().numpy().copy() for t in policy.acting_constant_sources()]
        self._kept[policy] = _KeptConstants(constants, sources, policy.prior_std)
        return constants

    def freeze(self) -> None:
        """From now on, return the constants without checking the parameters (deployed policies)."""
        self.frozen = True


def _still_valid(kept: _KeptConstants, policy: DiffusionPolicy) -> bool:
    sources = policy.acting_constant_sources()
    return policy.prior_std == kept.prior_std and len(sources) == len(kept.sources) and all(
        np.array_equal(t.detach().numpy(), source) for t, source in zip(sources, kept.sources)
    )


def small_batch_applies(score_net: ScoreNet, rows: int, device: torch.device) -> bool:
    """Whether :func:`final_state` runs a chain over ``rows`` rows in NumPy (float32 on the CPU)."""
    products = [layer.in_features * layer.out_features for layer in score_net.dense_hidden_layers()]
    block = _rows_per_product(max(products + [score_net.x_dim * score_net.first.out_features]))
    return device.type == "cpu" and block >= 1 and rows <= max(block, SMALL_BATCH_MAX_ROWS)


def _rows_per_product(multiply_adds_per_row: int) -> int:
    """Rows of one single-threaded NumPy product (:data:`SMALL_BATCH_MAX_PRODUCT`; 0: not even one)."""
    return SMALL_BATCH_MAX_PRODUCT // multiply_adds_per_row


def final_state(
    policy: DiffusionPolicy, constants: ActingConstants, obs: torch.Tensor, x: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_N of the float32 denoising chain from x_0 = ``x`` (B, d) with injected ``noise`` (N, B, d, already
    scaled by the noise standard deviation) for observations ``obs`` (B, O), no gradient: NumPy steps
    where :func:`small_batch_applies`, bare torch steps elsewhere (the module docstring)."""
    net = policy.score_net
    cond = net.prepare(obs, policy.step_index, constants.time_part)  # (N, B, H)
    w_x = net.first.weight[:, : net.x_dim].t()
    dense = [(layer.weight.t(), layer.bias) for layer in net.dense_hidden_layers()]
    w_out, b_out, clip = net.out.weight.t(), net.out.bias, net.output_clip
    eta, decay = constants.eta, constants.decay
    if small_batch_applies(net, x.shape[0], x.device):
        return _final_state_numpy(cond, w_x, dense, w_out, b_out, clip, eta, decay, x, noise)
    for n, cond_n in enumerate(cond.unbind(0)):  # ScoreNet.control's operations, in its order
        h = tanh_gelu(torch.addmm(cond_n, x, w_x))
        for weight, bias in dense:
            h = tanh_gelu(torch.addmm(bias, h, weight))
        u = torch.addmm(b_out, h, w_out).clamp_(-clip, clip)
        x = torch.addcmul(torch.addcmul(noise[n], u, eta[n]), x, decay[n])
    return x


def _final_state_numpy(
    cond: torch.Tensor, w_x: torch.Tensor, dense: list[tuple[torch.Tensor, torch.Tensor]], w_out: torch.Tensor,
    b_out: torch.Tensor, clip: float, eta: torch.Tensor, decay: torch.Tensor, x: torch.Tensor, noise: torch.Tensor,
) -> torch.Tensor:
    """:func:`final_state`'s loop in NumPy (CPU tensors in, a CPU tensor out)."""
    cond_np, w_x_np, w_out_np, b_out_np = (t.detach().numpy() for t in (cond, w_x, w_out, b_out))
    dense_np = [(weight.detach().numpy(), bias.detach().numpy()) for weight, bias in dense]
    eta_np, decay_np, noise_np = eta.numpy(), decay.numpy(), noise.numpy()
    x_np = x.numpy().copy()  # updated in place
    rows = x_np.shape[0]
    # Each product writes into a preallocated array whose torch view feeds the GELU.
    pre = [np.empty((rows, w.shape[1]), np.float32) for w in [w_x_np] + [w for w, _ in dense_np]]
    pre_t = [torch.from_numpy(a) for a in pre]
    u = np.empty((rows, w_out_np.shape[1]), np.float32)
    # Row blocks per layer, each product small enough for one OpenBLAS thread (SMALL_BATCH_MAX_PRODUCT).
    blocks_x, blocks_out = (_row_blocks(rows, w) for w in (w_x_np, w_out_np))
    blocks = [_row_blocks(rows, weight) for weight, _ in dense_np]
    for n in range(len(eta_np)):
        _blocked_matmul(x_np, w_x_np, pre[0], blocks_x)
        pre[0] += cond_np[n]
        h = F.gelu(pre_t[0], approximate="tanh").numpy()
        for (weight, bias), z, z_t, layer_blocks in zip(dense_np, pre[1:], pre_t[1:], blocks):
            _blocked_matmul(h, weight, z, layer_blocks)
            z += bias
            h = F.gelu(z_t, approximate="tanh").numpy()
        _blocked_matmul(h, w_out_np, u, blocks_out)
        u += b_out_np
        np.minimum(u, clip, out=u)
        np.maximum(u, -clip, out=u)
        # x <- (noise + u eta) + x decay, the torch steps' two addcmuls
        u *= eta_np[n]
        u += noise_np[n]
        x_np *= decay_np[n]
        x_np += u
    return torch.from_numpy(x_np)


def _row_blocks(rows: int, weight: np.ndarray) -> list[slice]:
    """Consecutive slices covering ``rows`` rows, each small enough that its product with ``weight``
    stays within :data:`SMALL_BATCH_MAX_PRODUCT` multiply-adds (at least one row each)."""
    step = max(_rows_per_product(weight.size), 1)
    return [slice(start, min(start + step, rows)) for start in range(0, rows, step)]


def _blocked_matmul(a: np.ndarray, weight: np.ndarray, out: np.ndarray, blocks: list[slice]) -> None:
    """``out = a @ weight``, one product per row block (one block: a single call on whole arrays)."""
    if len(blocks) == 1:
        np.matmul(a, weight, out=out)
        return
    for block in blocks:
        np.matmul(a[block], weight, out=out[block])
