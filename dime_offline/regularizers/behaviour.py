"""The actor's behaviour term: maximise a lower bound on log pi(a_data | s) through the diffusion chain.

DIME already scores paths under its denoising kernels. Running the fixed noising chain from a logged
action down to the prior and scoring that path under the prior and the learned kernels gives, by
Jensen's inequality, a lower bound on the policy's log-likelihood of the action
(:meth:`DiffusionPolicy.path_log_likelihood_bound`). The term::

    penalty = -weight * dz * mean_{rows from the offline data} bound(s, a_data)

is the diffusion analogue of behaviour cloning's -log pi(a_data|s). Maximising the bound trains the
denoising chain to reverse the noising chain from the data actions: the same denoising
score-matching objective diffusion behaviour-cloning policies minimise, here with DIME's own
kernels, so the policy it pulls toward is the one DIME samples.

* **Units.** The bound is in nats and the actor loss alpha (R + T) - Q in value units; ``dz`` (the
  critic support's atom spacing) converts, so ``weight`` reads "one nat of data likelihood is worth
  ``weight`` atoms of Q" and keeps its meaning when v_min/v_max change with the domain.
* **Rows.** Only rows from the offline data count (``Batch.is_offline``): online rows were produced
  by the policy itself and cloning them would only sharpen it. A batch without offline rows gives 0.
* **Advantage filter** (``advantage_filter``, off by default). Only the logged actions the critics value at
  least as highly as the policy's own sample at that state are cloned (CRR's binary filter, Wang et
  al., NeurIPS 2020, "Critic Regularized Regression", with a one-sample value estimate: the actor's
  sample, already drawn). The mean still runs over every offline row, so the term weakens as the policy
  outgrows the logged behaviour and keeps its full weight where the logs are better than the policy, to
  the extent that the critics separate one action's value from another's: on locomotion that gap is
  within their noise and about half the logged actions pass whatever their quality (docs/algorithm.md 8.2).
"""

from __future__ import annotations

from typing import Any

import torch

from dime_offline.agent.regularization import ActorStepContext
from dime_offline.regularizers.rng import SeededGenerator

METRIC_PREFIX = "behaviour/"


def behaviour_penalty(
    log_likelihood_bound: torch.Tensor, weight: float, value_unit: float, rows: int | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """-weight * value_unit * sum(bound) / rows (pure function).

    Args:
        log_likelihood_bound: (B,) lower bounds on log pi(a|s) of the data actions, with gradient.
        weight: dimensionless weight. value_unit: value units per nat (the atom spacing).
        rows: the offline rows the sum is averaged over (None: B); more than B when a filter
            dropped some, whose terms then count as 0.
    """
    rows = log_likelihood_bound.numel() if rows is None else rows
    if log_likelihood_bound.numel() == 0:
        return log_likelihood_bound.new_zeros(()), {"log_likelihood_bound": float("nan")}
    mean_bound = log_likelihood_bound.mean()
    penalty = -weight * value_unit * log_likelihood_bound.sum() / rows
    return penalty, {"log_likelihood_bound": float(mean_bound.detach())}


def advantage_kept(q_data: torch.Tensor, q_policy: torch.Tensor) -> torch.Tensor:
    """(B,) mask of the logged actions worth cloning: valued at least as highly as the policy's action."""
    return q_data >= q_policy


class BehaviourLikelihood:
    """The behaviour regulariser (an :class:`~dime_offline.agent.regularization.ActorRegularizer`).

    Args:
        weight: see the module docstring; 0 switches the term off (the agent then skips it).
        n_paths: independent noising paths averaged per data action (a lower-variance estimate of the
            same bound; each path costs one score-net pass per scored diffusion step).
        scored_steps: kernels scored per path (None: all N), an unbiased estimate of the same bound
            for that share of the score-net passes (:meth:`DiffusionPolicy.path_log_likelihood_bound`).
        seed: seeds the noising paths.
    """

    KIND = "behaviour"
    """The ``type`` of its description (:meth:`to_dict`)."""

    def __init__(
        self, weight: float, *, n_paths: int = 1, scored_steps: int | None = None, advantage_filter: bool = False, seed: int = 0
    ) -> None:
        if n_paths < 1:
            raise ValueError(f"n_paths must be >= 1, got {n_paths}")
        if scored_steps is not None and scored_steps < 1:
            raise ValueError(f"scored_steps must be >= 1 or None, got {scored_steps}")
        self.weight = weight
        self.n_paths = n_paths
        self.scored_steps = scored_steps
        self.advantage_filter = advantage_filter
        """Clone only the logged actions valued at least as highly as the policy's (module docstring)."""
        self.seed = seed
        self.generator = SeededGenerator(seed)
        """Draws the noising paths (its state travels with a run's checkpoint for a resume)."""

    def to_dict(self) -> dict[str, Any]:
        """The settings, JSON-ready and tagged with :attr:`KIND` (a checkpoint's description)."""
        return {
            "type": self.KIND, "weight": float(self.weight), "n_paths": self.n_paths, "scored_steps": self.scored_steps,
            "advantage_filter": self.advantage_filter, "seed": self.seed,
        }

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> BehaviourLikelihood:
        """Inverse of :meth:`to_dict` (a fresh generator); KeyError/TypeError/ValueError when malformed."""
        scored = spec.get("scored_steps")  # absent from checkpoints written before it existed: all steps
        return cls(
            float(spec["weight"]), n_paths=int(spec["n_paths"]), scored_steps=None if scored is None else int(scored),
            advantage_filter=bool(spec.get("advantage_filter", False)), seed=int(spec["seed"]),
        )

    def __call__(self, ctx: ActorStepContext) -> tuple[torch.Tensor, dict[str, float]]:
        """(penalty, metrics) with metrics under ``behaviour/``: the mean bound, penalty, weight, rows
        (and, filtered, the share of offline rows kept)."""
        offline = ctx.batch.is_offline > 0.5
        obs, action = ctx.obs[offline], ctx.batch.action[offline]
        rows = obs.shape[0]
        support = ctx.critic.support
        metrics: dict[str, float] = {}
        if self.advantage_filter and rows:
            with torch.no_grad():  # one pass over the logged and the sampled actions, critics averaged
                q = ctx.critic.expected_q(torch.cat([obs, obs]), torch.cat([action, ctx.sample.action[offline].detach()])).mean(0)
            kept = advantage_kept(q[:rows], q[rows:])
            obs, action = obs[kept], action[kept]
            metrics[METRIC_PREFIX + "kept_share"] = float(kept.float().mean())
        if obs.shape[0]:
            bound = ctx.policy.path_log_likelihood_bound(
                obs, action, generator=self.generator.on(ctx.obs.device), n_paths=self.n_paths, scored_steps=self.scored_steps
            )
        else:
            bound = obs.new_zeros((0,))
        penalty, terms = behaviour_penalty(bound, self.weight, float(support[1] - support[0]), rows=rows)
        metrics.update({METRIC_PREFIX + k: v for k, v in terms.items()})
        metrics[METRIC_PREFIX + "penalty"] = float(penalty.detach())
        metrics[METRIC_PREFIX + "weight"] = float(self.weight)
        metrics[METRIC_PREFIX + "offline_rows"] = float(offline.float().mean())
        return penalty, metrics
