"""Observation and reward normalisation statistics, fitted once on a dataset and saved with it.

The statistics are computed in float64 with a streaming (chunk-mergeable) algorithm, so a dataset
read record batch by record batch gives the same numbers as one read in a single piece, and large
offsets (a pressure of 1e5 Pa varying by 1 Pa) keep their precision.

Rewards are scaled, never shifted: adding a constant to every reward changes which policy is
optimal when episodes can terminate (it pays or charges the agent for staying alive).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)
RewardScaling = Literal["none", "std", "return_range"]
REWARD_SCALINGS: tuple[str, ...] = ("none", "std", "return_range")

STATS_CHUNK_ROWS = 65536
"""Rows converted to float64 at a time, which bounds the temporary memory of :meth:`RunningMoments.update`."""


class RunningMoments:
    """Count, mean and sum of squared deviations of (N, D) rows, mergeable across chunks.

    Uses the pairwise update of Chan, Golub and LeVeque (1979): each chunk's mean and squared
    deviations are computed around its own mean, then merged, so no large sum of squares is ever
    differenced.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.mean = np.zeros(dim, dtype=np.float64)
        self.m2 = np.zeros(dim, dtype=np.float64)

    def update(self, x: np.ndarray) -> None:
        """Add (N, D) (or (N,) when D == 1) rows of any float dtype."""
        x2 = x[:, None] if x.ndim == 1 else x
        for start in range(0, x2.shape[0], STATS_CHUNK_ROWS):
            self._merge_chunk(x2[start : start + STATS_CHUNK_ROWS])

    def _merge_chunk(self, chunk: np.ndarray) -> None:
        n_b = chunk.shape[0]
        if n_b == 0:
            return
        # Non-finite input gives non-finite moments without warnings; callers check the mean.
        with np.errstate(invalid="ignore", over="ignore"):
            centred = chunk.astype(np.float64)
            mean_b = centred.mean(axis=0)
            centred -= mean_b
            m2_b = np.einsum("ij,ij->j", centred, centred)
            n_a = self.count
            total = n_a + n_b
            delta = mean_b - self.mean
            self.mean = self.mean + delta * (n_b / total)
            self.m2 = self.m2 + m2_b + delta * delta * (n_a * n_b / total)
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation (ddof 0), zeros while empty."""
        return np.sqrt(self.m2 / self.count) if self.count else np.zeros_like(self.m2)


@dataclass(eq=False)
class NormalizationStats:
    """Dataset statistics for observation normalisation and reward scaling.

    ``normalize_obs(x) = (x - obs_mean) / obs_std``; ``scale_reward(r) = r * reward_scale``.
    """

    obs_mean: np.ndarray
    """(O,) float64 mean of the observations."""
    obs_std: np.ndarray
    """(O,) float64 standard deviation, already raised to at least ``std_floor``."""
    std_floor: float
    """Smallest standard deviation used, so constant features do not divide by zero."""
    reward_mean: float
    """Mean reward per transition (reported, never subtracted)."""
    reward_std: float
    """Standard deviation of the rewards."""
    episode_return_min: float | None
    """Smallest undiscounted episode return in the data (None when unknown)."""
    episode_return_max: float | None
    """Largest undiscounted episode return in the data (None when unknown)."""
    count: int
    """Number of transitions the statistics were computed from."""
    reward_scaling: str = "none"
    """How ``reward_scale`` was chosen: "none" (1), "std" (1 / reward_std) or "return_range"
    (1000 / (max - min episode return), the D4RL locomotion convention of IQL and CORL)."""
    reward_scale: float = 1.0
    """Factor applied to rewards by :meth:`scale_reward`."""
    episode_return_mean: float | None = None
    """Mean undiscounted episode return in the data: the logged behaviour's score, which a
    pretrained policy is compared with (None when unknown, e.g. in checkpoints written before it)."""
    _tensor_cache: dict[tuple[str, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # --------------------------------------------------------------- building
    @classmethod
    def from_moments(
        cls,
        obs: RunningMoments,
        reward: RunningMoments,
        *,
        episode_returns: np.ndarray | None = None,
        std_floor: float = 1e-3,
        reward_scaling: RewardScaling = "none",
    ) -> "NormalizationStats":
        """Finish streaming statistics; ``episode_returns`` (E,) feeds the "return_range" scaling."""
        if obs.count == 0:
            raise ValueError("normalisation statistics need at least one transition")
        if std_floor <= 0:
            raise ValueError(f"std_floor must be positive, got {std_floor}")
        has_returns = episode_returns is not None and len(episode_returns) > 0
        stats = cls(
            obs_mean=obs.mean.copy(),
            obs_std=np.maximum(obs.std, std_floor),
            std_floor=float(std_floor),
            reward_mean=float(reward.mean[0]),
            reward_std=float(reward.std[0]),
            episode_return_min=float(np.min(episode_returns)) if has_returns else None,
            episode_return_max=float(np.max(episode_returns)) if has_returns else None,
            count=int(obs.count),
            episode_return_mean=float(np.mean(episode_returns)) if has_returns else None,
        )
        return stats.with_reward_scaling(reward_scaling)

    @classmethod
    def compute(
        cls,
        obs: np.ndarray,
        reward: np.ndarray,
        *,
        episode_returns: np.ndarray | None = None,
        std_floor: float = 1e-3,
        reward_scaling: RewardScaling = "none",
    ) -> "NormalizationStats":
        """Statistics of (N, O) observations and (N,) rewards held in memory."""
        obs_moments = RunningMoments(obs.shape[1])
        obs_moments.update(obs)
        reward_moments = RunningMoments(1)
        reward_moments.update(reward)
        return cls.from_moments(
            obs_moments, reward_moments, episode_returns=episode_returns,
            std_floor=std_floor, reward_scaling=reward_scaling,
        )

    def with_reward_scaling(self, reward_scaling: RewardScaling) -> "NormalizationStats":
        """A copy whose ``reward_scale`` follows the named rule."""
        if reward_scaling == "none":
            scale = 1.0
        elif reward_scaling == "std":
            scale = 1.0 / max(self.reward_std, self.std_floor)
        elif reward_scaling == "return_range":
            if self.episode_return_min is None or self.episode_return_max is None:
                raise ValueError("reward_scaling='return_range' needs episode returns")
            scale = 1000.0 / max(self.episode_return_max - self.episode_return_min, self.std_floor)
        else:
            raise ValueError(f"reward_scaling must be one of {REWARD_SCALINGS}, got {reward_scaling!r}")
        return dataclasses.replace(self, reward_scaling=reward_scaling, reward_scale=scale)

    # ---------------------------------------------------------------- applying
    def _obs_params(self, like: ArrayT) -> tuple[Any, Any]:
        if isinstance(like, torch.Tensor):
            key = (str(like.device), like.dtype)
            if key not in self._tensor_cache:
                self._tensor_cache[key] = (
                    torch.as_tensor(self.obs_mean, dtype=like.dtype, device=like.device),
                    torch.as_tensor(self.obs_std, dtype=like.dtype, device=like.device),
                )
            return self._tensor_cache[key]
        dtype = like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64
        return self.obs_mean.astype(dtype, copy=False), self.obs_std.astype(dtype, copy=False)

    def normalize_obs(self, obs: ArrayT) -> ArrayT:
        """(..., O) raw observations -> normalised, numpy or torch (dtype and device kept)."""
        mean, std = self._obs_params(obs)
        return (obs - mean) / std

    def denormalize_obs(self, obs: ArrayT) -> ArrayT:
        """Inverse of :meth:`normalize_obs`."""
        mean, std = self._obs_params(obs)
        return obs * std + mean

    def scale_reward(self, reward: ArrayT) -> ArrayT:
        """Rewards times ``reward_scale`` (no shift), numpy or torch."""
        return reward * self.reward_scale

    def unscale_reward(self, reward: ArrayT) -> ArrayT:
        """Inverse of :meth:`scale_reward`."""
        return reward / self.reward_scale

    # ------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (float64 values survive a JSON round trip exactly)."""
        return {
            "obs_mean": self.obs_mean.tolist(),
            "obs_std": self.obs_std.tolist(),
            "std_floor": self.std_floor,
            "reward_mean": self.reward_mean,
            "reward_std": self.reward_std,
            "episode_return_min": self.episode_return_min,
            "episode_return_max": self.episode_return_max,
            "count": self.count,
            "reward_scaling": self.reward_scaling,
            "reward_scale": self.reward_scale,
            "episode_return_mean": self.episode_return_mean,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NormalizationStats":
        """Inverse of :meth:`to_dict`; raises ValueError on missing keys or mismatched widths."""
        fields = [f for f in dataclasses.fields(cls) if f.init]
        missing = [f.name for f in fields if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise ValueError(f"normalisation statistics lack {missing}")
        values = {f.name: data[f.name] for f in fields if f.name in data}
        values["obs_mean"] = np.asarray(values["obs_mean"], dtype=np.float64)
        values["obs_std"] = np.asarray(values["obs_std"], dtype=np.float64)
        if values["obs_mean"].shape != values["obs_std"].shape or values["obs_mean"].ndim != 1:
            raise ValueError("obs_mean and obs_std must be lists of the same length")
        return cls(**values)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NormalizationStats):
            return NotImplemented
        return self.to_dict() == other.to_dict()
