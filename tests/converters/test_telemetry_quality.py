"""Quality policy: OPC UA / OPC DA codes, text quality, PI digital states, sentinels, ranges."""

from __future__ import annotations

import numpy as np
import pytest
from telemetry_frames import base_spec, long_frame

from dime_offline.converters import telemetry_to_transitions
from dime_offline.errors import DataError


def _rows(pv_quality: list, values: list | None = None, sp_quality: object = 0) -> list[tuple]:
    """PV at 0, 10, 20, ... with the given qualities; SP every step."""
    values = values or [float(i + 1) for i in range(len(pv_quality))]
    rows = [(10 * i, "PV", v, q) for i, (v, q) in enumerate(zip(values, pv_quality))]
    rows += [(10 * i + 1, "SP", 50.0, sp_quality) for i in range(len(pv_quality))]
    return rows


def _tag(report, tag: str):
    return next(t for t in report.tags if t.tag == tag)


@pytest.mark.parametrize(
    "code, usable",
    [
        (0, True), (0x00960000, True),                     # Good, Good_LocalOverride
        (0x40000000, False), (0x408F0000, False),          # Uncertain (dropped unless keep_uncertain)
        (0x80000000, False), (0x80320000, False), (0xC0000000, False),  # Bad, Bad_..., reserved severity
        ("0x80000000", False), ("Good", True), ("Bad_SensorFailure", False), ("UncertainLastUsableValue", False),
        ("Questionable", False), ("Substituted", False), ("good", True),
    ],
)
def test_opcua_status_codes_and_text_quality(code, usable: bool) -> None:
    q = [0, 0, code, 0, 0]
    data, report = telemetry_to_transitions(long_frame(_rows(q)), base_spec())
    obs = dict(zip(((data.timestamp // 10_000_000) % 10).tolist(), data.obs[:, 0].tolist()))
    assert (2 in obs and obs[2] == 3.0) is usable
    tag = _tag(report, "PV")
    assert tag.bad_fraction + tag.uncertain_fraction == pytest.approx(0.0 if usable else 0.2)
    # bad% counts Bad samples only; uncertain ones are reported apart.
    assert tag.bad_fraction == pytest.approx(0.2 if tag.bad else 0.0)
    assert tag.uncertain_fraction == pytest.approx(0.2 if tag.uncertain else 0.0)


def test_keep_uncertain_uses_uncertain_samples() -> None:
    q = [0, 0, 0x40000000, 0, 0]
    spec = base_spec(quality={"keep_uncertain": True})
    data, report = telemetry_to_transitions(long_frame(_rows(q)), spec)
    assert 3.0 in data.obs[:, 0]
    assert _tag(report, "PV").uncertain == 1 and _tag(report, "PV").bad_fraction == 0.0


def test_opcda_quality_words() -> None:
    q = [192, 192, 64, 0, 216]  # good, good, uncertain, bad, good (local override)
    frame = long_frame(_rows(q, sp_quality=192))
    _data, report = telemetry_to_transitions(frame, base_spec(quality={"numeric_codes": "opcda"}))
    st = _tag(report, "PV")
    assert (st.good, st.uncertain, st.bad) == (3, 1, 1)


def test_unknown_quality_code_is_an_error_naming_code_and_row() -> None:
    frame = long_frame(_rows([0, 0, "Weird", 0]))
    with pytest.raises(DataError) as err:
        telemetry_to_transitions(frame, base_spec())
    line = err.value.one_line()
    assert "'Weird'" in line and "quality.bad" in line and "column 'quality'" in line and "row" in line
    row = err.value.row
    assert frame.iloc[row - 1]["quality"] == "Weird"


def test_unknown_quality_code_can_be_declared_bad() -> None:
    spec = base_spec(quality={"unknown": "bad"})
    _, report = telemetry_to_transitions(long_frame(_rows([0, 0, "Weird", 0])), spec)
    assert _tag(report, "PV").bad == 1
    spec = base_spec(quality={"good": ["Weird"]})
    _, report = telemetry_to_transitions(long_frame(_rows([0, 0, "Weird", 0])), spec)
    assert _tag(report, "PV").bad == 0


def test_pi_digital_states_in_the_value_column_are_bad_and_tallied() -> None:
    values = [1.0, 2.0, "Bad Input", 4.0, 5.0, "I/O Timeout", "Shutdown", 8.0, 9.0, "No Data", 11.0, 12.0, "Bad Input"]
    data, report = telemetry_to_transitions(long_frame(_rows([0] * len(values), values)), base_spec())
    st = _tag(report, "PV")
    assert st.text_states == {"Bad Input": 2, "I/O Timeout": 1, "Shutdown": 1, "No Data": 1}
    assert st.bad == 5
    assert np.isfinite(data.obs).all()
    assert set(data.obs[:, 0].tolist()) == {1.0, 4.0, 8.0, 11.0}


def test_sentinels_and_valid_range_are_bad() -> None:
    values = [1.0, -9999.0, 3.0, 500.0, 5.0, 6.0]
    spec = base_spec(
        observations=[{"tag": "PV", "alignment": "stepped", "valid_min": 0.0, "valid_max": 100.0}],
        quality={"sentinels": [-9999]},
    )
    data, report = telemetry_to_transitions(long_frame(_rows([0] * 6, values)), spec)
    st = _tag(report, "PV")
    assert st.sentinels == 1 and st.out_of_range == 1 and st.bad == 2
    assert data.obs[:, 0].max() <= 100.0 and data.obs[:, 0].min() >= 0.0


def test_obs_valid_marks_imputed_values() -> None:
    values = [1.0, 2.0, "Bad Input", 4.0, 5.0]
    spec = base_spec(impute={"max_steps": 1})
    data, report = telemetry_to_transitions(long_frame(_rows([0] * 5, values)), spec)
    bridged = np.flatnonzero(~data.obs_valid[:, 0])
    assert len(bridged) == 1
    assert data.obs[bridged[0], 0] == 2.0  # held from the past, never from the future
    assert report.imputed_values == 1 and report.episode_count == 1
