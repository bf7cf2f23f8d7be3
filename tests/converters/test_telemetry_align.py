"""Grid alignment: stepped / mean / interpolate, no look-ahead, staleness, chunking."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_frames import T0_US, base_spec, long_frame, ramp_rows

from dime_offline.converters import spec_from_dict, telemetry_to_transitions
from dime_offline.converters.align import US, evaluate
from dime_offline.converters.pipeline import _Plan
from dime_offline.converters.readers import ChunkReader


def _obs_by_time(data) -> dict[float, float]:
    """State feature 0 by grid time (s after T0), from obs and from each episode's final next_obs."""
    seconds = (data.timestamp - T0_US) / US
    out = dict(zip((seconds + data.metadata.dt_seconds).tolist(), data.next_obs[:, 0].tolist()))
    out.update(zip(seconds.tolist(), data.obs[:, 0].tolist()))
    return out


def _actions(seconds: int = 60) -> list[tuple]:
    return [(0.5, "SP", 50.0)] + [(t + 0.5, "SP", 50.0) for t in range(10, seconds, 10)]


@pytest.mark.parametrize("alignment", ["stepped", "mean", "interpolate"])
def test_a_spike_after_t_never_changes_the_state_at_t(alignment: str) -> None:
    calm = ramp_rows(60, every=2, slope=0.0, start=5.0)
    spiked = calm + [(30.000001, "PV", 1e6), (30.5, "PV", 5.0)]
    spec = base_spec(observations=[{"tag": "PV", "alignment": alignment}])
    a, _ = telemetry_to_transitions(long_frame(calm + _actions()), spec)
    b, _ = telemetry_to_transitions(long_frame(spiked + _actions()), spec)
    obs_a, obs_b = _obs_by_time(a), _obs_by_time(b)
    for t in (10.0, 20.0, 30.0):
        assert obs_b[t] == obs_a[t] == pytest.approx(5.0)
    assert obs_b[40.0] != obs_a[40.0] or alignment == "stepped"


def test_stepped_takes_the_last_value_at_or_before_t() -> None:
    rows = [(0, "PV", 1.0), (9.999, "PV", 2.0), (10.0, "PV", 3.0), (10.001, "PV", 4.0), (25, "PV", 5.0), (30, "PV", 6.0)]
    data, _ = telemetry_to_transitions(long_frame(rows + _actions(31)), base_spec())
    obs = _obs_by_time(data)
    assert obs[0.0] == 1.0
    assert obs[10.0] == 3.0  # the sample exactly at t counts, the one 1 ms later does not
    assert obs[20.0] == 4.0
    assert obs[30.0] == 6.0


def test_mean_is_time_weighted_over_the_interval_ending_at_t() -> None:
    # Held signal: 0 on [0, 4), 10 on [4, 10) -> mean over (0, 10] = 6; then 10 on (10, 15), 20 after.
    rows = [(0, "PV", 0.0), (4, "PV", 10.0), (15, "PV", 20.0), (20, "PV", 20.0), (30, "PV", 20.0)]
    spec = base_spec(observations=[{"tag": "PV", "alignment": "mean"}])
    data, _ = telemetry_to_transitions(long_frame(rows + _actions(31)), spec)
    obs = _obs_by_time(data)
    assert obs[10.0] == pytest.approx(6.0)
    assert obs[20.0] == pytest.approx(15.0)
    assert obs[30.0] == pytest.approx(20.0)


def test_interpolate_slopes_only_between_past_samples() -> None:
    ts = np.array([0, 10, 20], dtype=np.int64) * US
    val = np.array([0.0, 10.0, 30.0])
    x = np.array([10, 15, 20], dtype=np.int64) * US
    v, ok, _ = evaluate(ts, val, x, "interpolate", 3600 * US, 10 * US, 0.5)
    assert ok.all()
    # (0, 10]: ramp 0 -> 10, mean 5. (5, 15]: ramp 5 -> 10 over 5 s (mean 7.5) then the sample at
    # 20 is in the future, so 10 is held: mean 8.75. (10, 20]: ramp 10 -> 30, mean 20.
    assert v.tolist() == pytest.approx([5.0, 8.75, 20.0])
    held, _, _ = evaluate(ts, val, x, "mean", 3600 * US, 10 * US, 0.5)
    assert held.tolist() == pytest.approx([0.0, 5.0, 10.0])


def test_stale_values_beyond_max_gap_are_missing() -> None:
    ts = np.array([0], dtype=np.int64)
    val = np.array([1.0])
    x = np.array([5, 10, 11], dtype=np.int64) * US
    _, ok, _ = evaluate(ts, val, x, "stepped", 10 * US, 10 * US, 0.5)
    assert ok.tolist() == [True, True, False]
    _, okm, _ = evaluate(ts, val, x, "mean", 10 * US, 10 * US, 0.5)
    # Coverage of (x - 10, x]: 5 s, 10 s, 9 s of known signal.
    assert okm.tolist() == [True, True, True]
    m2, okm2, _ = evaluate(ts, val, np.array([16 * US]), "mean", 10 * US, 10 * US, 0.5)
    assert not okm2[0] and np.isnan(m2[0])


