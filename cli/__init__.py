"""The dime-offline command line: a thin Typer shell over the library (installed as dime_offline_cli)."""
