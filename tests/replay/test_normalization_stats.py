"""Normalisation statistics: streaming equals one-shot, inverses hold, JSON round trip is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dime_offline.data.normalization import NormalizationStats, RunningMoments


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 300),
    cuts=st.lists(st.integers(0, 300), max_size=6),
    offset=st.sampled_from([0.0, 1e3, 1e5]),
    seed=st.integers(0, 2**16),
)
def test_streaming_moments_match_numpy(rows: int, cuts: list[int], offset: float, seed: int) -> None:
    x = (offset + np.random.default_rng(seed).normal(size=(rows, 4))).astype(np.float32)
    moments = RunningMoments(4)
    edges = sorted({0, rows, *[c for c in cuts if c < rows]})
    for a, b in zip(edges[:-1], edges[1:]):
        moments.update(x[a:b])
    x64 = x.astype(np.float64)
    assert moments.count == rows
    np.testing.assert_allclose(moments.mean, x64.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.std, x64.std(axis=0), rtol=1e-8, atol=1e-9)


def test_large_offset_keeps_precision() -> None:
    # A pressure of 1e5 Pa varying by about 1 Pa: a naive float32 sum of squares loses this.
    x = (1e5 + np.random.default_rng(0).normal(size=(200_000, 1))).astype(np.float32)
    stats = NormalizationStats.compute(x, np.zeros(len(x), np.float32))
    np.testing.assert_allclose(stats.obs_std, x.astype(np.float64).std(axis=0), rtol=1e-9)


def _stats(seed: int = 0) -> NormalizationStats:
    rng = np.random.default_rng(seed)
    obs = rng.normal(loc=[0, 10, -5], scale=[1, 100, 1e-6], size=(500, 3)).astype(np.float32)
    reward = rng.normal(loc=2.0, scale=4.0, size=500).astype(np.float32)
    return NormalizationStats.compute(obs, reward, episode_returns=np.array([-10.0, 40.0]), std_floor=1e-3)


def test_std_floor_applies_to_constant_features() -> None:
    stats = _stats()
    assert stats.obs_std[2] == pytest.approx(1e-3)
    assert stats.obs_std[1] > 50


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**16))
def test_normalize_inverse_numpy_and_torch(seed: int) -> None:
    stats = _stats()
    obs = np.random.default_rng(seed).normal(size=(16, 3)) * 50
    np.testing.assert_allclose(stats.denormalize_obs(stats.normalize_obs(obs)), obs, rtol=1e-12, atol=1e-9)
    tensor = torch.as_tensor(obs, dtype=torch.float64)
    torch.testing.assert_close(stats.normalize_obs(tensor), torch.as_tensor(stats.normalize_obs(obs)), rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(stats.denormalize_obs(stats.normalize_obs(tensor)), tensor, rtol=1e-12, atol=1e-9)
    # float32 tensors stay float32; accuracy is float32 rounding of |obs| / std.
    normed32 = stats.normalize_obs(tensor.float())
    assert normed32.dtype == torch.float32
    tolerance = 1e-6 * float(np.abs(obs).max() / stats.obs_std.min())
    torch.testing.assert_close(normed32.double(), stats.normalize_obs(tensor), rtol=0.0, atol=tolerance)
    reward = np.linspace(-3, 3, 7)
    np.testing.assert_allclose(stats.unscale_reward(stats.scale_reward(reward)), reward)


def test_normalized_data_has_zero_mean_unit_std() -> None:
    obs = np.random.default_rng(1).normal(loc=3.0, scale=7.0, size=(10_000, 2))
    stats = NormalizationStats.compute(obs, np.zeros(len(obs), np.float32))
    normed = stats.normalize_obs(obs)
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(normed.std(axis=0), 1.0, rtol=1e-12)


def test_reward_scaling_rules() -> None:
    stats = _stats()
    assert stats.reward_scale == 1.0
    assert stats.with_reward_scaling("std").reward_scale == pytest.approx(1.0 / stats.reward_std)
    assert stats.with_reward_scaling("return_range").reward_scale == pytest.approx(1000.0 / 50.0)
    no_returns = NormalizationStats.compute(np.zeros((3, 1)), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="episode returns"):
        no_returns.with_reward_scaling("return_range")
    with pytest.raises(ValueError, match="reward_scaling"):
        stats.with_reward_scaling("minmax")  # type: ignore[arg-type]


def test_dict_round_trip_through_json_is_exact() -> None:
    stats = _stats().with_reward_scaling("std")
    back = NormalizationStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    assert back == stats
    np.testing.assert_array_equal(back.obs_mean, stats.obs_mean)
    assert back.reward_scale == stats.reward_scale
    broken = stats.to_dict()
    del broken["obs_std"]
    with pytest.raises(ValueError, match="obs_std"):
        NormalizationStats.from_dict(broken)


def test_empty_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        NormalizationStats.compute(np.zeros((0, 2)), np.zeros(0, np.float32))
