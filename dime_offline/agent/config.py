"""DIME hyperparameters: one frozen dataclass, one docstring per field, and named presets.

Defaults are the authors' values (Celik et al. 2025, official code commit 9f6a044; docs/algorithm.md lists
the sources), with the gym-MuJoCo support range +-1600. ``DIMEConfig.preset("cpu")`` keeps the algorithm
and shrinks the networks for 2-core machines.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from dime_offline.errors import ConfigError

DeterministicMode = Literal["noise_free", "best_of_k"]
"""How deterministic actions are chosen (``DIMEConfig.deterministic_act``)."""
DETERMINISTIC_MODES: tuple[str, ...] = ("noise_free", "best_of_k")


@dataclass(frozen=True)
class DIMEConfig:
    """Every hyperparameter of the DIME agent and of its online training cadence."""

    # --- RL and training cadence -------------------------------------------------------------------
    gamma: float = 0.99
    """Discount factor."""
    batch_size: int = 256
    """Transitions per critic update (the critic's joint CrossQ pass sees twice as many rows)."""
    utd: int = 2
    """Update-to-data ratio: critic updates per environment step (used by the trainers)."""
    policy_delay: int = 3
    """The actor and temperature are updated after every ``policy_delay``-th critic update (3, 6, 9, ...)."""
    learning_starts: int = 5000
    """Uniform-random environment steps before the first update (online training from scratch)."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions (used by the trainers)."""

    # --- critic ------------------------------------------------------------------------------------
    critic_hidden: tuple[int, ...] = (2048, 2048)
    """Hidden widths of each critic (ReLU, batch renorm after each)."""
    n_critics: int = 2
    """Number of independent critics; the actor and the target use their mean."""
    actor_q_reduction: Literal["mean", "min"] = "mean"
    """How the actor combines the critics' expected values: 'mean' (authors) or 'min' (pessimistic,
    an offline option; the target keeps the mean of the projected distributions either way)."""
    n_atoms: int = 101
    """Atoms of the categorical (C51) value distribution."""
    v_min: float = -1600.0
    """Lowest atom. Authors: -1600 for gym MuJoCo, -200 for DMC. Must cover returns incl. the entropy bonus."""
    v_max: float = 1600.0
    """Highest atom. Authors: +1600 for gym MuJoCo, +200 for DMC."""
    critic_entropy_coef: float = 0.005
    """Weight of the critic-entropy regulariser +c * sum p log p (rewards a higher output entropy)."""
    brn_momentum: float = 0.01
    """Batch-renorm running-statistics momentum, PyTorch convention (flax 0.99)."""
    brn_warmup_steps: int = 100_000
    """Training-mode forward passes (critic updates) of plain batch norm before renormalisation starts."""
    brn_eps: float = 1e-3
    """Batch-renorm variance epsilon."""
    brn_r_max: float = 3.0
    """Batch-renorm clip for the scale correction r."""
    brn_d_max: float = 5.0
    """Batch-renorm clip for the shift correction d."""

    # --- optimisers --------------------------------------------------------------------------------
    critic_lr: float = 3e-4
    """Critic Adam learning rate."""
    actor_lr: float = 3e-4
    """Actor Adam learning rate (score net, step size and friction)."""
    alpha_lr: float = 1e-3
    """Temperature Adam learning rate (Adam with default betas 0.9, 0.999)."""
    adam_beta1: float = 0.5
    """Adam beta1 for the actor and the critic."""
    adam_beta2: float = 0.999
    """Adam beta2 for the actor and the critic."""
    actor_grad_clip: float = 1.0
    """Element-wise actor gradient clip: each entry to [-c, c] after NaNs are zeroed (not a norm clip)."""

    # --- temperature -------------------------------------------------------------------------------
    alpha_init: float = 1.0
    """Initial temperature alpha (alpha = exp(beta))."""
    alpha_mode: Literal["auto", "fixed"] = "auto"
    """'auto' tunes alpha against the entropy target; 'fixed' keeps alpha_init."""
    temperature_statistic: Literal["running_cost", "full_bound"] = "running_cost"
    """Entropy estimate the temperature loss uses: 'running_cost' = -R (authors), 'full_bound' = -(R + T)."""
    target_entropy_per_dim: float | None = None
    """Target for that estimate, per action dimension. None: -4 for 'running_cost' (authors) or the
    equivalent -(4 - 0.5 log(2 pi e prior_std^2)) = -1.665 (prior_std 2.5) for 'full_bound'."""

    # --- diffusion policy --------------------------------------------------------------------------
    diffusion_steps: int = 16
    """N, denoising steps per action."""
    prior_std: float = 2.5
    """Standard deviation of the fixed Gaussian prior N(0, prior_std^2 I)."""
    dt_init: float = 0.1
    """Initial global step-size scale softplus(rho); step n uses this times the cosine factor c(n)."""
    friction_init: float = 1.0
    """Initial per-dimension friction g (step size eta = delta / g)."""
    learn_dt: bool = True
    """Train the global step-size scale."""
    learn_friction: bool = True
    """Train the per-dimension friction."""
    score_hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden widths of the score net's main MLP (GELU)."""
    score_frequencies: int = 256
    """Fourier frequencies of the step-index features (sin and cos each)."""
    score_time_hidden: int = 256
    """Width of the time-embedding MLP."""
    score_output_clip: float = 1e4
    """The control term u_theta is clipped to +-this."""
    matmul_precision: Literal["auto", "float32", "bfloat16"] = "auto"
    """Compute dtype of the score net's and critics' hidden-layer products: 'auto' uses bfloat16
    on CPUs with native bfloat16 matrix units (AMX or AVX512-BF16), float32 elsewhere (on CUDA GPUs
    bfloat16 measured slower: the update is bound by kernel launches there). Costs, logits, the C51 terms, parameters and optimiser state
    stay float32 (``nets/precision.py``; speed and learning measurements in docs/benchmarks.md)."""
    deterministic_act: DeterministicMode = "best_of_k"
    """How ``act(obs, deterministic=True)`` picks its action, a function of the observation alone:
    'noise_free' runs the chain from the prior mean with no injected noise; 'best_of_k' runs
    ``act_candidates`` chains on fixed noise draws and takes the action the critics value most
    (the selection of IDQL and SfBC). Measurements behind the default: docs/algorithm.md section 9.
    (Checkpoints before 0.2 may hold 'stochastic'; they load as 'noise_free', so a deterministic
    request is never answered with a sample.)"""
    act_candidates: int = 16
    """K, the chains 'best_of_k' chooses among."""
    acting_average_decay: float = 0.99
    """Decay of the exponential moving average of the policy's and critics' weights (and batch-renorm
    statistics) used for deterministic acting, evaluation and deployment, updated after every
    ``update``; 0 = act with the live weights. Exploration always uses the live weights. Our
    addition; 0.99 chosen by two 3-seed fine-tuning studies (docs/algorithm.md section 9.2)."""

    def __post_init__(self) -> None:
        checks = [
            (self.deterministic_act in ("noise_free", "best_of_k"), "deterministic_act must be 'noise_free' or 'best_of_k'"),
            (self.act_candidates >= 1, "act_candidates must be >= 1"),
            (0.0 <= self.acting_average_decay < 1.0, "acting_average_decay must lie in [0, 1)"),
            (self.batch_size > 0, "batch_size must be > 0"),
            (self.utd > 0, "utd must be > 0"),
            (self.policy_delay > 0, "policy_delay must be > 0"),
            (self.n_atoms >= 2, "n_atoms must be >= 2"),
            (self.v_min < self.v_max, "v_min must be < v_max"),
            (self.diffusion_steps > 0, "diffusion_steps must be > 0"),
            (self.prior_std > 0, "prior_std must be > 0"),
            (self.dt_init > 0 and self.friction_init > 0, "dt_init and friction_init must be > 0"),
            (self.alpha_init > 0, "alpha_init must be > 0"),
            (0.0 <= self.gamma <= 1.0, "gamma must be in [0, 1]"),
            (self.n_critics >= 1, "n_critics must be >= 1"),
            (len(self.score_hidden) >= 1, "score_hidden needs at least one layer"),
            (all(w >= 1 for w in (*self.critic_hidden, *self.score_hidden)), "hidden widths must be >= 1"),
            (self.score_frequencies >= 1 and self.score_time_hidden >= 1, "score_frequencies and score_time_hidden must be >= 1"),
            (min(self.critic_lr, self.actor_lr, self.alpha_lr) > 0, "learning rates must be > 0"),
            (0.0 <= self.adam_beta1 < 1.0 and 0.0 <= self.adam_beta2 < 1.0, "adam_beta1 and adam_beta2 must lie in [0, 1)"),
            (self.actor_grad_clip > 0, "actor_grad_clip must be > 0"),
            (self.learning_starts >= 0 and self.buffer_size >= 1, "learning_starts must be >= 0 and buffer_size >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"DIMEConfig: {message}")

    def target_entropy(self, act_dim: int) -> float:
        """The temperature target (total over ``act_dim`` dimensions) for ``temperature_statistic``."""
        if self.target_entropy_per_dim is not None:
            return self.target_entropy_per_dim * act_dim
        if self.temperature_statistic == "running_cost":
            return -4.0 * act_dim
        prior_entropy_per_dim = 0.5 * math.log(2.0 * math.pi * math.e * self.prior_std**2)
        return -(4.0 - prior_entropy_per_dim) * act_dim

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DIMEConfig:
        """A named preset ('paper' or 'cpu'), optionally with field overrides."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ConfigError(f"unknown DIME preset '{name}' (known: {', '.join(sorted(PRESETS))})") from None
        try:
            return dataclasses.replace(base, **overrides)
        except TypeError as exc:
            raise ConfigError(f"DIME preset '{name}': {exc}") from None


PRESETS: dict[str, DIMEConfig] = {
    # The authors' hyperparameters with the gym-MuJoCo support range.
    "paper": DIMEConfig(),
    # Same algorithm, critics 256 wide instead of 2048 (about 11x fewer FLOPs per update); the score net
    # keeps the authors' 3 x 256. Measurements behind the choice: docs/algorithm.md, section 6.
    "cpu": DIMEConfig(critic_hidden=(256, 256)),
}
