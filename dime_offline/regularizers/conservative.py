"""A conservative critic penalty for DIME's distributional critics: CQL's gap with Cal-QL's calibration.

For each critic k and state s of the batch (Kumar et al. 2020, CQL; Nakamoto et al. 2023, Cal-QL)::

    gap_k(s) = tau * log mean_j exp(Q~_k(s, a_j) / tau) - Q_k(s, a_data)
    penalty  = weight * sum_k mean_s gap_k(s) / (v_max - v_min)

* Q_k(s, a) = sum_i p_ki(s, a) z_i is the critic's *expected* value: the penalty acts on the
  categorical probabilities through their mean, so pushing a value down moves probability mass
  toward lower atoms. It can never leave [v_min, v_max]: the C51 support itself bounds how far
  any value can be pushed either way.
* The candidates a_j are ``n_actions`` uniform actions in [-1, 1]^d and ``n_actions`` samples of
  the diffusion policy at s. With ``reuse_next_actions`` one of the policy samples is the agent's
  next-state action a' ~ pi(.|s') of the same row, scored at s (CQL's reference implementation
  also scores next-state policy actions at s): it costs no chain of its own. ``tau * log mean exp(. / tau)`` is a soft maximum over them (the hard
  maximum as tau -> 0, the mean as tau -> infinity), so the penalty pushes down whichever candidate
  currently looks best, which is where an actor that maximises Q would go.
* **No density correction.** CQL(H)'s importance-sampled form subtracts log pi(a_j|s) (and the
  uniform log-density) inside the log-sum-exp. The diffusion policy has no tractable density: the
  chain's R + T is a one-sample estimate whose mean is only an *upper* bound on log pi, and the path
  bound is a *lower* bound with a gap that grows with the chain's mismatch. Either would weigh the
  policy samples by a biased, noisy factor exp(-log pi); with a concentrated policy the uniform
  samples would then dominate and the samples the actor actually proposes would barely be penalised.
  The uncorrected soft maximum needs no density and keeps the pressure on those samples
  (docs/algorithm.md section 8.1).
* **Calibration (Cal-QL)**, when ``lower_bound`` is on: the *policy* candidates' values are raised
  to at least a floor, Q~ = max(Q, floor), so the penalty never pushes the learned policy's value
  below the behaviour policy's. Uniform candidates are never raised. Rows without a return (online
  rows of a still running episode: NaN) are left uncalibrated. The floor is the *soft* return of
  the logged rewards: DIME's values include the entropy term, -alpha E[log pi] at every step after
  the first, so the floor is ``mc_return - soft_step_cost * mc_horizon`` with the batch's current
  alpha E[log pi] (the agent's ``soft_step_cost``) and the row's discounted horizon (infinite after a
  truncation, as the critic bootstraps through it). Counting rewards only put the floor off by that
  term, which at the authors' entropy target is about -16.5 x reward std x |A| (docs/algorithm.md
  section 8.1). How truncated episodes' returns end is ``ReplayConfig.truncation``.
* **Units and stability.** The gap is divided by the support's width v_max - v_min, so ``weight``
  keeps its meaning when the support changes with the domain, and ``weight < 1`` is always stable:
  at a data action the cross-entropy's gradient on logit i is p_i - m_i and the penalty's is
  -(weight / width) p_i (z_i - Q), so the stationary distribution is
  p_i = m_i / (1 - weight (z_i - Q) / width), which is finite and zero wherever the target m is
  zero exactly when weight < 1 (|z_i - Q| <= width). With a larger weight (or the same weight in
  units of the atom spacing) atoms far above Q gain mass without bound under Adam and the "pushed
  up" data values run to v_max. ``temperature`` is in atoms (the critic's resolution).
* **Batch renorm: one pass.** The candidates join the agent's joint training-mode CrossQ pass
  (:meth:`ConservativePenalty.extra_rows`), so data, next-state and candidate rows share one batch
  normalisation and the CE and the penalty act on the same probabilities (which the stability
  argument needs). Evaluating the candidates (or the data) in a separate eval-mode pass fails: a
  shift of a feature's mean before a batch-renorm layer changes the eval-mode values but is
  cancelled by the training-mode batch statistics, so the penalty "moved" the eval-mode values
  for free while the cross-entropy fit the training-mode ones. Measured on a bandit: eval-mode data
  values ran to 44 while the training-mode ones stayed near 2 (and, with training-mode data against
  eval-mode candidates, the opposite split); with one pass both agree within 0.3 (docs/algorithm.md
  section 8.1). The candidates do enter the batch-renorm statistics, as CrossQ's next-state policy
  actions already do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from dime_offline.agent.regularization import CriticStepContext
from dime_offline.regularizers.rng import SeededGenerator
from dime_offline.types import Batch

METRIC_PREFIX = "conservative/"


@dataclass(frozen=True)
class CandidateValues:
    """Expected values of one batch for the gap (E critics, B states, M candidates per kind)."""

    data: torch.Tensor
    """(E, B) Q at the data actions."""
    uniform: torch.Tensor
    """(E, M, B) Q at uniform actions."""
    policy: torch.Tensor
    """(E, M, B) Q at policy samples."""


def soft_return_floor(
    mc_return: torch.Tensor, mc_horizon: torch.Tensor | None, soft_step_cost: float
) -> torch.Tensor:
    """The calibration floor in the units of a soft value: ``mc_return - soft_step_cost * mc_horizon``.

    ``mc_horizon`` None (a batch without horizons) or a zero cost leaves the return as it is; NaN
    returns stay NaN.
    """
    if mc_horizon is None or soft_step_cost == 0.0:
        return mc_return
    return mc_return - soft_step_cost * mc_horizon


def conservative_gap(
    values: CandidateValues,
    floor: torch.Tensor,
    *,
    temperature: float,
    lower_bound: bool,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The CQL gap with optional Cal-QL calibration, per critic and state (pure function).

    gap = temperature * log mean_j exp(Q~_j / temperature) - Q_data over the 2M candidates (uniform,
    then policy), where Q~ raises the policy candidates to at least ``floor`` when
    ``lower_bound`` is on (rows whose floor is NaN are not raised). All quantities share one unit.

    Args:
        values: Q at the data actions and at the candidates.
        floor: (B,) calibration floor of each state (:func:`soft_return_floor`); NaN where unknown.
        temperature: tau of the soft maximum (> 0), in the values' unit.
        lower_bound: Cal-QL calibration of the policy candidates.

    Returns:
        ``(gap, metrics)``: gap (E, B) with gradient; metrics are batch means (``calibrated_fraction``
        counts raised policy values, ``rows_with_return`` the rows with a finite return).
    """
    policy = values.policy
    has_return = torch.isfinite(floor)  # (B,)
    if lower_bound:
        policy = torch.maximum(policy, torch.where(has_return, floor, torch.full_like(floor, -math.inf)))
    candidates = torch.cat([values.uniform, policy], dim=1)  # (E, 2M, B)
    log_mean_exp = torch.logsumexp(candidates / temperature, dim=1) - math.log(candidates.shape[1])
    soft_max = temperature * log_mean_exp
    gap = soft_max - values.data
    with torch.no_grad():
        metrics = {
            "gap": float(gap.mean()),
            "soft_max_q": float(soft_max.mean()),
            "q_data": float(values.data.mean()),
            "q_uniform": float(values.uniform.mean()),
            "q_policy": float(values.policy.mean()),
            "q_policy_calibrated": float(policy.mean()),
            "calibrated_fraction": float((policy > values.policy).float().mean()),
            "rows_with_return": float(has_return.float().mean()),
            "floor": float(floor[has_return].mean()) if bool(has_return.any()) else math.nan,
            "q_data_minus_floor": float((values.data.mean(0) - floor)[has_return].mean()) if bool(has_return.any()) else math.nan,
        }
    return gap, metrics


