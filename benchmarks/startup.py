"""Start-up benchmark: `dime-offline --help` and the `data` commands in fresh processes.

Issue 10's target: `--help` and every `data` command take at most 0.5 s and never import torch (a
torch import alone takes 1-5 s). Each command runs ``--repeats`` times in a fresh process,
alternating with the baselines, which measure what any Python CLI pays: the interpreter itself
(``python -c pass``) and ``minari --help`` (the reference the issue names; skipped when minari is
not installed). Printed per command: median wall and CPU seconds (CPU counts the process's own
work, so it stays meaningful on a shared machine), and the load average before and after.

`data make-telemetry` simulates the plant (0.1 h here), so its time is start-up plus a little work;
`data from-telemetry` converts the repository's small historian sample.

Run:  python benchmarks/startup.py                 (7 repeats)
      python benchmarks/startup.py --repeats 2     (quick)
      python benchmarks/startup.py --against DIR   (each command also with DIR first on PYTHONPATH,
                                                     alternating: e.g. another typer version put there
                                                     by `pip install --no-deps --target DIR typer==0.29.2`)
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "datasets" / "samples" / "pendulum-random-tiny.parquet"
HISTORIAN = ROOT / "datasets" / "samples" / "cstr-historian-sample.csv"
CSTR_SPEC = ROOT / "datasets" / "specs" / "telemetry" / "cstr.yaml"
TARGET_SECONDS = 0.5


def commands(tmp: Path) -> dict[str, list[str]]:
    """Name -> argv of each measured command (and the baselines)."""
    script = shutil.which("dime-offline", path=str(Path(sys.executable).parent))  # what a user runs
    cli = [script] if script is not None else [sys.executable, "-m", "dime_offline_cli.main"]
    measured = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "--help": [*cli, "--help"],
        "--version": [*cli, "--version"],
        "data --help": [*cli, "data", "--help"],
        "data inspect": [*cli, "data", "inspect", str(SAMPLE), "--json"],
        "data convert (parquet)": [*cli, "data", "convert", str(SAMPLE), str(tmp / "out.parquet")],
        "data convert (hdf5)": [*cli, "data", "convert", str(SAMPLE), str(tmp / "out.hdf5")],
        "data profile": [*cli, "data", "profile", str(HISTORIAN), "--json"],
        "data from-telemetry": [*cli, "data", "from-telemetry", str(HISTORIAN), "--spec", str(CSTR_SPEC),
                                "--out", str(tmp / "cstr.parquet")],
        "data make-telemetry (0.1 h)": [*cli, "data", "make-telemetry", "--out", str(tmp / "h.csv"), "--hours", "0.1"],
    }
    minari = shutil.which("minari", path=str(Path(sys.executable).parent)) or shutil.which("minari")
    if minari is not None:
        measured["minari --help (reference)"] = [minari, "--help"]
    return measured


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh process running ``argv``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="Fresh processes per command (median reported).")
    parser.add_argument("--against", type=Path, default=None,
                        help="A folder of other package versions: every command is also run with it first on "
                             "PYTHONPATH, alternating with the plain run, and the ratio printed.")
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as folder:
        measured = commands(Path(folder))
        # As an installed package starts: with its bytecode cached (pip compiles it at install; an
        # editable checkout writes it on first use unless PYTHONDONTWRITEBYTECODE is set, as it is on
        # some CI machines). The caches go to a temporary folder, written by one warm-up round.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(Path(folder) / "pycache")
        envs = {"": env}
        if args.against is not None:
            pythonpath = os.pathsep.join(p for p in (str(args.against.resolve()), env.get("PYTHONPATH")) if p)
            envs["against"] = {**env, "PYTHONPATH": pythonpath}
        for argv in measured.values():
            for variant in envs.values():
                run_once(argv, variant)
        times = {(name, key): [] for name in measured for key in envs}
        for _ in range(args.repeats):  # alternating, so a change in load hits every command alike
            for name, argv in measured.items():
                for key, variant in envs.items():
                    times[name, key].append(run_once(argv, variant))
    against = f"; 'against' = {args.against} first on PYTHONPATH" if args.against is not None else ""
    print(f"{'command':40s} {'wall s':>8s} {'cpu s':>8s}  (median of {args.repeats}; target <= {TARGET_SECONDS} s{against})")
    for (name, key), samples in times.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        ratio = ""
        if key:
            plain = statistics.median(w for w, _ in times[name, ""])
            ratio = f"  plain/against {plain / wall:.2f}"
        print(f"{name + (f' [{key}]' if key else ''):40s} {wall:8.3f} {cpu:8.3f}{ratio}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