def test_bad_sample_makes_the_signal_unknown_until_the_next_good_one() -> None:
    ts = np.array([0, 10, 20], dtype=np.int64) * US
    val = np.array([1.0, np.nan, 3.0])
    x = np.array([5, 15, 25], dtype=np.int64) * US
    v, ok, _ = evaluate(ts, val, x, "stepped", 100 * US, 10 * US, 0.5)
    assert ok.tolist() == [True, False, True]
    assert v[0] == 1.0 and v[2] == 3.0


def test_actions_are_the_command_applied_over_the_interval() -> None:
    # The controller writes its output 1.5 s after each control instant.
    rows = ramp_rows(60, every=1, slope=0.0, start=1.0)
    rows += [(t + 1.5, "SP", float(t)) for t in range(0, 60, 10)]
    data, _ = telemetry_to_transitions(long_frame(rows), base_spec())
    seconds = (data.timestamp - T0_US) / US
    assert data.action[:, 0].tolist() == seconds.tolist()
    start, _ = telemetry_to_transitions(
        long_frame(rows), base_spec(actions=[{"tag": "SP", "alignment": "stepped", "timing": "start", "low": 0, "high": 100}])
    )
    start_seconds = (start.timestamp - T0_US) / US
    assert start.action[:, 0].tolist() == (start_seconds - 10).tolist()


def test_chunked_streaming_equals_one_chunk(tmp_path) -> None:
    rng = np.random.default_rng(0)
    times = np.sort(rng.uniform(0, 3600, 3000))
    rows = [(float(t), "PV", float(v)) for t, v in zip(times, np.cumsum(rng.normal(size=3000)))]
    rows += [(t + 0.3, "SP", float(rng.uniform(0, 100))) for t in range(0, 3600, 10)]
    frame = long_frame(rows)
    path = tmp_path / "export.csv"
    frame.assign(timestamp=frame.timestamp.dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")).to_csv(path, index=False)
    spec_small = {**base_spec(), "reader": {"chunk_rows": 50, "lateness": 0}}
    plan = _Plan(spec_from_dict(spec_small))
    chunks = list(ChunkReader(path, plan.spec, plan.registry))
    assert len(chunks) > 10  # the file really is read in many chunks
    for alignment in ("stepped", "mean", "interpolate"):
        spec = base_spec(observations=[{"tag": "PV", "alignment": alignment}])
        whole, rep_whole = telemetry_to_transitions(path, spec)
        chunked, rep_chunked = telemetry_to_transitions(path, {**spec, "reader": {"chunk_rows": 50, "lateness": 0}})
        assert not rep_chunked.in_memory
        assert len(rep_chunked.files) == 1
        np.testing.assert_array_equal(whole.obs, chunked.obs)
        np.testing.assert_array_equal(whole.action, chunked.action)
        np.testing.assert_array_equal(whole.timestamp, chunked.timestamp)
        assert rep_whole.transitions == rep_chunked.transitions


def test_export_sorted_by_tag_falls_back_to_an_in_memory_pass(tmp_path) -> None:
    rows = ramp_rows(600, every=3) + [(t + 0.5, "SP", 10.0) for t in range(0, 600, 10)]
    frame = long_frame(rows)
    by_tag = frame.sort_values(["tag", "timestamp"], kind="stable")  # PV first, then SP: not time-ordered
    spec = {**base_spec(), "reader": {"chunk_rows": 40, "lateness": 0}}
    ordered, rep_ordered = telemetry_to_transitions(frame, spec)
    fallback, rep_fallback = telemetry_to_transitions(by_tag, spec)
    assert rep_fallback.in_memory and not rep_ordered.in_memory
    assert any("not time-ordered" in w for w in rep_fallback.warnings)
    np.testing.assert_array_equal(ordered.obs, fallback.obs)
    np.testing.assert_array_equal(ordered.action, fallback.action)


def test_a_mean_action_sitting_on_its_bound_is_not_counted_as_clipped() -> None:
    # 30,000 irregular samples in one chunk: the time-weighted mean of a signal held exactly at
    # 100 comes out a few ulps above it (cumulative sums); that is not a clipped action.
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.uniform(0.1, 1.9, 30_000))
    level = np.where((t // 60) % 2 == 0, 100.0, 0.0)
    rows = [(float(s), "PV", float(s)) for s in t] + [(float(s) + 0.05, "SP", float(v)) for s, v in zip(t, level)]
    spec = base_spec(actions=[{"tag": "SP", "alignment": "mean", "low": 0.0, "high": 100.0}])
    data, report = telemetry_to_transitions(long_frame(rows), spec)
    assert report.clipped_actions == 0 and data.action.max() == 100.0
    lower = base_spec(actions=[{"tag": "SP", "alignment": "mean", "low": 0.0, "high": 99.0}])
    assert telemetry_to_transitions(long_frame(rows), lower)[1].clipped_actions > 0
