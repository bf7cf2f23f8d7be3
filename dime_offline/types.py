"""Small shared types: the training batch and the policy protocols."""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch


class Batch(NamedTuple):
    """A minibatch of transitions as float32 tensors (B rows).

    Terminations and truncations are kept apart: a critic target bootstraps through
    ``truncated`` transitions and stops at ``terminated`` ones.
    """

    obs: torch.Tensor
    """(B, O) observations (raw units; the agent applies its own normaliser)."""
    action: torch.Tensor
    """(B, A) actions scaled to [-1, 1]."""
    reward: torch.Tensor
    """(B,) rewards."""
    next_obs: torch.Tensor
    """(B, O) successor observations."""
    terminated: torch.Tensor
    """(B,) float 1.0 where next_obs is a true terminal state."""
    truncated: torch.Tensor
    """(B,) float 1.0 where the episode was cut after this transition."""
    mc_return: torch.Tensor
    """(B,) discounted Monte-Carlo return-to-go from obs (NaN where unknown, e.g. online data)."""
    is_offline: torch.Tensor
    """(B,) float 1.0 where the row came from the offline (logged) part of the store."""
    mc_horizon: torch.Tensor | None = None
    """(B,) sum_{k>=1} gamma^k over the steps ``mc_return`` counts after obs (infinite after a
    truncation), NaN where unknown; calibration adds the soft value's entropy term over it. None: unknown."""


class Policy(Protocol):
    """Anything that maps observations to actions in [-1, 1]."""

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions (B, A) in [-1, 1] for observations (B, O) in raw units."""
        ...


@runtime_checkable
class EpisodicPolicy(Policy, Protocol):
    """A policy that keeps memory per row between calls (e.g. the CSTR twin's PI controller).

    Row ``i`` of consecutive ``act`` calls is one episode, so the memory must be cleared when
    new episodes start: rollouts that run whole episodes (``evaluation.rollout.evaluate``) call
    :meth:`reset` before the first step of every batch of episodes.
    """

    def reset(self) -> None:
        """Forget every row's memory (new episodes start with the next ``act`` call)."""
        ...
