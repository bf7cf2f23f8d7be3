"""Canonical transitions, dataset adapters and the replay store."""

from dime_offline.data.schema import SCHEMA_VERSION, DatasetMetadata, TransitionData

__all__ = ["SCHEMA_VERSION", "DatasetMetadata", "TransitionData", "load_dataset", "save_dataset"]


def __getattr__(name: str) -> object:
    # The adapters pull in pyarrow/pandas; import them only when a loader is first used.
    if name in ("load_dataset", "save_dataset"):
        from dime_offline.data import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
