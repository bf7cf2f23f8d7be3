"""Typed errors for user mistakes.

Every error a user can cause by handing us bad input derives from :class:`DimeOfflineError`.
The CLI catches exactly this family, prints ``str(err)`` on one line and exits with code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class DimeOfflineError(Exception):
    """Base class for errors caused by user input (files, configs, environments)."""

    exit_code = 2
    """The CLI's exit status for this error."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.column = column
        self.row = row
        super().__init__(self.one_line())

    def one_line(self) -> str:
        """The message prefixed by where the problem is: ``file: column 'x', row 12: ...``."""
        where = []
        if self.file is not None:
            where.append(str(self.file))
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = " ".join(self.message.split())  # always one line
        return f"{', '.join(where)}: {text}" if where else text


class DataError(DimeOfflineError):
    """A dataset violates the canonical schema or cannot be read."""


class SchemaError(DataError):
    """Columns are missing, misnamed or have the wrong type or width."""


class NonFiniteError(DataError):
    """NaN or infinite values where finite numbers are required."""


class BoundsError(DataError):
    """Values lie outside the declared bounds (e.g. actions outside the action space)."""


class ConsistencyError(DataError):
    """Rows disagree with each other (e.g. next_obs differs from the next row's obs)."""


class DatasetNotFoundError(DataError):
    """A dataset path or id does not exist locally (nothing is ever downloaded)."""


class ConfigError(DimeOfflineError):
    """A configuration file or override is invalid."""


class EnvironmentMismatchError(DimeOfflineError):
    """An environment does not match a checkpoint or dataset (shapes, bounds, id)."""


class CheckpointError(DimeOfflineError):
    """A checkpoint directory is missing, incomplete or from an incompatible version."""


class TrainingDivergedError(DimeOfflineError):
    """Training produced non-finite values (typically a learning rate or reward scale far too large)."""


class TrackerError(DimeOfflineError):
    """An experiment tracker (MLflow, Weights & Biases) is not installed, or refused or lost a run."""


class RunInterruptedError(DimeOfflineError):
    """The user stopped a run (Ctrl-C / SIGINT); a checkpoint of the last completed step was written."""

    exit_code = 130