class ConservativePenalty:
    """The conservative critic regulariser (a :class:`~dime_offline.agent.regularization.CriticRegularizer`).

    Args:
        weight: multiplies the gap in units of the support width; stable below 1 (module docstring);
            0 switches the term off (the agent then skips it).
        n_actions: M, uniform actions and policy samples per state (each).
        reuse_next_actions: one of the M policy samples per state is the agent's next-state action
            (drawn for the target anyway), so the agent runs chains for M - 1 samples per state.
        temperature: tau of the soft maximum, in atoms.
        lower_bound: Cal-QL calibration of the policy candidates by the Monte-Carlo return-to-go.
        seed: seeds the uniform candidates (the policy samples use the agent's update noise).

    ``weight`` and ``lower_bound`` are public and may be changed between updates (the offline ->
    online boundary does so).
    """

    KIND = "conservative"
    """The ``type`` of its description (:meth:`to_dict`)."""

    def __init__(
        self, weight: float, *, n_actions: int = 2, temperature: float = 1.0, lower_bound: bool = True, seed: int = 0,
        reuse_next_actions: bool = False,
    ) -> None:
        if n_actions < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.weight = weight
        self.n_actions = n_actions
        self.temperature = temperature
        self.lower_bound = lower_bound
        self.seed = seed
        self.reuse_next_actions = reuse_next_actions
        self.generator = SeededGenerator(seed)
        """Draws the uniform candidates (its state travels with a run's checkpoint for a resume)."""

    def to_dict(self) -> dict[str, Any]:
        """The settings, JSON-ready and tagged with :attr:`KIND` (a checkpoint's description)."""
        return {
            "type": self.KIND,
            "weight": float(self.weight),
            "n_actions": self.n_actions,
            "temperature": self.temperature,
            "lower_bound": bool(self.lower_bound),
            "seed": self.seed,
            "reuse_next_actions": self.reuse_next_actions,
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> ConservativePenalty:
        """Inverse of :meth:`to_dict` (a fresh generator); KeyError/TypeError/ValueError when malformed."""
        return cls(
            float(spec["weight"]), n_actions=int(spec["n_actions"]), temperature=float(spec["temperature"]),
            lower_bound=bool(spec["lower_bound"]), seed=int(spec["seed"]),
            reuse_next_actions=bool(spec.get("reuse_next_actions", False)),  # absent before the option existed
        )

    def _uniform(self, rows: int, act_dim: int, like: torch.Tensor) -> torch.Tensor:
        u = torch.rand((rows, act_dim), generator=self.generator.on(like.device), device=like.device, dtype=like.dtype)
        return 2.0 * u - 1.0

    def policy_states(self, obs: torch.Tensor) -> torch.Tensor:
        """The states the agent samples policy candidates at, in its next-state chain: (S B, O), state b
        at rows j B + b; S = M, or M - 1 when the next-state actions are reused."""
        return obs.repeat(self.n_actions - int(self.reuse_next_actions), 1)

    def extra_rows(
        self, obs: torch.Tensor, batch: Batch, policy_actions: torch.Tensor, next_actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The candidates the agent adds to its joint pass: (2 M B, O) states and (2 M B, d) actions.

        ``policy_actions`` (S B, d) are the agent's samples at :meth:`policy_states`, ``next_actions``
        (B, d) its next-state actions (row b drawn at the next state of row b). Rows [0, M B) hold
        uniform actions, rows [M B, 2 M B) the policy samples (the next-state actions first when
        reused); row j B + b of each half belongs to state b.
        """
        batch_size, act_dim = batch.action.shape
        uniform = self._uniform(self.n_actions * batch_size, act_dim, batch.action)
        if self.reuse_next_actions:
            policy_actions = torch.cat([next_actions, policy_actions])
        return obs.repeat(2 * self.n_actions, 1), torch.cat([uniform, policy_actions])

    def candidate_values(self, ctx: CriticStepContext) -> CandidateValues:
        """Expected values at the data actions and at the candidates, all from the joint pass."""
        if ctx.extra_logits is None:
            raise ValueError("ConservativePenalty needs the candidate rows in the joint pass (CriticStepContext.extra_logits)")
        support = ctx.critic.support
        batch_size = ctx.logits.shape[1]
        q = ctx.extra_logits.softmax(-1) @ support  # (E, 2 M B)
        q_uniform, q_policy = q.reshape(q.shape[0], 2, self.n_actions, batch_size).unbind(1)
        return CandidateValues(data=ctx.logits.softmax(-1) @ support, uniform=q_uniform, policy=q_policy)

    def __call__(self, ctx: CriticStepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """(weight * sum_k mean_s gap_k(s) / width, metrics); every sub-term is logged under ``conservative/``."""
        support = ctx.critic.support
        atom, width = float(support[1] - support[0]), float(support[-1] - support[0])
        floor = soft_return_floor(ctx.batch.mc_return, ctx.batch.mc_horizon, ctx.soft_step_cost)
        gap, terms = conservative_gap(
            self.candidate_values(ctx), floor, temperature=self.temperature * atom, lower_bound=self.lower_bound
        )
        penalty = self.weight / width * gap.mean(-1).sum()
        metrics = {METRIC_PREFIX + k: v for k, v in terms.items()}
        metrics[METRIC_PREFIX + "penalty"] = float(penalty.detach())
        metrics[METRIC_PREFIX + "weight"] = float(self.weight)
        metrics[METRIC_PREFIX + "lower_bound"] = float(self.lower_bound)
        return penalty, metrics
