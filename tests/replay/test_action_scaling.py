"""Action scaling between environment units and [-1, 1]."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dime_offline.data.actions import action_bounds, scale_action, to_unit_box, unscale_action
from dime_offline.data.schema import DatasetMetadata
from dime_offline.errors import BoundsError, SchemaError

finite = st.floats(-1e4, 1e4, allow_nan=False)


@settings(max_examples=100, deadline=None)
@given(low=finite, width=st.floats(1e-2, 1e4), seed=st.integers(0, 2**16))
def test_round_trip_numpy_and_torch(low: float, width: float, seed: int) -> None:
    lo = np.array([low, -1.0, 0.0])
    hi = np.array([low + width, 1.0, 10.0])
    action = np.random.default_rng(seed).uniform(lo, hi, size=(64, 3))
    scaled = scale_action(action, lo, hi)
    assert scaled.min() >= -1 - 1e-9 and scaled.max() <= 1 + 1e-9
    np.testing.assert_allclose(unscale_action(scaled, lo, hi), action, rtol=1e-9, atol=1e-9 * max(1.0, abs(low) + width))

    tensor = torch.as_tensor(action, dtype=torch.float64)
    scaled_t = scale_action(tensor, lo, hi)
    assert isinstance(scaled_t, torch.Tensor) and scaled_t.dtype == torch.float64
    torch.testing.assert_close(scaled_t, torch.as_tensor(scaled))
    torch.testing.assert_close(unscale_action(scaled_t, lo, hi), tensor)


def test_bounds_map_to_unit_box_corners() -> None:
    lo, hi = np.array([-2.0, 10.0]), np.array([3.0, 20.0])
    np.testing.assert_allclose(scale_action(np.stack([lo, hi, (lo + hi) / 2]), lo, hi), [[-1, -1], [1, 1], [0, 0]], atol=1e-12)
    assert scale_action(np.zeros((1, 2), np.float32), lo, hi).dtype == np.float32


def test_to_unit_box_clips_rounding_and_rejects_real_violations() -> None:
    bounds = (np.array([0.0, -1.0]), np.array([10.0, 1.0]))
    action = np.array([[0.0, -1.0], [10.0 + 1e-5, 1.0], [5.0, 0.0]], dtype=np.float32)
    out = to_unit_box(action, bounds)
    assert out.min() >= -1.0 and out.max() <= 1.0
    np.testing.assert_allclose(out, [[-1, -1], [1, 1], [0, 0]], atol=1e-6)

    bad = action.copy()
    bad[2, 1] = 1.5
    with pytest.raises(BoundsError) as info:
        to_unit_box(bad, bounds, file="d.parquet", first_row=100)
    assert info.value.row == 102 and info.value.column == "action"
    assert "d.parquet" in info.value.one_line() and "row 102" in info.value.one_line()


def test_without_bounds_actions_must_already_be_in_the_unit_box() -> None:
    action = np.array([[0.5, -1.0]], dtype=np.float32)
    np.testing.assert_array_equal(to_unit_box(action, None), action)
    with pytest.raises(BoundsError, match="no action bounds declared"):
        to_unit_box(np.array([[0.5, -3.0]], dtype=np.float32), None)


def test_action_bounds_from_metadata() -> None:
    assert action_bounds(DatasetMetadata(), 2) is None
    low, high = action_bounds(DatasetMetadata(action_low=[-1, 0], action_high=[1, 5]), 2)  # type: ignore[misc]
    np.testing.assert_array_equal(low, [-1, 0])
    np.testing.assert_array_equal(high, [1, 5])
    for meta, message in (
        (DatasetMetadata(action_low=[-1, 0]), "only one"),
        (DatasetMetadata(action_low=[-1], action_high=[1]), "expected"),
        (DatasetMetadata(action_low=[-1, float("-inf")], action_high=[1, 1]), "finite"),
        (DatasetMetadata(action_low=[-1, 2], action_high=[1, 2]), "dimension 1"),
    ):
        with pytest.raises(SchemaError, match=message):
            action_bounds(meta, 2, file="x.parquet")


def test_to_unit_box_never_lets_nan_through() -> None:
    action = np.array([[0.0, 0.5], [np.nan, 0.0]], dtype=np.float32)
    for bounds in (None, (np.array([-1.0, -1.0]), np.array([1.0, 1.0])), (np.array([0.0, 0.0]), np.array([2.0, 2.0]))):
        with pytest.raises(BoundsError) as info:
            to_unit_box(action, bounds)
        assert info.value.row == 1


def test_unit_bounds_copy_the_actions_unchanged() -> None:
    action = np.random.default_rng(0).uniform(-1, 1, size=(50, 3)).astype(np.float32)
    bounds = (-np.ones(3), np.ones(3))
    np.testing.assert_array_equal(to_unit_box(action, bounds), action)
