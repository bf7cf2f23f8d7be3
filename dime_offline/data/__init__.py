"""Canonical transitions, dataset adapters and the replay store."""

from dime_offline.data.schema import SCHEMA_VERSION, DatasetMetadata, TransitionData

__all__ = ["SCHEMA_VERSION", "DatasetMetadata", "TransitionData"]
