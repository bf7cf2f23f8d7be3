"""Which way of acting scores best: the stochastic chain, the noise-free chain, or best of K by the critics.

For each checkpoint, every mode is evaluated on the same episodes (reset seeds ``--seed + i``):

* ``stochastic``: a sample of the chain per step (the authors' evaluation protocol);
* ``noise_free``: the chain from the prior mean without injected noise;
* ``best_of_K``: K chains on fixed noise per state, the action with the highest mean expected Q
  (IDQL's and SfBC's selection), for each K in ``--candidates``.

    python benchmarks/deterministic_modes.py --checkpoints runs/a runs/b --episodes 20 --json out.json

Prints a table of mean return (and D4RL-normalised score where the checkpoint's env has
references) per checkpoint and mode, and the mean rank of each mode over the checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np

import dime_offline.envs  # noqa: F401  (registers the CSTR twin, dime_offline/CSTR-v0)
from dime_offline.checkpoints import load_checkpoint
from dime_offline.evaluation.rollout import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoints", nargs="+", required=True)
    parser.add_argument("--env", default=None, help="gymnasium id (default: each checkpoint's)")
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--candidates", nargs="+", type=int, default=[4, 16])
    parser.add_argument("--seed", type=int, default=10_000)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    modes = ["stochastic", "noise_free", *(f"best_of_{k}" for k in args.candidates)]
    results: dict[str, dict[str, float]] = {}
    print(f"load {os.getloadavg()}")
    for path in args.checkpoints:
        agent, cfg, meta = load_checkpoint(path)
        agent.adopt_acting_average()  # averaged weights, if kept, in every mode (as `evaluate`)
        env_id = args.env or meta.env_id
        row: dict[str, float] = {}
        for mode in modes:
            if mode.startswith("best_of_"):
                agent.cfg = dataclasses.replace(cfg, deterministic_act="best_of_k", act_candidates=int(mode.split("_")[-1]))
            else:
                agent.cfg = dataclasses.replace(cfg, deterministic_act="noise_free")
            stats = evaluate(agent, env_id, args.episodes, seed=args.seed, deterministic=mode != "stochastic")
            row[mode] = stats.return_mean
            print(f"{path} {mode}: {stats.return_mean:.1f} ± {stats.return_std:.1f}", flush=True)
        results[path] = row
    ranks = {mode: float(np.mean([sorted(r.values(), reverse=True).index(r[mode]) + 1 for r in results.values()]))
             for mode in modes}
    print("| checkpoint | " + " | ".join(modes) + " |")
    print("|---" * (len(modes) + 1) + "|")
    for path, row in results.items():
        print(f"| {path} | " + " | ".join(f"{row[m]:.1f}" for m in modes) + " |")
    print("| mean rank | " + " | ".join(f"{ranks[m]:.2f}" for m in modes) + " |")
    print(f"load {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"results": results, "mean_rank": ranks, "episodes": args.episodes, "seed": args.seed}, handle, indent=2)


if __name__ == "__main__":
    main()
