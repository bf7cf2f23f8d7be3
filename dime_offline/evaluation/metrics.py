"""Episode statistics and D4RL-style normalised scores.

Normalised score = 100 * (R - R_random) / (R_expert - R_random), the convention papers report
(D4RL's ``get_normalized_score`` returns the fraction). Reference returns come from the
dataset's metadata when it carries them, else from :data:`D4RL_REFERENCE_RETURNS` by env family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import parse_env_id

from dime_offline.data.schema import DatasetMetadata

D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}
"""(random, expert) returns per gym-MuJoCo env family, from ``d4rl/infos.py`` (the ``-random-v0``
references, which every v0/v1/v2 locomotion dataset reuses). Keyed by the lower-case env name
without version, so HalfCheetah-v4 and HalfCheetah-v5 share an entry."""


REFERENCES_KEY = "reference_returns"
"""Key in a checkpoint's ``extra`` of the (random, expert) returns its stage's evaluations took from the
dataset (None: the dataset had none), so a later evaluation of the checkpoint normalises alike."""


def env_family(env_id: str) -> str:
    """Lower-case env name without namespace or version: ``"HalfCheetah-v4" -> "halfcheetah"``."""
    try:
        _, name, _ = parse_env_id(env_id)
    except gym.error.Error:  # malformed id: use it as it is
        return env_id.lower()
    return name.lower()


def reference_returns(env_id: str | None, metadata: DatasetMetadata | None = None) -> tuple[float, float] | None:
    """(random, expert) reference returns: the metadata's if present, else the D4RL table's."""
    if metadata is not None and metadata.ref_min_score is not None and metadata.ref_max_score is not None:
        return (float(metadata.ref_min_score), float(metadata.ref_max_score))
    if env_id is None:
        return None
    return D4RL_REFERENCE_RETURNS.get(env_family(env_id))


def standard_error(values: Any) -> float:
    """Standard error of the mean of ``values`` (sample standard deviation / sqrt(n); 0 for fewer than two)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else 0.0


def normalized_score(episode_return: float, references: tuple[float, float] | None) -> float | None:
    """100 * (R - R_min) / (R_max - R_min), or None when there are no references."""
    if references is None:
        return None
    low, high = references
    return 100.0 * (float(episode_return) - low) / (high - low)


@dataclass(frozen=True)
class EpisodeStats:
    """Summary of a batch of evaluation episodes (E episodes)."""

    returns: tuple[float, ...]
    """(E,) undiscounted return of each episode."""
    lengths: tuple[int, ...]
    """(E,) number of steps of each episode."""
    terminated: tuple[bool, ...]
    """(E,) True where the episode ended in a true terminal state (not a time limit)."""
    references: tuple[float, float] | None = None
    """(random, expert) reference returns used for the normalised score, if known."""
    at_bounds: tuple[float, ...] | None = None
    """(E,) share of each episode's steps with an action component at its bound (|a| >= 0.999 in the
    policy's [-1, 1] box): a saturated controller; None when not measured."""

    @property
    def episodes(self) -> int:
        return len(self.returns)

    @property
    def return_mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def return_std(self) -> float:
        """Population standard deviation over episodes (0 for one episode)."""
        return float(np.std(self.returns))

    @property
    def return_min(self) -> float:
        return float(np.min(self.returns))

    @property
    def return_max(self) -> float:
        return float(np.max(self.returns))

    @property
    def length_mean(self) -> float:
        return float(np.mean(self.lengths))

    @property
    def normalized_score(self) -> float | None:
        """Normalised score of the mean return (x100), None without references."""
        return normalized_score(self.return_mean, self.references)

    @property
    def normalized_score_std(self) -> float | None:
        """Standard deviation of the per-episode normalised scores, None without references."""
        if self.references is None:
            return None
        low, high = self.references
        return 100.0 * self.return_std / (high - low)

    def to_dict(self) -> dict[str, Any]:
        """The evaluation block every command's JSON summary shares (same keys everywhere)."""
        return {
            "episodes": self.episodes,
            "return_mean": self.return_mean,
            "return_std": self.return_std,
            "return_min": self.return_min,
            "return_max": self.return_max,
            "length_mean": self.length_mean,
            "terminated_episodes": int(sum(self.terminated)),
            "normalized_score": self.normalized_score,
            "normalized_score_std": self.normalized_score_std,
            "time_at_action_bounds": None if self.at_bounds is None else float(np.mean(self.at_bounds)),
            "episode_returns": list(self.returns),
            "episode_lengths": list(self.lengths),
            "episode_terminated": list(self.terminated),
        }

    def to_metrics(self, prefix: str = "eval") -> dict[str, float]:
        """Flat ``prefix/name -> float`` metrics for the tracking sinks (None values and per-episode lists dropped)."""
        return {f"{prefix}/{k}": float(v) for k, v in self.to_dict().items() if v is not None and not isinstance(v, list)}
