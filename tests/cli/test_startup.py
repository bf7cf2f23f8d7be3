"""`dime-offline --help` and every `data` command start without torch (1-5 s to import), in a fresh process;
reading and writing canonical Parquet and the telemetry commands do not import pandas either (0.2-0.6 s).
Smaller imports are kept off the paths that do not need them, each worth 0.03-0.15 s of a 0.5 s budget
(benchmarks/startup.py): pydantic (typer >= 0.29 coerces every parameter through it, hence the pin in
pyproject.toml), PyYAML where no config or spec is read, pyarrow.compute and numpy.ma for canonical Parquet."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dime_offline.data.load import load_dataset, save_dataset

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "datasets" / "samples" / "pendulum-random-tiny.parquet"
HISTORIAN = ROOT / "datasets" / "samples" / "cstr-historian-sample.csv"
CSTR_SPEC = ROOT / "datasets" / "specs" / "telemetry" / "cstr.yaml"

# Runs the command (argv[2:]) in-process and exits 3 when one of the modules in argv[1] was imported.
PROBE = """
import sys
from typer.testing import CliRunner
from dime_offline_cli.main import app
result = CliRunner().invoke(app, sys.argv[2:])
if result.exit_code != 0:
    sys.stderr.write(result.output)
    sys.exit(1)
sys.exit(3 if any(m in sys.modules for m in sys.argv[1].split(",")) else 0)
"""


def _probe(modules: str, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, modules, *args], cwd=ROOT, capture_output=True, text=True, check=False)


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
    "make-telemetry": ["data", "make-telemetry", "--out", "{tmp}/historian.csv", "--hours", "0.1",
                       "--truth", "{tmp}/truth.csv"],
}
AVOIDED = {
    "inspect": "torch,gymnasium,pydantic,yaml,pyarrow.compute,numpy.ma",
    "convert-parquet": "torch,gymnasium,pydantic,yaml,pyarrow.compute,numpy.ma",
    "profile": "torch,gymnasium,pydantic,pandas,numpy.ma",  # telemetry is read and written with numpy and
    "from-telemetry": "torch,gymnasium,pydantic,pandas",  # pyarrow alone: pandas would cost 0.2 s
    "make-telemetry": "torch,pydantic,pandas",  # simulates the CSTR twin, a gymnasium environment
}
"""Modules a command must not import, where they differ from torch, gymnasium and pydantic."""


@pytest.mark.parametrize("name", COMMANDS)
def test_command_does_not_import_torch(name: str, tmp_path: Path) -> None:
    args = [a.format(tmp=tmp_path) for a in COMMANDS[name]]
    modules = AVOIDED.get(name, "torch,gymnasium,pydantic")
    done = _probe(modules, args)
    assert done.returncode != 3, f"dime-offline {' '.join(args)} imported one of {modules}"
    assert done.returncode == 0, done.stderr


def test_parquet_inspect_and_convert_do_not_import_pandas(tmp_path: Path) -> None:
    data = load_dataset(SAMPLE)
    n = len(data)
    # The optional columns too: timestamps and string episode keys.
    keyed = dataclasses.replace(
        data, timestamp=1_700_000_000_000_000 + 50_000 * np.arange(n, dtype=np.int64),
        episode_key=np.asarray([f"batch-{e}" for e in data.episode_id], dtype=object),
    )
    source, target = tmp_path / "keyed.parquet", tmp_path / "out.parquet"
    save_dataset(keyed, source)
    for args in (["data", "inspect", str(source), "--json"], ["data", "convert", str(source), str(target)]):
        done = _probe("pandas,torch", args)
        assert done.returncode == 0, f"dime-offline {' '.join(args)}: {done.stderr or 'imported pandas or torch'}"
    back = load_dataset(target)
    np.testing.assert_array_equal(back.timestamp, keyed.timestamp)
    np.testing.assert_array_equal(back.episode_key, keyed.episode_key)
    np.testing.assert_array_equal(back.obs, keyed.obs)
    np.testing.assert_array_equal(back.terminated, keyed.terminated)
