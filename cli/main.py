"""Entry point of the ``dime-offline`` command.

Each command module registers its commands on the apps below; this file only mounts them.
"""

from __future__ import annotations

import typer

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
    from . import telemetry as _telemetry  # noqa: F401
    from . import train as _train  # noqa: F401


_register()

if __name__ == "__main__":  # pragma: no cover
    app()
