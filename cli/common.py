"""What every command shares: the apps it attaches to, one-line errors with exit code 2, JSON output,
the common flags and summary lines.

Command modules import this module only (never ``main`` or each other), so ``cli/`` has no import
cycle: ``main`` imports every command module, which attaches its commands to :data:`app` /
:data:`data_app` on import.
"""

from __future__ import annotations

import errno
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from dime_offline.errors import DimeOfflineError, RunInterruptedError

F = TypeVar("F", bound=Callable[..., Any])

USER_ERROR_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = RunInterruptedError.exit_code

app = typer.Typer(
    name="dime-offline",
    help="Offline-to-online RL with DIME diffusion policies: data tools, pretraining, fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
"""The ``dime-offline`` command (its entry point is ``main.app``, the same object)."""
data_app = typer.Typer(help="Inspect, validate and convert datasets.", no_args_is_help=True)
"""The ``dime-offline data`` group."""
app.add_typer(data_app, name="data")

ConfigFileOption = Annotated[
    Path | None,
    typer.Option("--config", help="YAML/JSON file of the command's config fields (see: dime-offline config show COMMAND)."),
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config field: key=value, section.field=value (repeatable; see: dime-offline config show COMMAND)."),
]
DeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="Torch device of the networks and the replay store: cpu, cuda, cuda:N or mps (default cpu)."),
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON summary object on stdout (no progress bar).")]
ResumeFlag = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue the run in --out from its last checkpoint, with the run's saved settings; with a larger --steps, extend it (a finished run too).",
    ),
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
    and the error's exit code (2; 130 for an interrupted run), with no traceback. A Ctrl-C that no
    training loop turned into a saved stop (one during loading, or a second one) exits 130 too."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DimeOfflineError as err:
            typer.echo(f"error: {err.one_line()}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("error: interrupted", err=True)
            raise typer.Exit(INTERRUPTED_EXIT_CODE) from None
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


def path_text(path: Path | None) -> str | None:
    """A path flag as the config's string field (None stays None: the config's default applies)."""
    return None if path is None else str(path)


def describe_evaluation(block: dict[str, Any]) -> str:
    """One line for an evaluation block: return mean ± std over N episodes, normalised score if known."""
    text = f"return {block['return_mean']:.1f} ± {block['return_std']:.1f} over {block['episodes']} episodes"
    if block.get("normalized_score") is not None:
        text += f", normalised score {block['normalized_score']:.1f}"
    if block.get("terminated_episodes"):
        text += f"; {block['terminated_episodes']} of {block['episodes']} ended in a terminal state (fall, trip)"
    if block.get("time_at_action_bounds"):
        text += f"; {100 * block['time_at_action_bounds']:.0f} % of steps at an action bound"
    return text
