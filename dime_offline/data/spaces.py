"""The shape-and-bounds fingerprint that checkpoints and datasets carry, and its comparison.

:class:`SpaceSpec` is what an artefact (checkpoint, dataset) was made with; ``envs.make.spaces_of``
reads one off an environment and :func:`check_spaces_match` refuses, with one line, an environment
(or dataset) that does not fit another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from dime_offline.data.schema import DatasetMetadata
from dime_offline.errors import EnvironmentMismatchError

BOUNDS_RTOL = 1e-5
"""Relative tolerance when comparing bounds (they round-trip through float32 and JSON)."""
BOUNDS_ATOL = 1e-6
"""Absolute tolerance when comparing bounds."""


@dataclass(frozen=True)
class SpaceSpec:
    """Observation/action shapes and bounds, as stored in checkpoints and dataset metadata.

    Bounds are in environment units. Unbounded observation spaces (MuJoCo) have ``obs_low`` and
    ``obs_high`` set to None.
    """

    obs_dim: int
    """Width O of the flat observation vector."""
    action_dim: int
    """Width A of the action vector."""
    action_low: tuple[float, ...]
    """(A,) lower action bounds in env units."""
    action_high: tuple[float, ...]
    """(A,) upper action bounds in env units."""
    obs_low: tuple[float, ...] | None = None
    """(O,) lower observation bounds when every bound is finite, else None."""
    obs_high: tuple[float, ...] | None = None
    """(O,) upper observation bounds when every bound is finite, else None."""

    @classmethod
    def from_metadata(cls, metadata: DatasetMetadata, obs_dim: int, action_dim: int) -> SpaceSpec | None:
        """The spec a dataset declares, or None when it does not declare action bounds."""
        if metadata.action_low is None or metadata.action_high is None:
            return None
        return cls(
            obs_dim=int(obs_dim),
            action_dim=int(action_dim),
            action_low=tuple(float(x) for x in metadata.action_low),
            action_high=tuple(float(x) for x in metadata.action_high),
            obs_low=None if metadata.obs_low is None else tuple(float(x) for x in metadata.obs_low),
            obs_high=None if metadata.obs_high is None else tuple(float(x) for x in metadata.obs_high),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpaceSpec:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError on malformed input."""

        def vec(key: str) -> tuple[float, ...] | None:
            value = data.get(key)
            return None if value is None else tuple(float(x) for x in value)

        return cls(
            obs_dim=int(data["obs_dim"]),
            action_dim=int(data["action_dim"]),
            action_low=vec("action_low") or (),
            action_high=vec("action_high") or (),
            obs_low=vec("obs_low"),
            obs_high=vec("obs_high"),
        )


def check_spaces_match(expected: SpaceSpec, actual: SpaceSpec, *, expected_from: str, actual_from: str) -> None:
    """Raise :class:`EnvironmentMismatchError` (one line) if ``actual`` does not fit ``expected``.

    Shapes must be equal and action bounds equal within float32 round-off. Observation bounds
    are compared only when both sides declare them.

    Args:
        expected: what the artefact (checkpoint, dataset) was made with.
        actual: what the environment offers.
        expected_from: how to name the artefact in the message, e.g. ``"checkpoint runs/pre"``.
        actual_from: how to name the environment, e.g. ``"environment 'Hopper-v4'"``.
    """
    problem = _first_mismatch(expected, actual)
    if problem is not None:
        raise EnvironmentMismatchError(f"{actual_from} does not match {expected_from}: {problem}")


def _first_mismatch(expected: SpaceSpec, actual: SpaceSpec) -> str | None:
    if expected.obs_dim != actual.obs_dim:
        return f"observation dim {actual.obs_dim}, expected {expected.obs_dim}"
    if expected.action_dim != actual.action_dim:
        return f"action dim {actual.action_dim}, expected {expected.action_dim}"
    for name in ("action_low", "action_high", "obs_low", "obs_high"):
        want, got = getattr(expected, name), getattr(actual, name)
        if want is None or got is None:
            continue
        if not np.allclose(np.asarray(got), np.asarray(want), rtol=BOUNDS_RTOL, atol=BOUNDS_ATOL):
            label = name.replace("_", " ").replace("obs", "observation")
            return f"{label} {_fmt(got)}, expected {_fmt(want)}"
    return None


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
