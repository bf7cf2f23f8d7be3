"""Episode boundaries: gaps, trips, batches, modes, windows, short episodes, step accounting."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_frames import T0_US, base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.errors import ConfigError


def _plant(seconds: int, *, skip: tuple[float, float] | None = None) -> list[tuple]:
    """PV every 2 s (value = t), SP 1 s after every 10 s step; PV silent inside ``skip``."""
    rows = [(t, "PV", float(t)) for t in range(0, seconds + 1, 2) if not (skip and skip[0] <= t < skip[1])]
    rows += [(t + 1, "SP", 50.0) for t in range(0, seconds, 10)]
    return rows


def _pv_gap(gap: str) -> list[dict]:
    return [{"tag": "PV", "alignment": "stepped", "max_gap": gap}]


def test_a_long_gap_truncates_and_a_new_episode_starts() -> None:
    spec = base_spec(observations=_pv_gap("5s"))
    data, report = telemetry_to_transitions(long_frame(_plant(200, skip=(61, 120))), spec)
    report.check_accounting()
    assert report.episode_count == 2
    assert [e.end_reason for e in report.episodes] == ["gap", "end_of_data"]
    ends = np.flatnonzero(np.r_[data.episode_id[1:] != data.episode_id[:-1], True])
    assert data.truncated[ends].all() and not data.terminated.any()
    # No transition spans the gap.
    assert ((data.next_obs[:, 0] - data.obs[:, 0]) == 10.0).all()
    assert report.dropped_steps["invalid_state"] == 5


def test_short_gaps_are_bridged_by_imputation_not_split() -> None:
    spec = base_spec(observations=_pv_gap("5s"), impute={"max_steps": 1})
    _, report = telemetry_to_transitions(long_frame(_plant(200, skip=(59, 72))), spec)
    assert report.episode_count == 1 and report.imputed_values == 1


def test_trip_terminates_and_tripped_steps_are_dropped() -> None:
    rows = _plant(300) + [(0, "TRIP", 0.0), (95.5, "TRIP", 1.0), (150.5, "TRIP", 0.0)]
    spec = base_spec(terminals=[{"tag": "TRIP", "above": 0.5}])
    data, report = telemetry_to_transitions(long_frame(rows), spec)
    report.check_accounting()
    assert [e.end_reason for e in report.episodes] == ["terminal:TRIP", "end_of_data"]
    (term,) = np.flatnonzero(data.terminated)
    assert data.obs[term, 0] == 90.0 and data.next_obs[term, 0] == 100.0
    assert not data.truncated[term]
    assert report.dropped_steps["tripped"] == 5  # grid steps 100..140 s hold the trip
    assert data.obs[term + 1, 0] == 160.0  # the trip clears at 150.5 s, 160 s is the next clean start


def test_text_trip_state() -> None:
    rows = _plant(200) + [(0, "ESD", "NORMAL"), (95.5, "ESD", "TRIPPED")]
    spec = base_spec(terminals=[{"tag": "ESD", "kind": "text", "equals": "TRIPPED"}])
    data, report = telemetry_to_transitions(long_frame(rows), spec)
    assert data.terminated.sum() == 1 and report.end_reasons == {"terminal:ESD": 1}


def test_batch_boundaries_split_without_losing_transitions() -> None:
    rows = _plant(200) + [(0.5, "BATCH", "B-1"), (100.5, "BATCH", "B-2")]
    data, report = telemetry_to_transitions(long_frame(rows), base_spec(episodes={"batch_tag": "BATCH"}))
    report.check_accounting()
    assert [e.key for e in report.episodes] == ["B-1", "B-2"]
    assert [e.end_reason for e in report.episodes] == ["batch_end", "end_of_data"]
    assert report.transitions == 20  # grid 0..200 s: 20 transitions, none lost at the boundary
    first_end = np.flatnonzero(data.episode_id == 0)[-1]
    assert data.next_obs[first_end, 0] == 100.0 == data.obs[first_end + 1, 0]
    assert set(data.episode_key.tolist()) == {"B-1", "B-2"}


def test_steps_without_a_batch_id_are_dropped() -> None:
    rows = _plant(200) + [(0.5, "BATCH", "B-1"), (50.5, "BATCH", ""), (120.5, "BATCH", "B-2")]
    _, report = telemetry_to_transitions(long_frame(rows), base_spec(episodes={"batch_tag": "BATCH"}))
    report.check_accounting()
    assert [e.key for e in report.episodes] == ["B-1", "B-2"]
    assert report.dropped_steps.get("no_batch", 0) > 0


def test_mode_changes_split_and_disallowed_modes_are_dropped() -> None:
    rows = _plant(300) + [(0.5, "MODE", "AUTO"), (100.5, "MODE", "MAN"), (150.5, "MODE", "CAS"), (200.5, "MODE", "AUTO")]
    spec = base_spec(episodes={"mode_tag": "MODE", "modes": ["AUTO", "CAS"]})
    _, report = telemetry_to_transitions(long_frame(rows), spec)
    report.check_accounting()
    assert [e.end_reason for e in report.episodes] == ["mode_change", "mode_change", "end_of_data"]
    assert report.dropped_steps["out_of_mode"] == 4  # the MAN interval steps 110..140 s
    every_mode = base_spec(episodes={"mode_tag": "MODE"})
    _, report_all = telemetry_to_transitions(long_frame(rows), every_mode)
    assert report_all.episode_count == 4 and "out_of_mode" not in report_all.dropped_steps


def test_fixed_windows_truncate_and_keep_every_transition() -> None:
    data, report = telemetry_to_transitions(long_frame(_plant(300)), base_spec(episodes={"window": "1min"}))
    report.check_accounting()
    assert report.transitions == 30
    assert report.end_reasons == {"window": 4, "end_of_data": 1}
    assert (np.bincount(data.episode_id) == 6).all()


def test_short_episodes_are_dropped_and_counted() -> None:
    rows = _plant(300, skip=(29, 42))
    spec = base_spec(observations=_pv_gap("5s"), episodes={"min_transitions": 5})
    _, report = telemetry_to_transitions(long_frame(rows), spec)
    report.check_accounting()
    assert report.short_episodes_dropped == 1
    assert report.dropped_steps["short_episode"] == 4  # 0..30 s: three transitions and their end
    assert report.episode_count == 1 and report.episodes[0].transitions == 25


def test_numeric_mode_codes_match_labels() -> None:
    rows = _plant(300) + [(0.5, "MODE", 2.0), (100.5, "MODE", 1.0), (200.5, "MODE", 2.0)]
    _, report = telemetry_to_transitions(long_frame(rows), base_spec(episodes={"mode_tag": "MODE", "modes": [2]}))
    # MAN covers the intervals of steps 100..190 s; 100 s is also the first episode's final state.
    assert report.dropped_steps["out_of_mode"] == 9 and report.episode_count == 2


def test_an_episode_ending_in_a_changeover_is_a_batch_end_not_a_gap() -> None:
    # B-1 runs 0..100 s, data stops over a changeover (the batch tag still says B-1), B-2 starts at
    # 400 s; a real 40 s outage inside B-2 is a gap.
    plant = _plant(700, skip=(101, 400))
    plant = [r for r in plant if not 500 <= r[0] < 540]
    rows = plant + [(0.5, "BATCH", "B-1"), (399.5, "BATCH", "B-2")]
    spec = base_spec(observations=_pv_gap("5s"), actions=[{"tag": "SP", "alignment": "stepped", "max_gap": "15s",
                                                           "low": 0.0, "high": 100.0}],
                     episodes={"batch_tag": "BATCH"})
    _, report = telemetry_to_transitions(long_frame(rows), spec)
    report.check_accounting()
    assert [(e.key, e.end_reason) for e in report.episodes] == [("B-1", "batch_end"), ("B-2", "gap"),
                                                                 ("B-2", "end_of_data")]


def test_per_tag_offsets_line_up_readings_of_one_scan() -> None:
    # PV is time-stamped 1.5 s after its scan: on a 2 s grid the stepped state at t is the previous
    # scan's reading unless the offset corrects the clock.
    rows = [(t + 1.5, "PV", float(t)) for t in range(0, 100, 2)] + [(t + 0.1, "SP", 1.0) for t in range(0, 100, 2)]
    spec = base_spec(control_period="2s", max_gap="3s")
    skewed, _ = telemetry_to_transitions(long_frame(rows), spec)
    seconds = (skewed.timestamp - T0_US) / 1e6
    assert (skewed.obs[:, 0] == seconds - 2).all()
    for offset in ("-1.5s", -1.5, "-1500ms"):
        fixed_spec = base_spec(control_period="2s", max_gap="3s",
                               observations=[{"tag": "PV", "alignment": "stepped", "offset": offset}])
        fixed, _ = telemetry_to_transitions(long_frame(rows), fixed_spec)
        assert (fixed.obs[:, 0] == (fixed.timestamp - T0_US) / 1e6).all()
    with pytest.raises(ConfigError, match="two different offsets"):
        telemetry_to_transitions(long_frame(rows), base_spec(
            observations=[{"tag": "PV", "offset": "-1s"}], auxiliary=[{"tag": "PV", "name": "pv2", "offset": "1s"}]))


def test_the_audit_names_the_tag_behind_each_lost_step_and_split() -> None:
    spec = base_spec(observations=_pv_gap("5s"), extra_state=[{"tag": "AUX", "alignment": "stepped", "max_gap": "5s"}])
    rows = _plant(300, skip=(61, 120)) + [(t, "AUX", 1.0) for t in range(0, 301, 2) if not 200 <= t < 230]
    _, report = telemetry_to_transitions(long_frame(rows), spec)
    report.check_accounting()
    tags = {t.tag: t for t in report.tags}
    assert [e.end_reason for e in report.episodes] == ["gap", "gap", "end_of_data"]
    assert (tags["PV"].dropped_steps, tags["PV"].splits) == (5, 1)
    assert (tags["AUX"].dropped_steps, tags["AUX"].splits) == (2, 1)
    assert (tags["SP"].dropped_steps, tags["SP"].splits) == (0, 0)
    assert sum(t.dropped_steps for t in report.tags) >= report.dropped_steps["invalid_state"]
    assert "by tag (lost steps; gap splits): PV 5; 1, AUX 2; 1" in report.format()


def test_a_tag_logged_less_often_than_its_hold_is_warned_about() -> None:
    rows = [(t, "PV", float(t)) for t in range(0, 601, 2)] + [(t + 1, "SP", 50.0) for t in range(0, 600, 60)]
    rows[-2] = (481, "SP", np.nan, 0x80000000)  # a bad sample the hold_bad of 10 s could never bridge
    spec = base_spec(max_gap="30s", hold_bad="10s",
                     actions=[{"tag": "SP", "alignment": "stepped", "low": 0.0, "high": 100.0}])
    _, report = telemetry_to_transitions(long_frame(rows), spec)
    sp_warnings = [w for w in report.warnings if "'SP'" in w]
    assert len(sp_warnings) == 2
    assert "logged every 60" in sp_warnings[0] and "longer than its max_gap 30 s" in sp_warnings[0]
    assert "hold_bad 10 s is not longer than its logging interval" in sp_warnings[1]
    assert not [w for w in report.warnings if "'PV'" in w]
    assert f"warning: {sp_warnings[0]}" in report.format()
    tags = {t.tag: t for t in report.tags}
    assert tags["SP"].median_interval_s == pytest.approx(60, rel=0.02)
    assert tags["PV"].median_interval_s == pytest.approx(2, rel=0.02)
