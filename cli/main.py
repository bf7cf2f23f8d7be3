"""Entry point of the ``dime-offline`` command.

Each command module attaches its commands to the apps in ``common`` when imported; this file imports
them all and adds the root options.
"""

from __future__ import annotations

import os

# Before torch is imported (libgomp reads it once): how long idle OpenMP threads spin before they
# sleep. Sleeping at once (OMP_WAIT_POLICY=PASSIVE) doubled a cpu-preset update on an idle 2-core
# machine (75 vs 34 ms); libgomp's default spin (300k rounds) is as fast idle but 10x slower when
# three 2-thread runs share the 2 cores (420 vs 42 ms). A bounded spin keeps the idle speed and
# halves that worst case (docs/benchmarks.md, "OpenMP waiting"). A user's own setting wins; several
# runs on one machine should set torch_threads=1 each.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import typer

from .common import app


def _print_version(value: bool) -> None:
    if value:
        from dime_offline import (
            __version__,  # no torch: the package's __init__ imports nothing heavy
        )

        typer.echo(f"dime-offline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_print_version, is_eager=True),
) -> None:
    """dime-offline command line."""


def _register() -> None:
    # Command modules attach their commands to `app` / `data_app` on import.
    from . import compare as _compare  # noqa: F401
    from . import config as _config  # noqa: F401
    from . import data as _data  # noqa: F401
    from . import ope as _ope  # noqa: F401
    from . import pretrain as _pretrain  # noqa: F401
    from . import run as _run  # noqa: F401
    from . import sweep as _sweep  # noqa: F401
    from . import telemetry as _telemetry  # noqa: F401
    from . import train as _train  # noqa: F401


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
