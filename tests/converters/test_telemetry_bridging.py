"""hold_bad: isolated Bad/Questionable samples are bridged by the last good value, up to an age."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_frames import T0_US, base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.converters.align import US, evaluate

BAD = 0x80000000
UNCERTAIN = 0x40000000


def test_stepped_bridge_holds_the_last_good_value_until_its_age_limit() -> None:
    ts = np.array([0, 10], dtype=np.int64) * US
    val = np.array([1.0, np.nan])
    x = np.array([5, 12, 14, 16], dtype=np.int64) * US
    v, ok, bridged = evaluate(ts, val, x, "stepped", 100 * US, 2 * US, 0.5, hold_bad_us=15 * US)
    assert ok.tolist() == [True, True, True, False]  # the good sample at 0 s is 15 s old at 15 s
    assert bridged.tolist() == [False, True, True, False]
    assert v[:3].tolist() == [1.0, 1.0, 1.0]
    _, ok_off, bridged_off = evaluate(ts, val, x, "stepped", 100 * US, 2 * US, 0.5)
    assert ok_off.tolist() == [True, False, False, False] and not bridged_off.any()
    # A bad sample that comes after the good one is already hold_bad old is not bridged.
    _, ok_late, _ = evaluate(ts, val, x, "stepped", 100 * US, 2 * US, 0.5, hold_bad_us=10 * US)
    assert ok_late.tolist() == [True, False, False, False]


def test_a_bridge_never_revives_a_value_older_than_max_gap() -> None:
    ts = np.array([0, 10, 20], dtype=np.int64) * US
    val = np.array([1.0, np.nan, 3.0])
    x = np.array([9, 11, 20], dtype=np.int64) * US
    _, ok, bridged = evaluate(ts, val, x, "stepped", 8 * US, 2 * US, 0.5, hold_bad_us=60 * US)
    assert ok.tolist() == [False, False, True] and not bridged.any()


def test_mean_alignment_counts_bridged_time_as_covered_and_flags_it() -> None:
    ts = np.array([0, 2, 4, 6, 8, 10], dtype=np.int64) * US
    val = np.array([1.0, 1.0, np.nan, 3.0, 3.0, 3.0])
    x = np.array([4, 6, 10], dtype=np.int64) * US
    v, ok, bridged = evaluate(ts, val, x, "mean", 100 * US, 2 * US, 1.0, hold_bad_us=10 * US)
    assert ok.all()
    assert v.tolist() == pytest.approx([1.0, 1.0, 3.0])  # (4, 6] holds the bridged 1.0
    assert bridged.tolist() == [False, True, False]
    _, ok_off, _ = evaluate(ts, val, x, "mean", 100 * US, 2 * US, 1.0)
    assert ok_off.tolist() == [True, False, True]


def _scan(seconds: int, bad_at: set[int], outage: tuple[int, int] | None = None, code: int = BAD) -> list[tuple]:
    """PV and OP every 2 s (PV 0.2 s after, OP 0.5 s after the scan); OP bad at ``bad_at``; both silent in ``outage``."""
    rows = []
    for t in range(0, seconds + 1, 2):
        if outage and outage[0] <= t < outage[1]:
            continue
        rows.append((t + 0.2, "PV", float(t), 0))
        rows.append((t + 0.5, "SP", np.nan if t in bad_at else 50.0, code if t in bad_at else 0))
    return rows


def _spec(**overrides):
    return base_spec(control_period="2s", max_gap="3s", previous_action=True,
                     observations=[{"tag": "PV", "alignment": "stepped"}], **overrides)


def test_isolated_bad_action_samples_no_longer_split_episodes() -> None:
    bad_at = {40, 100, 160, 162}  # two isolated ones and a pair
    frame = long_frame(_scan(300, bad_at, code=BAD) + [(121.5, "PV", np.nan, UNCERTAIN)])
    _, off = telemetry_to_transitions(frame, _spec())
    assert off.episode_count >= 5  # every bad sample ends an episode
    data, report = telemetry_to_transitions(frame, _spec(hold_bad="7s"))  # the pair needs > 5.5 s
    report.check_accounting()
    assert report.episode_count == 1 and report.end_reasons == {"end_of_data": 1}
    assert report.transitions == 149 and report.dropped_steps == {"invalid_state": 1}  # 0 s: no prev_SP
    tags = {t.tag: t for t in report.tags}
    # SP: the actions over the intervals holding a bad sample (40, 100, 160, 162 s).
    assert tags["SP"].bridged == 4 and tags["PV"].bridged == 1
    assert report.bridged_values == 5
    t = (data.timestamp - T0_US) // US
    prev_col = data.metadata.obs_names.index("prev_SP")
    # The prev_SP feature carries the bridged actions into the state: flagged there.
    assert sorted(t[~data.obs_valid[:, prev_col]].tolist()) == [42, 102, 162, 164]
    assert t[~data.obs_valid[:, 0]].tolist() == [122]
    assert t[~data.action_valid[:, 0]].tolist() == [40, 100, 160, 162]  # the action's own mask column
    assert (data.action[:, 0] == 50.0).all()
    assert "bridged" in report.format()


def test_an_outage_longer_than_the_hold_still_splits() -> None:
    frame = long_frame(_scan(300, {40}, outage=(120, 150)))
    _, report = telemetry_to_transitions(frame, _spec(hold_bad="5s"))
    assert report.episode_count == 2 and [e.end_reason for e in report.episodes] == ["gap", "end_of_data"]


def test_per_tag_hold_overrides_the_spec_default() -> None:
    frame = long_frame(_scan(300, {40, 100}))
    spec = _spec(hold_bad="5s", actions=[{"tag": "SP", "alignment": "stepped", "low": 0.0, "high": 100.0,
                                          "hold_bad": 0}])
    _, report = telemetry_to_transitions(frame, spec)
    assert report.episode_count == 3


def test_streaming_in_small_chunks_bridges_like_one_pass() -> None:
    frame = long_frame(_scan(600, {40, 41, 100, 300, 302}))
    spec = _spec(hold_bad="5s", actions=[{"tag": "SP", "alignment": "mean", "low": 0.0, "high": 100.0}])
    whole, rep_whole = telemetry_to_transitions(frame, spec)
    chunked, rep_chunked = telemetry_to_transitions(frame, {**spec, "reader": {"chunk_rows": 7, "lateness": 0}})
    assert not rep_chunked.in_memory
    np.testing.assert_array_equal(whole.obs, chunked.obs)
    np.testing.assert_array_equal(whole.action, chunked.action)
    np.testing.assert_array_equal(whole.obs_valid, chunked.obs_valid)
    assert rep_whole.bridged_values == rep_chunked.bridged_values > 0
