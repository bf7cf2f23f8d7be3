"""Historian telemetry -> canonical transitions (no torch: runs on an ingest host).

    from dime_offline.converters import TelemetrySpec, telemetry_to_transitions
    data, report = telemetry_to_transitions("historian.csv", "plant.yaml")
    print(report)

See ``docs/telemetry.md`` for the spec format and every alignment, quality and episode rule.
"""

from __future__ import annotations

from dime_offline.converters.pipeline import convert_telemetry, telemetry_to_transitions
from dime_offline.converters.profile import (
    ExportProfile,
    ProfileConfig,
    TagProfile,
    profile_export,
)
from dime_offline.converters.report import ConversionReport, EpisodeReport, TagReport
from dime_offline.converters.spec import (
    ColumnSpec,
    EpisodeSpec,
    ImputeSpec,
    QualitySpec,
    ReaderSpec,
    RewardSpec,
    TagSpec,
    TelemetrySpec,
    TerminalSpec,
    load_spec,
    spec_from_dict,
)

__all__ = [
    "ColumnSpec",
    "ConversionReport",
    "EpisodeReport",
    "EpisodeSpec",
    "ExportProfile",
    "ImputeSpec",
    "ProfileConfig",
    "QualitySpec",
    "ReaderSpec",
    "RewardSpec",
    "TagProfile",
    "TagReport",
    "TagSpec",
    "TelemetrySpec",
    "TerminalSpec",
    "convert_telemetry",
    "load_spec",
    "profile_export",
    "spec_from_dict",
    "telemetry_to_transitions",
]
