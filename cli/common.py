"""What every command shares: one-line errors with exit code 2, JSON output."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from dime_offline.errors import DimeOfflineError

F = TypeVar("F", bound=Callable[..., Any])

USER_ERROR_EXIT_CODE = 2


def user_errors_exit_2(func: F) -> F:
    """Turn a :class:`DimeOfflineError` into one line on stderr and exit code 2 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DimeOfflineError as err:
            typer.echo(f"error: {err.one_line()}", err=True)
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
