"""Helpers for the telemetry converter tests: hand-built historian frames and specs.

(A plain module, not conftest.py: test modules import it by a name no other test folder uses.)
"""

from __future__ import annotations

from typing import Any

import pandas as pd

T0 = pd.Timestamp("2024-01-01T00:00:00Z").as_unit("us")
"""Time origin of the hand-built frames (the grid is aligned to it)."""
T0_US = int(T0.timestamp()) * 1_000_000
"""T0 in microseconds since the epoch (``Timestamp.value`` is nanoseconds whatever the unit)."""


def long_frame(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    """A long export from (seconds after T0, tag, value[, quality]) tuples, sorted by time."""
    has_quality = any(len(r) > 3 for r in rows)
    data = {
        "timestamp": [T0 + pd.Timedelta(seconds=r[0]) for r in rows],
        "tag": [r[1] for r in rows],
        "value": [r[2] for r in rows],
    }
    if has_quality:
        data["quality"] = [r[3] if len(r) > 3 else 0 for r in rows]
    df = pd.DataFrame(data)
    return df.sort_values("timestamp", kind="stable").reset_index(drop=True)


def base_spec(**overrides: Any) -> dict[str, Any]:
    """A 10 s grid with one analog PV observation and one stepped setpoint action."""
    spec: dict[str, Any] = {
        "control_period": "10s",
        "observations": [{"tag": "PV", "alignment": "stepped"}],
        "actions": [{"tag": "SP", "alignment": "stepped", "low": 0.0, "high": 100.0}],
        "reward": {"expression": "-abs(next_PV - SP)"},
        "max_gap": "1h",
    }
    spec.update(overrides)
    return spec


def ramp_rows(seconds: int, every: int = 1, tag: str = "PV", start: float = 0.0, slope: float = 1.0) -> list[tuple[Any, ...]]:
    """A tag reported every ``every`` s with value start + slope * t."""
    return [(t, tag, start + slope * t) for t in range(0, seconds + 1, every)]
