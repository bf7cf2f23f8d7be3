"""What every command shares: one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import errno
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dime_offline.errors import DimeOfflineError

F = TypeVar("F", bound=Callable[..., Any])

USER_ERROR_EXIT_CODE = 2

ConfigFileOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/JSON file of the command's config fields (see: dime-offline config show COMMAND)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: key=value, section.field=value (repeatable; see: dime-offline config show COMMAND)."),
]


FILESYSTEM_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EACCES", "EPERM", "EROFS", "ENOSPC", "EDQUOT", "ENOENT", "ENOTDIR", "EISDIR", "ELOOP",
                 "ENAMETOOLONG", "EEXIST", "ENOTEMPTY", "EFBIG", "EMLINK")
    if hasattr(errno, name)
)
"""Filesystem faults that are the user's environment, not a bug: a read-only or full disk, missing
permissions, a path that loops or names a file where a folder is needed."""


def user_errors_exit_2(func: F) -> F:
    """Turn a :class:`DimeOfflineError`, or a filesystem fault naming a path, into one line on stderr
    and the error's exit code (2; 130 for an interrupted run), with no traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DimeOfflineError as err:
            typer.echo(f"error: {err.one_line()}", err=True)
            raise typer.Exit(err.exit_code) from None
        except OSError as err:
            if err.errno not in FILESYSTEM_ERRNOS or err.filename is None:
                raise
            typer.echo(f"error: {err.filename}: {err.strerror} (check that the path exists, is writable and has space)", err=True)
            raise typer.Exit(USER_ERROR_EXIT_CODE) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Print one JSON object on stdout (the machine-readable summary of a command)."""
    sys.stdout.write(json.dumps(obj, sort_keys=True, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
