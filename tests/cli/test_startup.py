"""`dime-offline --help` and every `data` command start without torch (1-5 s to import), in a fresh process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets" / "samples" / "pendulum-random-tiny.parquet"
HISTORIAN = ROOT / "datasets" / "samples" / "cstr-historian-sample.csv"
CSTR_SPEC = ROOT / "datasets" / "specs" / "telemetry" / "cstr.yaml"

# Runs the command in-process and exits 3 when torch (or gymnasium, which data commands never need) was imported.
PROBE = """
import sys
from typer.testing import CliRunner
from dime_offline_cli.main import app
result = CliRunner().invoke(app, sys.argv[1:])
if result.exit_code != 0:
    sys.stderr.write(result.output)
    sys.exit(1)
heavy = sorted(m for m in ("torch", "gymnasium") if m in sys.modules)
sys.exit(3 if heavy else 0)
"""

COMMANDS = {
    "help": ["--help"],
    "version": ["--version"],
    "data-help": ["data", "--help"],
    "config-help": ["config", "--help"],
    "train-help": ["pretrain", "--help"],
    "inspect": ["data", "inspect", str(SAMPLE), "--json"],
    "convert-parquet": ["data", "convert", str(SAMPLE), "{tmp}/out.parquet", "--env-id", "Pendulum-v1"],
    "convert-hdf5": ["data", "convert", str(SAMPLE), "{tmp}/out.hdf5"],
    "profile": ["data", "profile", str(HISTORIAN), "--json"],
    "from-telemetry": ["data", "from-telemetry", str(HISTORIAN), "--spec", str(CSTR_SPEC), "--out", "{tmp}/cstr.parquet"],
}


@pytest.mark.parametrize("name", COMMANDS)
def test_command_does_not_import_torch(name: str, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path) for a in COMMANDS[name]]
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode != 3, f"dime-offline {' '.join(args)} imported torch or gymnasium"
    assert done.returncode == 0, done.stderr
