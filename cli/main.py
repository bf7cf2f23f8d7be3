"""Entry point of the ``dime-offline`` command.

Each command module registers its commands on the apps below; this file only mounts them.
"""

from __future__ import annotations

import os

# Before torch is imported: OpenMP threads that spin while waiting make a 2-thread update up to
# 50x slower when the machine is shared (measured in benchmarks/update_speed.py); sleeping threads
# cost little on an idle machine. A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import typer  # noqa: E402

app = typer.Typer(
    name="dime-offline",
    help="Offline-to-online RL with DIME diffusion policies: data tools, pretraining, fine-tuning.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect, validate and convert datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.callback()
def _root() -> None:
    """dime-offline command line."""


def _register() -> None:
    # Command modules attach their commands to `app` / `data_app` on import.
    from . import data as _data  # noqa: F401
    from . import pretrain as _pretrain  # noqa: F401
    from . import run as _run  # noqa: F401
    from . import telemetry as _telemetry  # noqa: F401
    from . import train as _train  # noqa: F401


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
