"""The README's main job, several seeds: does it show learning, and how long does it take?

Runs ``dime-offline run --data <sample> --seed S`` with the defaults for each seed, one after the
other (nothing else should run beside it: the wall time is part of the result), and reports per
seed the offline and online curves, the final scores against the logged data's mean return, the
first online evaluation against the boundary (the dip) and the wall time, with load averages.

    python benchmarks/main_job.py --seeds 0 1 2 --out cache/main-job
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--out", default="cache/main-job")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="passed to `run --set`")
    args = parser.parse_args()
    cli = Path(sys.executable).with_name("dime-offline")
    rows = []
    for seed in args.seeds:
        out = Path(args.out) / f"seed{seed}"
        load_before = os.getloadavg()
        start = time.perf_counter()
        command = [str(cli), "run", "--data", args.data, "--seed", str(seed), "--out", str(out), "--overwrite", "--json"]
        for item in args.set:
            command += ["--set", item]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"seed {seed} failed: {done.stderr.strip()}")
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        boundary = summary["offline_return_mean"]
        row = {
            "seed": seed,
            "data_return_mean": summary["data_return_mean"],
            "offline_curve": [round(v, 1) for _, v in summary["offline_curve"]],
            "online_curve": [round(v, 1) for _, v in summary["online_curve"]],
            "offline": round(boundary, 1),
            "online": round(summary["online_return_mean"], 1),
            "offline_above_data": boundary > summary["data_return_mean"],
            "online_above_offline": summary["online_return_mean"] > boundary,
            "first_online_minus_boundary": round(summary["online_curve"][0][1] - boundary, 1),
            "wall_seconds": round(wall, 1),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "main_job.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
