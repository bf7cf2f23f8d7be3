"""What a policy's evaluation is compared with: reference controllers on the same episodes, and the
logged behaviour.

"Is it better than what runs there now?" needs a reference measured the way the policy is. Two kinds:

* **Controllers** roll out on exactly the policy's episodes (``reset(seed=seed + i)``, the same
  initial states and disturbance streams), so the difference is *paired*: per seed, policy minus
  controller. ``random`` (uniform actions in the action box) exists for every environment;
  an environment may register its own (:data:`ENV_CONTROLLERS`): on the CSTR twin ``pi`` is the
  plant's PI loop alone and ``pi_operator`` the PI loop with the operator on top, the twin's
  behaviour policy (what its telemetry logs).
* **data**: the logged episodes of a dataset (the behaviour as it ran). They started from other
  states, so the comparison is *unpaired* (difference of means); their lengths may also differ from
  the evaluation's, which the table shows beside the returns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dime_offline.data.actions import action_bounds, to_unit_box
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.pi_controller import PIController
from dime_offline.errors import ConfigError
from dime_offline.evaluation.metrics import EpisodeStats, reference_returns
from dime_offline.evaluation.rollout import AT_BOUND, evaluate
from dime_offline.types import Policy

DATA_BASELINE = "data"
"""The baseline name of a dataset's logged episodes (needs a dataset)."""


@dataclass(frozen=True)
class ReferenceController:
    """A controller to roll out beside a policy."""

    description: str
    """One line for tables: what the controller is."""
    build: Callable[[SpaceSpec, int], Policy]
    """``build(spaces, seed)``: a fresh controller (actions in [-1, 1]) whose own randomness, if
    any, is seeded by ``seed``."""
    deterministic: bool = True
    """Passed to the controller's ``act``: False lets a controller with a stochastic mode use it."""


class UniformRandomPolicy:
    """Actions drawn uniformly from [-1, 1]^A (the ``random`` baseline, fine-tuning's warm-up and
    the ``--policy random`` collector)."""

    def __init__(self, action_dim: int, seed: int) -> None:
        self.action_dim = action_dim
        self.rng = np.random.default_rng(seed)
        """The draws' generator (a run's checkpoint saves its state for a resume)."""

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """(B, A) float32 uniform actions for (B, O) observations; ``deterministic`` is ignored."""
        return self.rng.uniform(-1.0, 1.0, size=(obs.shape[0], self.action_dim)).astype(np.float32)


GENERIC_CONTROLLERS: dict[str, ReferenceController] = {
    "random": ReferenceController("uniform random actions", lambda spaces, seed: UniformRandomPolicy(spaces.action_dim, seed)),
}
"""Controllers that act in any environment."""

ENV_CONTROLLERS: dict[str, dict[str, ReferenceController]] = {
    CSTR_ENV_ID: {
        "pi": ReferenceController("the plant's PI loop, no operator", lambda spaces, seed: PIController(seed=seed)),
        "pi_operator": ReferenceController(
            "PI loop with the operator's noise and MANUAL bumps (the twin's behaviour policy)",
            lambda spaces, seed: PIController(seed=seed), deterministic=False,
        ),
    },
}
"""Controllers of particular environments, by gymnasium id: the reference a plant already has."""


def controllers_for(env_id: str) -> dict[str, ReferenceController]:
    """The controllers that can run in ``env_id``: the generic ones and its own."""
    return {**GENERIC_CONTROLLERS, **ENV_CONTROLLERS.get(env_id, {})}


def check_baselines(names: Sequence[str], env_id: str, data: str | None, *, also_known: Sequence[str] = ()) -> None:
    """Raise :class:`ConfigError` (one line) unless every name is a baseline ``env_id`` has (or one of
    ``also_known``, baselines the caller builds itself), and the data baseline comes with a dataset."""
    known = [DATA_BASELINE, *controllers_for(env_id), *also_known]
    for name in names:
        if name not in known:
            elsewhere = sorted(env for env, table in ENV_CONTROLLERS.items() if name in table)
            where = f" (it is a controller of {', '.join(elsewhere)} only)" if elsewhere else ""
            raise ConfigError(
                f"field 'baselines': unknown baseline '{name}' for environment '{env_id}'{where}; known: {', '.join(known)}"
            )
    if DATA_BASELINE in names and not data:
        raise ConfigError(f"field 'baselines': baseline '{DATA_BASELINE}' needs a dataset (--data logs.parquet)")


