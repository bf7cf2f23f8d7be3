"""DIME's losses as pure functions. Each returns ``(loss, metrics)`` except the projection and target
builders, which return distributions. Shapes: E critics, B batch rows, K atoms.

Signs (docs/algorithm.md, section 2): the policy's "log pi" is the surrogate R + T (running plus terminal
cost), so the soft value subtracts alpha (R' + T'), the actor minimises alpha (R + T) - Q, and the
temperature moves alpha against an entropy estimate and target.
"""

from __future__ import annotations

import torch

# The authors' log(p + 1e-15) guard in both the cross-entropy and the critic-entropy term.
_LOG_EPS = 1e-15


def c51_projection(probs: torch.Tensor, shifted_atoms: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Project categorical mass onto a fixed support by linear interpolation.

    Args:
        probs: (..., K) mass placed on the atoms ``shifted_atoms``.
        shifted_atoms: (..., K) locations of that mass (broadcastable to ``probs``); clipped to
            [v_min, v_max] here.
        support: (K,) evenly spaced target atoms z_0 < ... < z_{K-1}.

    Returns:
        (..., K) projected distribution: each location's mass is split between its two neighbouring atoms
        in proportion to proximity; a location exactly on an atom gives that atom all of its mass (the
        usual l == u fix: move l down, or u up at the lowest atom).
    """
    n_atoms = support.shape[0]
    v_min, v_max = support[0], support[-1]
    delta = (v_max - v_min) / (n_atoms - 1)
    shifted_atoms = shifted_atoms.expand_as(probs)
    position = ((shifted_atoms.clamp(v_min, v_max) - v_min) / delta).clamp(0, n_atoms - 1)
    lower = position.floor().long()
    upper = position.ceil().long()
    on_atom = lower == upper
    lower = torch.where(on_atom & (upper > 0), lower - 1, lower)
    upper = torch.where(on_atom & (lower == upper), upper + 1, upper)
    projected = torch.zeros_like(probs)
    projected.scatter_add_(-1, lower, probs * (upper.to(probs.dtype) - position))
    projected.scatter_add_(-1, upper, probs * (position - lower.to(probs.dtype)))
    return projected


def soft_distributional_target(
    next_probs: torch.Tensor,
    reward: torch.Tensor,
    terminated: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor | float,
    gamma: float,
    support: torch.Tensor,
) -> torch.Tensor:
    """The C51 soft Bellman target: the mean over critics of their projected shifted distributions.

    z_hat_i = clip(r + (1 - terminated) * gamma * (z_i - alpha * (R' + T')), v_min, v_max), projected onto the
    support per critic, then averaged over critics (mean, not min).

    Args:
        next_probs: (E, B, K) critics' distributions at (s', a'), a' from the current policy.
        reward: (B,). terminated: (B,) 1.0 at true terminal states (never time-limit truncations).
        next_log_prob: (B,) R' + T' of the sampled a'. alpha: temperature.
    Returns:
        (B, K) target distribution, without gradient.
    """
    with torch.no_grad():
        discount = (1.0 - terminated) * gamma
        shifted = reward[:, None] + discount[:, None] * (support[None, :] - alpha * next_log_prob[:, None])
        return c51_projection(next_probs, shifted, support).mean(0)


def critic_loss(
    logits: torch.Tensor, target: torch.Tensor, entropy_coef: float, sample_weight: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy to the target plus the critic-entropy regulariser, summed over critics.

    loss = sum_k mean_b [ -sum_i m_i log(p_ki + 1e-15) + c * sum_i p_ki log(p_ki + 1e-15) ];
    the second term rewards a *higher* entropy of each critic's categorical output.

    Args:
        logits: (E, B, K) critics' logits at (s, a). target: (B, K), or (E, B, K) for one target per
        critic. entropy_coef: c (authors: 0.005). sample_weight: optional (E, B) weights of the
        cross-entropy terms per critic and row, e.g. bootstrap resampling counts (off-policy evaluation).
    """
    probs = logits.softmax(-1)
    log_probs = torch.log(probs + _LOG_EPS)
    row_cross_entropy = -(target * log_probs).sum(-1)  # (E, B)
    if sample_weight is not None:
        row_cross_entropy = row_cross_entropy * sample_weight
    cross_entropy = row_cross_entropy.mean(-1)  # (E,)
    neg_entropy = (probs * log_probs).sum(-1).mean(-1)  # (E,)
    loss = (cross_entropy + entropy_coef * neg_entropy).sum()
    return loss, {
        "critic/loss": loss.item(),
        "critic/cross_entropy": cross_entropy.mean().item(),
        "critic/output_entropy": -neg_entropy.mean().item(),
    }


def actor_loss(
    alpha: torch.Tensor | float, log_prob_surrogate: torch.Tensor, q: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """L = mean_b [ alpha * (R + T) - Q_bar(s, a) ] with pathwise gradients through the chain.

    Args:
        alpha: temperature (no gradient). log_prob_surrogate: (B,) R + T. q: (B,) mean over critics of
        their expected values at the sampled actions.
    """
    loss = (alpha * log_prob_surrogate - q).mean()
    return loss, {
        "actor/loss": loss.item(),
        "actor/q": q.mean().item(),
        "actor/entropy_bound": -log_prob_surrogate.mean().item(),
    }


def temperature_loss(
    log_alpha: torch.Tensor, entropy_estimate: torch.Tensor, target_entropy: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """J(beta) = exp(beta) * (mean entropy estimate - target): alpha rises while the estimate is below target.

    With the authors' statistic, entropy_estimate = -R and target = -4 |A|, i.e. J = -alpha (R_bar - 4|A|).

    Args:
        log_alpha: scalar beta with gradient. entropy_estimate: (B,) (detached here).
        target_entropy: in the same units as the estimate.
    """
    estimate = entropy_estimate.detach().mean()
    loss = log_alpha.exp() * (estimate - target_entropy)
    return loss, {"alpha/loss": loss.item(), "alpha/entropy_estimate": estimate.item()}
