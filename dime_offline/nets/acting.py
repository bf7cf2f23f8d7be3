"""The denoising chain for acting: the actions of :meth:`DiffusionPolicy.sample_action`, at a fraction of
the cost for the small batches a control loop asks for.

A batch-1 chain is N = 16 steps of ~10 tiny operations, so the cost of launching an operation, not
arithmetic, sets its time; and the score net's time conditioning (the time MLP on the N step indices
and the first layer's time part, ~8 MFLOP) costs twice the arithmetic of a whole one-row chain, although
it changes only when the policy trains. Two levers, both exact rewrites of the same computation:

* :class:`ActingConstantsCache` keeps what the chain needs that does not depend on the observations
  (:class:`ActingConstants`) and recomputes it only when a parameter it is computed from changed, judged
  by value: it keeps a copy of those parameters and compares them bit for bit (~1 MB, tens of us). Version
  counters cannot decide it: the fused Adam step updates parameters in place without bumping them. A
  frozen cache (deployed policies, which do not train) skips the comparison.
* :func:`final_state_small_batch` runs the steps for a few rows through NumPy: a float32 product through
  NumPy's BLAS costs ~3 us against ~8 us through torch's dispatcher at one row, and in-place NumPy
  arithmetic on preallocated rows ~0.5 us an operation; the GELUs run torch's own kernel on the same
  memory, so they are today's GELUs bit for bit. Above a few rows (:func:`small_batch_applies`)
  NumPy's OpenBLAS starts threads that busy-wait against torch's (16 rows took 360 us instead of 47 on a
  loaded 2-core machine), so larger batches run the torch chain with the cached constants.

The products run in another BLAS than torch's, so actions agree with the torch chain to float32
rounding (a few 1e-7), not bit for bit; ``tests/agent/test_acting.py`` checks them on fixed noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from dime_offline.nets.diffusion import DiffusionPolicy
    from dime_offline.nets.score_net import ScoreNet

SMALL_BATCH_MAX_PRODUCT = 4 * 256 * 256
"""The largest rows x inputs x outputs of one layer's product that :func:`final_state_small_batch` runs
through NumPy: the largest measured that NumPy's OpenBLAS keeps on one thread (8 rows of the 256-wide
score net; 16 rows went multi-threaded)."""


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


class ActingConstantsCache:
    """A policy's :class:`ActingConstants`, recomputed when a parameter they come from changed value."""

    def __init__(self) -> None:
        self._constants: ActingConstants | None = None
        self._sources: list[np.ndarray] = []
        self._prior_std: float | None = None
        self.frozen = False
        """Skip the comparison once the constants exist (for policies that no longer train)."""

    def get(self, policy: DiffusionPolicy) -> ActingConstants:
        """The constants for ``policy``'s current parameters (a CPU policy)."""
        if self._constants is not None and (self.frozen or self._still_valid(policy)):
            return self._constants
        with torch.no_grad():
            self._constants = policy.acting_constants()
            self._sources = [t.detach().numpy().copy() for t in policy.acting_constant_sources()]
        self._prior_std = policy.prior_std
        return self._constants

    def freeze(self) -> None:
        """From now on, return the constants without checking the parameters (deployed policies)."""
        self.frozen = True

    def _still_valid(self, policy: DiffusionPolicy) -> bool:
        sources = policy.acting_constant_sources()
        return policy.prior_std == self._prior_std and len(sources) == len(self._sources) and all(
            np.array_equal(t.detach().numpy(), kept) for t, kept in zip(sources, self._sources)
        )


def small_batch_applies(score_net: ScoreNet, rows: int, device: torch.device) -> bool:
    """Whether :func:`final_state_small_batch` runs a chain over ``rows`` rows (float32 on the CPU)."""
    if device.type != "cpu":
        return False
    products = [layer.in_features * layer.out_features for layer in score_net.dense_hidden_layers()]
    return rows * max(products + [score_net.x_dim * score_net.first.out_features]) <= SMALL_BATCH_MAX_PRODUCT


def final_state_small_batch(
    score_net: ScoreNet, constants: ActingConstants, obs: torch.Tensor, x: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """x_N of the denoising chain from x_0 = ``x`` (B, d) with injected noise ``noise`` (N, B, d, already
    scaled by the noise standard deviation), for observations ``obs`` (B, O): the float32 steps of
    ``DiffusionPolicy._denoise`` in NumPy (see the module docstring). CPU float32 tensors, no gradient."""
    d, o = score_net.x_dim, score_net.obs_dim
    first = score_net.first.weight.detach().numpy()
    # As ScoreNet.prepare: the observation part, then both parts added per step (N, B, H).
    cond = (obs.numpy() @ first[:, d : d + o].T)[None] + constants.time_part.numpy()[:, None]
    w_x = first[:, :d].T
    dense = [(layer.weight.detach().numpy().T, layer.bias.detach().numpy()) for layer in score_net.dense_hidden_layers()]
    w_out, b_out = score_net.out.weight.detach().numpy().T, score_net.out.bias.detach().numpy()
    eta, decay, clip = constants.eta.numpy(), constants.decay.numpy(), score_net.output_clip
    noise_np = noise.numpy()
    x_np = x.numpy().copy()  # updated in place
    rows = x_np.shape[0]
    # Each product writes into a preallocated array whose torch view feeds the GELU.
    pre = [np.empty((rows, cond.shape[-1]), np.float32)] + [np.empty((rows, w.shape[1]), np.float32) for w, _ in dense]
    pre_t = [torch.from_numpy(a) for a in pre]
    u = np.empty((rows, d), np.float32)
    for n in range(len(eta)):
        np.matmul(x_np, w_x, out=pre[0])
        pre[0] += cond[n]
        h = F.gelu(pre_t[0], approximate="tanh").numpy()
        for (weight, bias), z, z_t in zip(dense, pre[1:], pre_t[1:]):
            np.matmul(h, weight, out=z)
            z += bias
            h = F.gelu(z_t, approximate="tanh").numpy()
        np.matmul(h, w_out, out=u)
        u += b_out
        np.minimum(u, clip, out=u)
        np.maximum(u, -clip, out=u)
        # x <- (noise + u eta) + x decay, the torch chain's two addcmuls
        u *= eta[n]
        u += noise_np[n]
        x_np *= decay[n]
        x_np += u
    return torch.from_numpy(x_np)
