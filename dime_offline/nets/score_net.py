"""The conditional control ("score") network u_theta(x_n, s, n) of the DIME denoising chain.

Architecture as in the authors' conditional PISGRAD net (see docs/algorithm.md, item 1):

* time features: the raw integer step index n (0..N-1, *not* normalised) goes through fixed frequencies
  w = linspace(0.1, 100, F) with a learnable phase phi (zero init): [sin(w n + phi), cos(w n + phi)],
  then a time MLP Dense(T) -> GELU -> Dense(T);
* main MLP on concat(x_n, s, time embedding): L x [Dense(H) -> GELU], then Dense(d) whose weights start at
  the constant 1e-8 and bias at 0 (so the initial policy is the prior-Langevin chain), output clipped.

GELU is the tanh approximation because that is what flax's ``nn.gelu`` computes.

Speed: the first main layer is linear in its concatenated input, so W [x; s; t] + b is split into
W_x x + (W_s s + W_t t + b). The bracket does not depend on x_n, so :meth:`ScoreNet.prepare` computes it
once per chain for all N steps (the time embedding once per chain, not per sample), and each of the N
sequential steps only pays W_x x_n (a d-column matmul). This is an exact rewrite of the concatenation,
not an approximation; ``tests/agent/test_nets.py`` checks it against the plain concatenated forward.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dime_offline.nets.mlp import dense


_GELU_2C = 2.0 * math.sqrt(2.0 / math.pi)
FAST_GELU_MIN_ELEMENTS = 32768
"""From this many elements on (128 rows of 256), a float32 no-gradient GELU runs as :func:`tanh_gelu`'s
four in-place passes; below it torch's single kernel wins on per-operation cost (docs/benchmarks.md)."""


def tanh_gelu(x: torch.Tensor) -> torch.Tensor:
    """GELU's tanh approximation (flax's ``nn.gelu``), 0.5 x (1 + tanh(z)) with z = sqrt(2/pi)(x + 0.044715 x^3).

    For large float32 CPU tensors outside autograd it is computed as the equal x sigmoid(2z), in four
    in-place passes: torch's CPU tanh-GELU kernel is bound by its vectorised tanh (on an AVX2 EPYC 130 us
    against 68 us for a 256 x 256 tile; on an AVX-512 one 67 against 46 us, docs/benchmarks.md). The two
    agree to float32 rounding. Gradient passes, other dtypes (bfloat16 keeps torch's float32 internals),
    small tensors, GPUs (one fused kernel there) and traced graphs (export) use torch's kernel.
    """
    if (
        x.device.type != "cpu"
        or x.dtype != torch.float32
        or x.numel() < FAST_GELU_MIN_ELEMENTS
        or (x.requires_grad and torch.is_grad_enabled())
        or torch.jit.is_tracing()
        or torch.onnx.is_in_onnx_export()
    ):
        return F.gelu(x, approximate="tanh")
    two_z_over_x = torch.addcmul(x.new_tensor(_GELU_2C), x, x, value=_GELU_2C * 0.044715)
    return two_z_over_x.mul_(x).sigmoid_().mul_(x)


class TanhGELU(nn.Module):
    """:func:`tanh_gelu` as a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tanh_gelu(x)


def _gelu() -> nn.Module:
    return TanhGELU()


@functools.cache
def _fused_linear_gelu_works() -> bool:
    """Whether this torch build runs oneDNN's fused Dense + tanh-GELU and matches the eager layers
    (checked once; a private op, so its absence or a change falls back to the eager layers)."""
    try:
        gen = torch.Generator().manual_seed(0)
        x, w, b = (torch.randn(shape, generator=gen) for shape in ((4, 8), (5, 8), (5,)))
        fused = torch.ops.mkldnn._linear_pointwise(x, w, b, "gelu", [], "tanh")
        return bool(torch.allclose(fused, F.gelu(F.linear(x, w, b), approximate="tanh"), atol=1e-5))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def fused_linear_gelu_available(device: torch.device) -> bool:
    """Whether :meth:`ScoreNet.control` fuses its hidden layers on ``device``: a CPU with oneDNN and
    AVX-512, where the fused kernel measured faster (an update 5-8 % on an AVX-512 EPYC); on an AVX2
    EPYC it was slower than MKL's product and :func:`tanh_gelu` (docs/benchmarks.md)."""
    return (
        device.type == "cpu"
        and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
        and torch.backends.mkldnn.is_available()
        and _fused_linear_gelu_works()
    )


