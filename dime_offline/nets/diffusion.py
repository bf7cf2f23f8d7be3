"""The DIME diffusion policy: a denoising (generative) chain from a Gaussian prior to a tanh-squashed action.

Directions are named by what they do, never "forward/backward" (the authors' code and paper use those
words in opposite senses):

* **denoising chain** (generative, the policy; the authors' code calls it the *forward* kernel):
  x_0 ~ p_0 = N(0, sigma_0^2 I), then for n = 0..N-1
  x_{n+1} = x_n + eta_n * (-x_n / sigma_0^2 + u_theta(x_n, s, n)) + sqrt(2 eta_n) * eps_n,
  kernel f_theta(x_{n+1} | x_n) = N(x_n (1 - eta_n / sigma_0^2) + eta_n u_theta, 2 eta_n), action a = tanh(x_N);
* **noising chain** (fixed, no network; the code's *backward* kernel), an Euler-Maruyama step of the
  prior-stationary Langevin (Ornstein-Uhlenbeck) process evaluated at the *later* point:
  b(x_n | x_{n+1}) = N(x_{n+1} (1 - eta_n / sigma_0^2), 2 eta_n), with the *same* eta_n as denoising step n.

eta_n = delta_n / g (per action dimension), delta_n = softplus(rho) * c(n) with one learnable scalar rho
(init: delta scale 0.1), the cosine factor c(n) (largest at n = 0, the noise end; not divided by N) and a
learnable per-dimension friction g = softplus(.) (init 1.0).

Per sample the policy returns the *running cost* R = -sum_n [log b(x_n|x_{n+1}) - log f(x_{n+1}|x_n)]
- sum_i log(1 - tanh^2(x_{N,i})) and the *terminal cost* T = log p_0(x_0) (no gradient). R + T is a
one-sample estimate of -(entropy lower bound of the squashed action), i.e. it plays "log pi(a|s)" in
the losses. See docs/algorithm.md for the derivation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from dime_offline.nets import acting
from dime_offline.nets.precision import (
    SCORE_NET_BF16_MIN_ROWS,
    low_precision,
    score_net_dtype,
)
from dime_offline.nets.score_net import ScoreNet

_LOG_2PI = math.log(2.0 * math.pi)


class ChainSample(NamedTuple):
    """One pass of the denoising chain for a batch of B states (all tensors share the batch's device)."""

    action: torch.Tensor
    """(B, d) squashed action tanh(x_N) in [-1, 1]."""
    pre_tanh: torch.Tensor
    """(B, d) final chain state x_N."""
    running_cost: torch.Tensor
    """(B,) R = -log_ratio - sum log(1 - tanh^2(x_N)); carries pathwise gradients."""
    terminal_cost: torch.Tensor
    """(B,) T = log p_0(x_0); no gradient (x_0 comes from the fixed prior)."""

    @property
    def log_prob_surrogate(self) -> torch.Tensor:
        """(B,) R + T, a one-sample upper-bound surrogate for log pi(a|s) (minus the entropy bound)."""
        return self.running_cost + self.terminal_cost


def cosine_schedule(n_steps: int, offset: float = 0.008, floor: float = 0.001) -> torch.Tensor:
    """Cosine step-size factors c(n), n = 0..N-1, shape (N,): c(0) ~ 1 (noise end), c(N-1) ~ 0.01.

    c(n) = (1 - floor) * cos^2(pi/2 * (1 + offset - (N - n)/N) / (1 + offset)) + floor.
    """
    n = torch.arange(n_steps, dtype=torch.float64)
    phase = (1.0 + offset - (n_steps - n) / n_steps) / (1.0 + offset)
    return ((1.0 - floor) * torch.cos(0.5 * math.pi * phase) ** 2 + floor).float()


def softplus_inverse(y: float) -> float:
    """The raw value whose softplus is ``y`` (> 0)."""
    return y + math.log(-math.expm1(-y))


def tanh_log_abs_det(x: torch.Tensor) -> torch.Tensor:
    """sum_i log(1 - tanh^2(x_i)) over the last dim, (..., d) -> (...), in the overflow-free form
    2 (log 2 - x - softplus(-2x)) (exact for all x; the naive form is -inf for |x| > ~9 in float32)."""
    return (2.0 * (math.log(2.0) - x - F.softplus(-2.0 * x))).sum(-1)


class DiffusionPolicy(nn.Module):
    """pi_theta(a|s): N-step denoising chain with a learned control term, tanh-squashed.

    Args:
        obs_dim: O, observation dimension (normalised observations are the caller's business).
        act_dim: d, action dimension.
        n_steps: N, number of denoising steps (authors: 16).
        prior_std: sigma_0 of the fixed prior N(0, sigma_0^2 I) (authors: 2.5).
        dt_init: initial softplus(rho), the global step-size scale (authors: 0.1).
        friction_init: initial per-dimension friction g (authors: 1.0).
        learn_dt: whether rho is trained (authors: yes).
        learn_friction: whether the friction is trained (authors: yes).
        score_hidden, n_frequencies, time_hidden, score_output_clip: see :class:`ScoreNet`.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n_steps: int = 16,
        prior_std: float = 2.5,
        dt_init: float = 0.1,
        friction_init: float = 1.0,
        learn_dt: bool = True,
        learn_friction: bool = True,
        score_hidden: Sequence[int] = (256, 256, 256),
        n_frequencies: int = 256,
        time_hidden: int = 256,
        score_output_clip: float = 1e4,
    ) -> None:
        super().__init__()
        self.obs_dim = obs_dim
        self.act_dim = act_dim
        self.n_steps = n_steps
        self.prior_std = prior_std
        self.score_net = ScoreNet(act_dim, obs_dim, score_hidden, n_frequencies, time_hidden, score_output_clip)
        raw_dt = torch.tensor(softplus_inverse(dt_init))
        raw_friction = torch.full((act_dim,), softplus_inverse(friction_init))
        if learn_dt:
            self.raw_dt = nn.Parameter(raw_dt)
        else:
            self.register_buffer("raw_dt", raw_dt)
        if learn_friction:
            self.raw_friction = nn.Parameter(raw_friction)
        else:
            self.register_buffer("raw_friction", raw_friction)
        self.register_buffer("schedule", cosine_schedule(n_steps))
        self.register_buffer("step_index", torch.arange(n_steps, dtype=torch.float32))
        self.matmul_dtype = torch.float32
        """Compute dtype of the score net's hidden layers for passes of at least
        ``SCORE_NET_BF16_MIN_ROWS`` rows (``nets/precision.py``); the chain's state, its costs and the
        score net's output stay float32 either way."""

    # ----------------------------------------------------------------------------------------------
    def step_sizes(self) -> torch.Tensor:
        """eta (N, d): per-step, per-dimension step size delta_n / g."""
        delta = F.softplus(self.raw_dt) * self.schedule  # (N,)
        return delta[:, None] / F.softplus(self.raw_friction)[None, :]

    def prior_log_prob(self, x0: torch.Tensor) -> torch.Tensor:
        """log p_0(x_0) summed over dimensions: (..., d) -> (...)."""
        var = self.prior_std**2
        return -0.5 * (x0.square().sum(-1) / var) - 0.5 * x0.shape[-1] * (_LOG_2PI + math.log(var))

    def _kernel_coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        eta = self.step_sizes()
        decay = 1.0 - eta / self.prior_std**2  # prior drift x + eta * grad log p_0(x) = decay * x
        return eta, decay, torch.sqrt(2.0 * eta)

    def acting_constants(self) -> acting.ActingConstants:
        """The chain's observation-free quantities for acting (``nets/acting.py``), without gradient."""
        with torch.no_grad():
            return acting.ActingConstants(*self._kernel_coefficients(), self.score_net.time_part(self.step_index))

    def acting_constant_sources(self) -> list[torch.Tensor]:
        """The tensors :meth:`acting_constants` is computed from (besides ``prior_std``)."""
        net = self.score_net
        return [self.raw_dt, self.raw_friction, self.schedule, self.step_index, net.frequencies, net.phase,
                *net.time_mlp.parameters(), net.first.weight, net.first.bias]

    # ----------------------------------------------------------------------------------------------
    def sample(
        self,
        obs: torch.Tensor,
        generator: torch.Generator | None = None,
        noise_free: bool = False,
    ) -> ChainSample:
        """Run the denoising chain for observations ``obs`` (B, O).

        Gradients flow pathwise through every step into the score net, the step size and the friction;
        only the prior sample x_0 has none. ``noise_free`` starts at the prior mean and drops every
        injected noise term (a deterministic "mean path"; its costs are not an entropy estimate).
        """
        eta, decay, noise_std = self._kernel_coefficients()
        x0, eps = self._initial_noise(obs, generator, noise_free)
        path = self._denoise(obs, x0, noise_std[:, None, :] * eps, eta, decay, keep_path=True)
        x = path[-1]
        states = torch.stack(path)  # (N+1, B, d)
        # log b(x_n | x_{n+1}) - log f(x_{n+1} | x_n) per step. Both kernels have variance 2 eta_n, so their
        # normalisers cancel exactly; the denoising residual at its own sample is eps_n by construction.
        noising_residual = (states[:-1] - states[1:] * decay[:, None, :]) / noise_std[:, None, :]
        log_ratio = 0.5 * (eps.square() - noising_residual.square()).sum(dim=(0, 2))
        running_cost = -log_ratio - tanh_log_abs_det(x)
        terminal_cost = self.prior_log_prob(x0).detach()
        return ChainSample(torch.tanh(x), x, running_cost, terminal_cost)

    def sample_action(
        self, obs: torch.Tensor, generator: torch.Generator | None = None, noise_free: bool = False,
        constants: acting.ActingConstants | None = None,
    ) -> torch.Tensor:
        """The action tanh(x_N) (B, d) of :meth:`sample`, without the costs: the same noise draws and
        chain, so the same action for the same generator state; for acting, where only it is needed.
        ``constants``: this policy's :meth:`acting_constants`, kept by the caller (no-gradient calls
        only): the chain then runs as ``nets/acting.py`` describes."""
        x0, eps = self._initial_noise(obs, generator, noise_free)
        return self._acting_chain(obs, x0, eps, constants, plain=False)

    def action_from_noise(
        self, obs: torch.Tensor, noise: torch.Tensor, constants: acting.ActingConstants | None = None
    ) -> torch.Tensor:
        """The action tanh(x_N) (B, d) for explicit standard normal draws ``noise`` (N + 1, B, d): row 0
        gives x_0 = prior_std * noise[0], rows 1..N the steps' injected noise (zeros: the noise-free
        chain). The same chain as :meth:`sample_action`, always in float32 and without fused kernels,
        so it traces into an exported graph (ONNX, TorchScript) and replays a deployment exactly.
        ``constants``: as for :meth:`sample_action`."""
        return self._acting_chain(obs, self.prior_std * noise[0], noise[1:], constants, plain=True)

    def _acting_chain(
        self, obs: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, constants: acting.ActingConstants | None, *, plain: bool
    ) -> torch.Tensor:
        """tanh(x_N) from x_0 and the steps' standard normal draws ``eps`` (N, B, d), no path kept."""
        if constants is None:
            eta, decay, noise_std = self._kernel_coefficients()
            time_part = None
        else:
            if torch.is_grad_enabled():
                raise RuntimeError("cached acting constants carry no gradient; use them under torch.no_grad()")
            eta, decay, noise_std, time_part = constants
        noise = noise_std[:, None, :] * eps
        rows = obs.shape[0]
        if not (plain or score_net_dtype(self.matmul_dtype, rows, obs.device) == torch.float32):
            time_part = None  # a bfloat16 chain computes it under its autocast, as it does without a cache
        elif constants is not None and (plain or rows < SCORE_NET_BF16_MIN_ROWS):  # no fused kernels either
            return torch.tanh(acting.final_state(self, constants, obs, x0, noise))
        x = self._denoise(obs, x0, noise, eta, decay, keep_path=False, plain=plain, time_part=time_part)[-1]
        return torch.tanh(x)

    def _initial_noise(
        self, obs: torch.Tensor, generator: torch.Generator | None, noise_free: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x_0 (B, d) and the per-step standard normal draws eps (N, B, d), in that order from ``generator``."""
        batch, d = obs.shape[0], self.act_dim
        shape = (self.n_steps, batch, d)
        if noise_free:
            return obs.new_zeros(batch, d), obs.new_zeros(shape)
        x0 = self.prior_std * torch.randn(batch, d, generator=generator, device=obs.device, dtype=obs.dtype)
        return x0, torch.randn(shape, generator=generator, device=obs.device, dtype=obs.dtype)

    def _denoise(
        self, obs: torch.Tensor, x: torch.Tensor, noise: torch.Tensor, eta: torch.Tensor, decay: torch.Tensor, *,
        keep_path: bool, plain: bool = False, time_part: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The N denoising steps from x_0 = ``x`` with injected ``noise`` (N, B, d): [x_0, ..., x_N], or
        [x_N] alone when ``keep_path`` is false. ``plain``: float32 without fused kernels and without
        branching on the batch size (for export). ``time_part``: the score net's, if already computed."""
        path = [x]
        if plain:
            dtype, fused = torch.float32, None
        else:
            batch = obs.shape[0]
            dtype = score_net_dtype(self.matmul_dtype, batch, obs.device)
            # Fused hidden layers pay from a few hundred rows on (at batch 1 they are slower).
            fused = self.score_net.fused_hidden_layers(dtype) if batch >= SCORE_NET_BF16_MIN_ROWS else None
        with low_precision(obs.device, dtype):
            # (N, B, H) once per chain; unbind (not cond[n]) so backward stacks the N slices once instead
            # of scattering each into a fresh zero tensor of the full size.
            cond = self.score_net.prepare(obs, self.step_index, time_part).unbind(0)
            for n in range(self.n_steps):
                u = self.score_net.control(x, cond[n], fused)
                x = torch.addcmul(torch.addcmul(noise[n], u, eta[n]), x, decay[n])
                if keep_path:
                    path.append(x)
        return path if keep_path else [x]

    def _stratified_steps(self, k: int, rows: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
        """(k, rows) step indices: for each row, one drawn uniformly from each of k equal strata of
        [0, N) (floor((j + u) N / k), u ~ U[0, 1)), so every step is scored with probability k / N."""
        offsets = torch.rand((k, rows), generator=generator, device=device)  # float32: MPS has no float64
        strata = torch.arange(k, device=device, dtype=offsets.dtype)[:, None]
        return ((strata + offsets) * (self.n_steps / k)).floor().long().clamp_(max=self.n_steps - 1)

    def path_log_likelihood_bound(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        generator: torch.Generator | None = None,
        n_paths: int = 1,
        max_abs_action: float = 0.9999,
        scored_steps: int | None = None,
    ) -> torch.Tensor:
        """A lower bound on log pi(action | obs) for given (e.g. logged) actions: (B, O), (B, d) -> (B,).

        x_N = atanh(clip(a)); the fixed noising chain runs from x_N down to x_0; the path is scored under
        the prior and the learned denoising kernels, minus the noising path's own log-density, minus the
        tanh log-det (docs/algorithm.md derives it: Jensen on log pi_x(x_N) = log E_b[p_0 prod f / prod b]).
        Averaged over ``n_paths`` independent noising paths (a lower-variance estimate of the same bound).
        ``scored_steps`` = K < N scores K of each path's N kernels, one drawn uniformly from each of K
        equal strata of the steps, and scales their sum by N / K: an unbiased estimate of the same bound
        (and of its gradient) for K / N of the score-net passes, as diffusion training draws one noise
        level per sample (docs/algorithm.md section 5). None or >= N scores every kernel.
        Differentiable in the score net (through every scored kernel mean), the step size and the friction.
        """
        batch, d = action.shape
        eta, decay, noise_std = self._kernel_coefficients()
        x_final = torch.atanh(action.clamp(-max_abs_action, max_abs_action))
        if n_paths > 1:
            obs = obs.repeat(n_paths, 1)
            x_final = x_final.repeat(n_paths, 1)
        rows = x_final.shape[0]
        xi = torch.randn((self.n_steps, rows, d), generator=generator, device=action.device, dtype=action.dtype)
        noise = noise_std[:, None, :] * xi
        states: list[torch.Tensor] = [x_final]
        for n in reversed(range(self.n_steps)):  # noising: x_n = decay_n * x_{n+1} + sqrt(2 eta_n) xi_n
            states.append(torch.addcmul(noise[n], states[-1], decay[n]))
        path = torch.stack(states[::-1])  # (N+1, rows, d), path[n] = x_n
        x_from, x_to = path[:-1], path[1:]
        eta, decay, noise_std = eta[:, None, :], decay[:, None, :], noise_std[:, None, :]  # (N, 1, d)
        time_part = None
        kernels = self.n_steps if scored_steps is None else min(scored_steps, self.n_steps)
        if kernels < self.n_steps:
            step = self._stratified_steps(kernels, rows, generator, action.device)  # (K, rows)
            by_row = step[..., None].expand(-1, -1, d)
            x_from, x_to, xi = x_from.gather(0, by_row), x_to.gather(0, by_row), xi.gather(0, by_row)
            eta, decay, noise_std = eta[step, 0], decay[step, 0], noise_std[step, 0]  # (K, rows, d)
            time_part = self.score_net.time_part(self.step_index)[step]  # (K, rows, H)
        with low_precision(obs.device, score_net_dtype(self.matmul_dtype, kernels * rows, obs.device)):
            cond = self.score_net.prepare(obs, self.step_index, time_part)  # (K, rows, H)
            u = self.score_net.control(x_from, cond)  # all scored kernels at once: the path is fixed
        denoising_residual = (x_to - x_from * decay - eta * u) / noise_std
        # log f(x_{n+1}|x_n) - log b(x_n|x_{n+1}); equal variances again cancel the normalisers.
        log_ratio = 0.5 * (xi.square() - denoising_residual.square()).sum(dim=(0, 2))
        if kernels < self.n_steps:
            log_ratio = log_ratio * (self.n_steps / kernels)
        bound = self.prior_log_prob(path[0]) + log_ratio - tanh_log_abs_det(x_final)
        return bound.view(n_paths, batch).mean(0)