@dataclass(frozen=True)
class BaselineResult:
    """One baseline's episodes and how the policy compares with them."""

    name: str
    """Baseline name ("data", "random", "pi", ...)."""
    description: str
    """What the baseline is."""
    stats: EpisodeStats
    """Its episodes (for "data": every logged episode)."""
    paired: bool
    """True when it ran on the policy's episode seeds (a controller), so per-seed differences exist."""

    def difference(self, policy: EpisodeStats) -> dict[str, Any]:
        """Policy minus baseline: of the mean returns and normalised scores, of the return per step (all
        episodes' rewards over all their steps: what compares episodes of other lengths, e.g. cut short by
        a trip or logged in pieces), and per seed when paired (``per_seed`` (E,), their standard
        deviation, and on how many seeds the policy did better)."""
        block: dict[str, Any] = {
            "return_mean": policy.return_mean - self.stats.return_mean,
            "return_per_step": _per_step(policy) - _per_step(self.stats),
            "normalized_score": None,
            "per_seed": None,
            "per_seed_std": None,
            "policy_better": None,
        }
        if policy.normalized_score is not None and self.stats.normalized_score is not None:
            block["normalized_score"] = policy.normalized_score - self.stats.normalized_score
        if self.paired:
            per_seed = np.asarray(policy.returns) - np.asarray(self.stats.returns)
            block.update(per_seed=per_seed.tolist(), per_seed_std=float(np.std(per_seed)), policy_better=int((per_seed > 0).sum()))
        return block

    def to_dict(self, policy: EpisodeStats) -> dict[str, Any]:
        """The baseline's evaluation block (the keys every evaluation shares) plus the difference."""
        return {
            "baseline": self.name, "description": self.description, "paired": self.paired,
            **self.stats.to_dict(), "difference": self.difference(policy),
        }


def _per_step(stats: EpisodeStats) -> float:
    return float(np.sum(stats.returns) / max(int(np.sum(stats.lengths)), 1))


def controller_baseline(
    name: str,
    env_id: str,
    spaces: SpaceSpec,
    n_episodes: int,
    seed: int,
    *,
    max_episode_steps: int | None = None,
    metadata: DatasetMetadata | None = None,
) -> BaselineResult:
    """Roll out the controller ``name`` on the episodes an evaluation with ``n_episodes`` and ``seed``
    runs (see :func:`~dime_offline.evaluation.rollout.evaluate`)."""
    controller = controllers_for(env_id)[name]
    stats = evaluate(
        controller.build(spaces, seed), env_id, n_episodes, seed,
        deterministic=controller.deterministic, max_episode_steps=max_episode_steps, metadata=metadata,
    )
    return BaselineResult(name, controller.description, stats, paired=True)


def data_baseline(data: TransitionData, env_id: str, spaces: SpaceSpec, *, source: str) -> BaselineResult:
    """The logged episodes of ``data`` (checked against the environment's ``spaces``) as a baseline.

    Every episode counts, the cut ones too (a time limit, the end of a historian batch); an episode
    is terminated when its last row is. Actions are placed in [-1, 1] by the dataset's declared
    bounds, else the environment's, for the time at the action bounds.

    Raises:
        EnvironmentMismatchError: the data's widths or declared bounds do not fit ``spaces``.
        ConfigError: the dataset is empty.
    """
    declared = SpaceSpec.from_metadata(data.metadata, data.obs_dim, data.action_dim)
    check_spaces_match(
        declared or dataclasses.replace(spaces, obs_dim=data.obs_dim, action_dim=data.action_dim), spaces,
        expected_from=f"dataset {source}", actual_from=f"environment '{env_id}'",
    )
    if len(data) == 0:
        raise ConfigError(f"dataset {source} holds no transitions: no logged episodes to compare with")
    starts = data.episode_starts()
    lengths = np.diff(np.append(starts, len(data)))
    last_rows = starts + lengths - 1
    bounds = action_bounds(data.metadata, data.action_dim, file=source) or (
        np.asarray(spaces.action_low, dtype=np.float64), np.asarray(spaces.action_high, dtype=np.float64)
    )
    at_bound = (np.abs(to_unit_box(data.action, bounds, file=source)) >= AT_BOUND).any(axis=1)
    stats = EpisodeStats(
        returns=tuple(float(r) for r in data.episode_returns()),
        lengths=tuple(int(n) for n in lengths),
        terminated=tuple(bool(t) for t in data.terminated[last_rows]),
        references=reference_returns(env_id, data.metadata),
        at_bounds=tuple(float(b) for b in np.add.reduceat(at_bound.astype(np.float64), starts) / lengths),
    )
    return BaselineResult(DATA_BASELINE, f"logged episodes of {source}", stats, paired=False)