class ScoreNet(nn.Module):
    """u_theta: (x (..., d), obs (B, O), step n) -> control (..., d).

    Args:
        x_dim: d, the (pre-tanh) action dimension.
        obs_dim: O, the observation dimension.
        hidden: widths of the main MLP's hidden layers (authors: 3 x 256).
        n_frequencies: F, number of Fourier frequencies (features are 2F: sin and cos).
        time_hidden: T, width of the time MLP and of the time embedding.
        output_clip: the control is clipped to [-output_clip, output_clip].
        last_layer_init: constant value of the last layer's weights at initialisation.
    """

    def __init__(
        self,
        x_dim: int,
        obs_dim: int,
        hidden: Sequence[int] = (256, 256, 256),
        n_frequencies: int = 256,
        time_hidden: int = 256,
        output_clip: float = 1e4,
        last_layer_init: float = 1e-8,
    ) -> None:
        super().__init__()
        if len(hidden) < 1:
            raise ValueError("the score net needs at least one hidden layer")
        self.x_dim = x_dim
        self.obs_dim = obs_dim
        self.output_clip = output_clip
        self.register_buffer("frequencies", torch.linspace(0.1, 100.0, n_frequencies))
        self.phase = nn.Parameter(torch.zeros(n_frequencies))
        self.time_mlp = nn.Sequential(dense(2 * n_frequencies, time_hidden), _gelu(), dense(time_hidden, time_hidden))
        # One Dense over concat(x, obs, t_emb): a single weight so the init's fan-in is the full width.
        self.first = dense(x_dim + obs_dim + time_hidden, hidden[0])
        rest: list[nn.Module] = []
        for w_in, w_out in itertools.pairwise(hidden):
            rest += [dense(w_in, w_out), _gelu()]
        self.hidden_layers = nn.Sequential(*rest)
        self.out = dense(hidden[-1], x_dim)
        with torch.no_grad():
            self.out.weight.fill_(last_layer_init)
        self.act = _gelu()

    def time_embedding(self, steps: torch.Tensor) -> torch.Tensor:
        """Time embedding (N, T) of raw step indices ``steps`` (N,) (floats 0., 1., ..., N-1)."""
        angles = steps[:, None] * self.frequencies + self.phase
        return self.time_mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1))

    def time_part(self, steps: torch.Tensor) -> torch.Tensor:
        """The first layer's time part plus its bias, (N, H), for raw step indices ``steps`` (N,): the
        observation-free half of :meth:`prepare` (acting caches it while the parameters stay the same)."""
        return F.linear(self.time_embedding(steps), self.first.weight[:, self.x_dim + self.obs_dim :], self.first.bias)

    def prepare(self, obs: torch.Tensor, steps: torch.Tensor, time_part: torch.Tensor | None = None) -> torch.Tensor:
        """Per-step conditioning (N, B, H): the first layer's obs and time parts plus its bias.

        ``obs`` (B, O); ``steps`` (N,) raw step indices; ``time_part``: :meth:`time_part` of ``steps``
        if already computed, (N, H), or gathered per row, (N, B, H), when each row is conditioned on its
        own steps. Feed ``cond[n]`` to :meth:`control` at step n.
        """
        d, o = self.x_dim, self.obs_dim
        obs_part = F.linear(obs, self.first.weight[:, d : d + o])  # (B, H)
        if time_part is None:
            time_part = self.time_part(steps)
        if time_part.dim() == 2:
            time_part = time_part.unsqueeze(1)
        return obs_part.unsqueeze(0) + time_part

    def fused_hidden_layers(self, dtype: torch.dtype) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """The hidden Dense -> GELU layers' (weight, bias) in ``dtype``, for :meth:`control`'s fused
        no-gradient path; None where that path does not apply (gradients on, not a CPU, no oneDNN).

        Cast once per chain, not per step. The fused kernel (oneDNN's matmul with a tanh-GELU
        post-op) computes the same function as Dense then GELU in one pass over the output, and
        has no backward, hence no-gradient passes only (target actions, penalty candidates, acting).
        """
        if torch.is_grad_enabled() or not fused_linear_gelu_available(self.first.weight.device):
            return None
        return [(layer.weight.to(dtype), layer.bias.to(dtype)) for layer in self.dense_hidden_layers()]

    def dense_hidden_layers(self) -> list[nn.Linear]:
        """The Dense layers of the hidden stack after the first layer, each followed by a GELU."""
        return [layer for layer in self.hidden_layers if isinstance(layer, nn.Linear)]

    def control(
        self, x: torch.Tensor, cond: torch.Tensor, fused: list[tuple[torch.Tensor, torch.Tensor]] | None = None
    ) -> torch.Tensor:
        """u_theta for states ``x`` (..., d) given conditioning ``cond`` (..., H) from :meth:`prepare`.

        Under a bfloat16 autocast (see :func:`dime_offline.nets.precision.low_precision`) the hidden
        layers run in bfloat16; the output layer always runs in float32, so the control term that
        enters the chain's state and its costs keeps full precision. ``fused``: the hidden layers
        from :meth:`fused_hidden_layers` (no-gradient passes), run as fused Dense + GELU kernels.
        """
        w_x = self.first.weight[:, : self.x_dim]
        if x.dim() == 2:
            h = torch.addmm(cond, x, w_x.t())
        else:
            h = cond + F.linear(x, w_x)
        h = self.act(h)
        if fused is None:
            h = self.hidden_layers(h)
        else:
            h = h.to(fused[0][0].dtype)
            for weight, bias in fused:
                h = torch.ops.mkldnn._linear_pointwise(h, weight, bias, "gelu", [], "tanh")
        if torch.is_autocast_enabled(h.device.type):
            with torch.autocast(h.device.type, enabled=False):
                u = self.out(h.float())
        else:
            u = self.out(h.float())
        return u.clamp(-self.output_clip, self.output_clip)

    def forward(self, x: torch.Tensor, obs: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """Reference forward on the literal concatenation: x (B, d), obs (B, O), step (B,) -> (B, d)."""
        t_emb = self.time_embedding(step)
        h = self.act(self.first(torch.cat([x, obs, t_emb], dim=-1)))
        h = self.hidden_layers(h)
        return self.out(h).clamp(-self.output_clip, self.output_clip)
