"""The continuity check (next_obs[t] == obs[t+1] inside an episode) against its row-by-row definition."""

from __future__ import annotations

import numpy as np
import pytest
from data_factories import make_data

from dime_offline.data import schema
from dime_offline.data.schema import CONTINUITY_RTOL, TransitionData


def reference_breaks(data: TransitionData) -> tuple[list[int], list[float]]:
    """The definition, one row at a time: |next_obs - obs'| <= rtol * max(1, |obs'|) in every feature."""
    rows, diffs = [], []
    for t in range(len(data) - 1):
        if data.episode_id[t] != data.episode_id[t + 1]:
            continue
        following = data.obs[t + 1].astype(np.float64)
        with np.errstate(invalid="ignore"):  # inf - inf
            diff = np.abs(data.next_obs[t].astype(np.float64) - following)
        if not np.all(diff <= CONTINUITY_RTOL * np.maximum(1.0, np.abs(following))):
            rows.append(t)
            diffs.append(float(np.nan_to_num(diff, nan=np.inf).max()))
    return rows, diffs


@pytest.mark.parametrize("screen_rows", [5, 65536])
def test_breaks_match_the_row_by_row_definition(monkeypatch: pytest.MonkeyPatch, screen_rows: int) -> None:
    monkeypatch.setattr(schema, "SCREEN_ROWS", screen_rows)  # 5: many screen chunks, seams inside episodes
    data = make_data([7, 1, 9, 6, 12], obs_dim=4)
    data.obs[6:, :] *= 100.0  # large values: the relative tolerance dominates
    data.next_obs[5:, :] *= 100.0
    data.obs[4, 2], data.next_obs[3, 2] = 5.0, 5.0 * (1 + 0.5 * CONTINUITY_RTOL)  # within the tolerance: no break
    data.next_obs[9, 1] = data.obs[10, 1] + 3.0 * CONTINUITY_RTOL * max(1.0, abs(float(data.obs[10, 1])))  # just outside
    data.next_obs[11, 0] = np.nan  # NaN never matches
    data.obs[12:14, 1] = data.next_obs[11:13, 1] = 3e38  # finite and continuous, but their sum overflows float32
    data.obs[14, 3] = np.inf  # nor does inf against inf's neighbour
    data.next_obs[13, 3] = np.inf
    data.obs[19, 0], data.next_obs[18, 0] = 0.0, -0.0  # signed zeros are equal
    data.next_obs[6, :] += 1e6  # an episode's last row: never compared with the next episode
    data.next_obs[21, :] -= 7.0  # several features of one row
    rows, diffs = data.continuity_breaks()
    expected_rows, expected_diffs = reference_breaks(data)
    assert rows.tolist() == expected_rows == [9, 11, 13, 21]
    np.testing.assert_allclose(diffs, expected_diffs)
    assert diffs[1] == np.inf


def test_a_continuous_dataset_has_no_breaks() -> None:
    data = make_data([3, 1, 4])
    rows, diffs = data.continuity_breaks()
    assert rows.dtype == np.int64 and rows.size == 0 and diffs.size == 0
