"""How extra loss terms plug into :meth:`DIMEAgent.update` (composition, not subclassing).

A regulariser is any object with a mutable ``weight`` and a call that receives a read-only context and
returns ``(penalty, metrics)``; the agent adds ``penalty`` to the loss it is about to minimise. The penalty
must already include ``weight`` (the regulariser owns its scaling); the agent skips the call entirely
while ``weight == 0``. Trainers switch weights at the offline -> online boundary by assigning
``agent.critic_regularizer.weight`` (or replace the object, or set it to ``None``).

Observations in the contexts are already normalised with the agent's observation normaliser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from dime_offline.nets.critic import DistributionalCritic
from dime_offline.nets.diffusion import ChainSample, DiffusionPolicy
from dime_offline.types import Batch


@dataclass(frozen=True)
class CriticStepContext:
    """What a critic regulariser sees, after the joint CrossQ pass and before the critic's optimiser step."""

    critic: DistributionalCritic
    """The critics, in training mode (a forward pass here updates batch-renorm statistics)."""
    obs: torch.Tensor
    """(B, O) normalised observations of the batch."""
    batch: Batch
    """The raw batch (actions, rewards, flags, Monte-Carlo returns, offline marks)."""
    logits: torch.Tensor
    """(E, B, K) critic logits at the batch's (obs, action), with gradient."""
    sample_actions: Callable[[torch.Tensor], ChainSample]
    """Draws policy actions for normalised observations (rows, O), without gradient."""
    extra_logits: torch.Tensor | None = None
    """(E, P, K) logits of the rows the regulariser's ``extra_rows`` proposed, with gradient, from the
    same training-mode pass as ``logits`` (so both share one batch normalisation); None without."""
    soft_step_cost: float = 0.0
    """alpha times the batch mean of the policy's log-probability surrogate at the next states: what
    the soft value subtracts per discounted step after the first (0 when unknown)."""


@dataclass(frozen=True)
class ActorStepContext:
    """What an actor regulariser sees, before the actor's optimiser step."""

    policy: DiffusionPolicy
    """The policy being trained (e.g. ``policy.path_log_likelihood_bound(obs, batch.action)``)."""
    critic: DistributionalCritic
    """The critics, in eval mode with frozen parameters."""
    obs: torch.Tensor
    """(B, O) normalised observations of the batch."""
    batch: Batch
    """The raw batch."""
    sample: ChainSample
    """The policy's sample at ``obs`` used by the actor loss, with gradient."""
    q: torch.Tensor
    """(B,) mean expected Q over critics at the sampled actions, with gradient."""


class CriticRegularizer(Protocol):
    """An extra critic loss term (e.g. a conservative penalty).

    It may also define ``extra_rows(obs, batch, policy_actions, next_actions) -> (obs_rows (P, O),
    action_rows (P, A))``: the agent then appends these rows to its joint training-mode pass and hands
    their logits over as ``CriticStepContext.extra_logits``. ``policy_actions`` are policy samples
    (without gradient) at the states its optional ``policy_states(obs) -> (S, O)`` names (an empty
    (0, A) tensor without it), drawn in the same chain pass as ``next_actions``, the (B, A) next-state
    actions of the target. Values compared with the batch's must come from that pass: a
    separate eval-mode pass lets the critic move eval-mode values through feature-mean shifts that the
    training-mode batch statistics cancel (see dime_offline/regularizers/conservative.py).
    """

    weight: float

    def __call__(self, ctx: CriticStepContext) -> tuple[torch.Tensor, dict[str, float]]: ...


class ActorRegularizer(Protocol):
    """An extra actor loss term (e.g. behaviour cloning through the path likelihood bound)."""

    weight: float

    def __call__(self, ctx: ActorStepContext) -> tuple[torch.Tensor, dict[str, float]]: ...
