"""A sweep on Ray Tune against the same runs back to back: what does `dime-offline sweep` cost or save?

Plans the sweep file's trials (docs/sweeps/pendulum-run.yaml: 2 settings x 3 seeds of a short `run`),
then times, one after the other: (1) each trial as a `dime-offline run` command, back to back, with
torch's default threads (what a user does without `sweep`); (2) the same trials in one Python process
through the library, back to back; (3) `dime-offline sweep` on local Ray (one trial per core, one torch
thread each). Nothing else should run beside it; load averages are recorded with each figure.

    python benchmarks/sweep_overhead.py --sweep docs/sweeps/pendulum-run.yaml --out cache/sweep-overhead
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# As the CLI does (cli/main.py), before torch loads: a bounded OpenMP spin, so the in-process runs
# are not slowed by idle threads spinning on a shared machine.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from dime_offline.config import from_dict, load_config
from dime_offline.sweep import SweepConfig, entry_points, plan_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="docs/sweeps/pendulum-run.yaml")
    parser.add_argument("--out", default="cache/sweep-overhead")
    parser.add_argument("--modes", nargs="+", default=["cli", "library", "sweep"], choices=["cli", "library", "sweep"])
    args = parser.parse_args()
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    cfg = load_config(SweepConfig, args.sweep)
    trials = plan_trials(dataclasses.replace(cfg, out_dir=str(out / "plan")))
    figures: dict[str, object] = {"sweep_file": args.sweep, "trials": len(trials), "cpus": os.cpu_count()}
    for mode in args.modes:
        load_before = os.getloadavg()
        start = time.perf_counter()
        if mode == "cli":
            run_commands(trials, out / "cli")
        elif mode == "library":
            run_library(trials, out / "library")
        else:
            run_sweep(args.sweep, out / "sweep")
        figures[mode] = {"wall_seconds": round(time.perf_counter() - start, 1), "load_before": [round(x, 2) for x in load_before],
                         "load_after": [round(x, 2) for x in os.getloadavg()]}
        print(json.dumps({mode: figures[mode]}), file=sys.stderr, flush=True)
    if "sweep" in figures:
        for baseline in ("cli", "library"):
            if baseline in figures:
                figures[f"sweep_over_{baseline}"] = round(figures["sweep"]["wall_seconds"] / figures[baseline]["wall_seconds"], 3)  # type: ignore[index]
    print(json.dumps(figures, indent=2))


def _as_single_run(config: dict, run_dir: Path) -> dict:
    """A trial's config as one run alone would have it: its own folder, torch's default threads."""
    return {**config, "out_dir": str(run_dir), "torch_threads": None}


def run_commands(trials: list, root: Path) -> None:
    cli = Path(sys.executable).with_name("dime-offline")
    for trial in trials:
        root.mkdir(parents=True, exist_ok=True)
        config_file = root / f"{trial.name}.json"
        config_file.write_text(json.dumps(_as_single_run(trial.config, root / trial.name)))
        data = ["--data", trial.config["data"]] if trial.config.get("data") else []  # `run` wants it as an option
        subprocess.run([str(cli), trial.command, "--config", str(config_file), *data, "--json"], check=True, capture_output=True)


def run_library(trials: list, root: Path) -> None:
    for trial in trials:
        cls, entry_point = entry_points()[trial.command]
        entry_point(from_dict(cls, _as_single_run(trial.config, root / trial.name)))


def run_sweep(sweep_file: str, root: Path) -> None:
    cli = Path(sys.executable).with_name("dime-offline")
    subprocess.run([str(cli), "sweep", "--config", sweep_file, "--out", str(root), "--json"], check=True, capture_output=True)


if __name__ == "__main__":
    main()
