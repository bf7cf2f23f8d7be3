"""Action scaling between environment units and the policy's [-1, 1] box.

Datasets store actions in environment units; the replay store, the policies and the critics work
in [-1, 1]. The map per dimension is affine:

    scaled = 2 * (action - low) / (high - low) - 1        action = low + (scaled + 1) * (high - low) / 2

Bounds come from :class:`~dime_offline.data.schema.DatasetMetadata` (``action_low/high``). When a
dataset declares no bounds, its actions are taken to be in [-1, 1] already (:func:`action_bounds`
returns None and :func:`to_unit_box` checks that they are).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

from dime_offline.data.schema import DatasetMetadata
from dime_offline.errors import BoundsError, SchemaError

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

BOUND_TOLERANCE = 1e-5
"""Relative slack (times max(1, high - low)) before a value counts as outside its bounds; the same
slack the schema validator allows, so data that passed validation always scales."""


def _as_like(value: np.ndarray, like: ArrayT) -> ArrayT:
    if isinstance(like, torch.Tensor):
        return torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return value.astype(like.dtype, copy=False)


def scale_action(action: ArrayT, low: np.ndarray, high: np.ndarray) -> ArrayT:
    """Map (..., A) actions from environment units to [-1, 1]; numpy or torch in, same type out."""
    low64 = np.asarray(low, dtype=np.float64)
    high64 = np.asarray(high, dtype=np.float64)
    scale = _as_like(2.0 / (high64 - low64), action)
    shift = _as_like(-2.0 * low64 / (high64 - low64) - 1.0, action)
    return action * scale + shift


def unscale_action(action: ArrayT, low: np.ndarray, high: np.ndarray) -> ArrayT:
    """Map (..., A) actions from [-1, 1] back to environment units; numpy or torch in, same type out."""
    low64 = np.asarray(low, dtype=np.float64)
    high64 = np.asarray(high, dtype=np.float64)
    half = _as_like((high64 - low64) / 2.0, action)
    mid = _as_like((high64 + low64) / 2.0, action)
    return action * half + mid


def action_bounds(metadata: DatasetMetadata, action_dim: int, *, file: str | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The declared (low, high) float64 bounds, each (A,), or None when the dataset declares none.

    Raises :class:`SchemaError` when only one side is given, the widths are wrong, a bound is not
    finite (an unbounded action cannot be mapped to [-1, 1]) or ``high <= low``.
    """
    if metadata.action_low is None and metadata.action_high is None:
        return None
    if metadata.action_low is None or metadata.action_high is None:
        raise SchemaError("metadata declares only one of action_low/action_high", file=file, column="action")
    low = np.asarray(metadata.action_low, dtype=np.float64)
    high = np.asarray(metadata.action_high, dtype=np.float64)
    if low.shape != (action_dim,) or high.shape != (action_dim,):
        raise SchemaError(
            f"action bounds have shapes {low.shape} and {high.shape}, expected ({action_dim},)",
            file=file, column="action",
        )
    if not (np.isfinite(low).all() and np.isfinite(high).all()):
        raise SchemaError(
            "action bounds must be finite to rescale actions to [-1, 1]", file=file, column="action"
        )
    if (high <= low).any():
        dim = int(np.flatnonzero(high <= low)[0])
        raise SchemaError(
            f"action_high must exceed action_low; dimension {dim} has [{low[dim]}, {high[dim]}]",
            file=file, column="action",
        )
    return low, high


def to_unit_box(
    action: np.ndarray,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    *,
    out: np.ndarray | None = None,
    file: str | None = None,
    first_row: int = 0,
) -> np.ndarray:
    """Scale (N, A) dataset actions into [-1, 1] (written to ``out`` when given) and check them.

    With ``bounds`` None the actions must already lie in [-1, 1]. Values within the tolerance of
    a bound are clipped onto it; anything further out raises :class:`BoundsError` naming the row
    (``first_row`` offsets row numbers for chunked reads).
    """
    if out is None:
        out = np.empty(action.shape, dtype=np.float32)
    if bounds is not None and not ((bounds[0] == -1.0).all() and (bounds[1] == 1.0).all()):
        low, high = bounds
        np.multiply(action, (2.0 / (high - low)).astype(np.float32), out=out)
        out += (-2.0 * low / (high - low) - 1.0).astype(np.float32)
        # Relative slack in env units becomes this much in [-1, 1] units.
        slack = float((2.0 * BOUND_TOLERANCE * np.maximum(1.0, high - low) / (high - low)).max())
    else:  # nothing to rescale: no bounds declared, or bounds already [-1, 1] (MuJoCo locomotion)
        np.copyto(out, action, casting="same_kind")
        slack = BOUND_TOLERANCE
    # Float32 rounding of the affine map itself can step just outside [-1, 1]. The negated
    # comparisons also catch NaN, which min/max propagate.
    limit = 1.0 + slack + 1e-6
    if out.size and not (out.min() >= -limit and out.max() <= limit):
        rows = np.flatnonzero((~(np.abs(out) <= limit)).any(axis=1))
        where = "the declared bounds" if bounds is not None else "[-1, 1] (no action bounds declared)"
        raise BoundsError(
            f"{len(rows)} row(s) have actions outside {where} or not finite; first at row {first_row + int(rows[0])}",
            file=file, column="action", row=first_row + int(rows[0]),
        )
    np.clip(out, -1.0, 1.0, out=out)
    return out
