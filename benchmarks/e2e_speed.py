"""End-to-end training speed through the CLI, against the fp32 FLOP bound measured in the same run.

Two jobs, each run as a user runs it (``dime-offline ... --json`` in a subprocess), alternating the
compared settings (``--variants``, default: float32 products vs the default ``auto``) for
``--repeats`` rounds:

* **online**: ``dime-offline finetune --env HalfCheetah-v4`` from scratch, ``--warmup`` random steps
  then ``--steps`` steps with ``utd`` updates each; the rate is env steps per second of the
  logged intervals after the first one with updates (which holds the first update), read from
  the run's metrics.csv (``train/updates_per_second`` / utd);
* **pretrain**: ``dime-offline pretrain`` with the default regularisers on a random-policy dataset of
  ``--pretrain-env`` (Hopper-v4 shapes by default; the update's cost does not depend on the data),
  gradient steps per second of the logged intervals after the first;
* **finetune**: ``dime-offline finetune --checkpoint`` of a short pretraining on that dataset, the
  dataset kept as the offline half of each batch (the offline-to-online path, with the online
  regularisers the checkpoint records), ``--steps`` env steps of ``--pretrain-env``, env steps per second.

The bound: FLOPs per env step (online) or per gradient step (pretrain), counted with
``torch.utils.flop_counter`` over one policy-delay cycle of the same agent and regularisers (the
same count whatever the compute dtype), divided by the fp32 matmul rate of this machine, measured
before and after the runs (``update_speed.matmul_gflops``; the higher of the two medians). The
table reports measured rate / bound rate: 1.0 means the job runs as fast as its matrix products
alone would in fp32 at this machine's best rate. Load averages are printed with every run.

``--peers cql iql td3bc`` also times d3rlpy 2.8.1's CQL, IQL or TD3+BC (o2o.py's D4RL-reproduction
settings, batch 256) on the pretrain job's dataset in the same rounds: gradient steps per second of
d3rlpy's own ``fit`` loop over ``--steps`` steps after a 50-step warm-up ``fit``, each in a fresh
process of ``--peer-python`` (an interpreter with d3rlpy installed: benchmarks/README.md), with
2 torch threads like the CLI.

``--trees LABEL=DIR ...`` also runs every variant with the library of another source tree (e.g. a
``git worktree`` of an earlier commit) first on the import path, alternating with this checkout's, so a
change of implementation is measured side by side through the same CLI.

    python benchmarks/e2e_speed.py                              # both jobs, 2 rounds
    python benchmarks/e2e_speed.py --jobs online --steps 100 --warmup 100 --repeats 1   # smoke test
    python benchmarks/e2e_speed.py --jobs pretrain --variants auto --peers cql --peer-python cache/venv-d3rlpy/bin/python
    git worktree add /tmp/base HEAD~3 && python benchmarks/e2e_speed.py --variants auto --trees base=/tmp/base
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.regularizers import OfflineConfig
from update_speed import make_batch, matmul_gflops, update_flops

CLI = [str(Path(sys.executable).with_name("dime-offline"))]
LOG_EVERY = 50
REFERENCE_GFLOP = {("online", "HalfCheetah-v4"): 8.0, ("pretrain", "Hopper-v4"): 7.6}
"""FLOPs per step of the authors' formulation, as issue 8 counts them for its targets: the online
env step of the cpu preset on HalfCheetah (two critic and 2/3 of an actor update; shared/docs
speed-anchors.md section 1) and the pretraining step with the default regularisers on Hopper. The
score net here computes its first layer's observation and time parts once per chain instead of
once per step, so it counts fewer FLOPs (column "GFLOP/step") for the same function."""


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def flops_per_update(obs_dim: int, act_dim: int, phase: str | None) -> float:
    """FLOPs of one gradient step (averaged over a policy-delay cycle) of the cpu preset, with the
    default regularisers of ``phase`` ("offline", "online"; None: none)."""
    cfg = DIMEConfig.preset("cpu", matmul_precision="float32")
    agent = DIMEAgent(obs_dim, act_dim, cfg, seed=0)
    batch = make_batch(obs_dim, act_dim, cfg.batch_size)
    if phase is not None:
        OfflineConfig().attach(agent, phase)
        batch = batch._replace(mc_return=torch.zeros(cfg.batch_size), is_offline=torch.ones(cfg.batch_size))
    agent.update(batch)  # lazily built state (optimiser moments) outside the count
    return update_flops(agent, batch)


def steady_rate(metrics_csv: Path) -> float:
    """Median updates/s over the logged intervals after the first one that holds updates."""
    with open(metrics_csv, newline="") as f:  # long format: step, wall_seconds, key, value
        rates = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "train/updates_per_second"]
    with_updates = [i for i, rate in enumerate(rates) if rate > 0]
    steady = rates[with_updates[0] + 1 :] if with_updates else []
    if not steady:
        raise SystemExit(f"{metrics_csv}: no steady interval logged; raise --steps")
    return statistics.median(steady)


def run_cli(args: list[str], tree: str | None = None) -> dict:
    """``dime-offline ARGS --json``; ``tree``: a source tree whose ``dime_offline`` is imported instead."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(tree).resolve()), env.get("PYTHONPATH")]))
    out = subprocess.run(CLI + args + ["--json"], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], env=env)
    return json.loads(out.stdout)


PEER_WARMUP_STEPS = 50


def peer_probe(method: str, data: str, steps: int) -> float:
    """In a fresh process: d3rlpy ``method``'s gradient steps per second on ``data`` (see the docstring)."""
    import time

    from o2o import build_d3rlpy, fit_d3rlpy

    from dime_offline.data.replay import ReplayStore

    torch.set_num_threads(2)
    algo, dataset = build_d3rlpy(method, ReplayStore.from_parquet(data, online_capacity=0), batch_size=256, seed=0)
    fit_d3rlpy(algo, dataset, PEER_WARMUP_STEPS)  # builds the networks and optimisers
    start = time.perf_counter()
    fit_d3rlpy(algo, dataset, steps)
    return steps / (time.perf_counter() - start)


def run_peer(python: str, method: str, data: Path, steps: int) -> float:
    out = subprocess.run([os.path.abspath(python), __file__, "--peer-probe", method, str(data), str(steps)],
                         check=True, capture_output=True, text=True, cwd=Path(__file__).parent)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", nargs="+", default=["online", "pretrain"], choices=["online", "pretrain", "finetune"])
    parser.add_argument("--variants", nargs="+", default=["float32", "auto"],
                        help="agent.matmul_precision values, or FIELD=VALUE settings (--set) to compare")
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--pretrain-env", default="Hopper-v4")
    parser.add_argument("--warmup", type=int, default=300, help="random env steps before learning (online)")
    parser.add_argument("--steps", type=int, default=300, help="learning env steps (online) / gradient steps (pretrain)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--peers", nargs="*", default=[], choices=["cql", "iql", "td3bc"],
                        help="d3rlpy algorithms timed on the pretrain job's data in the same rounds")
    parser.add_argument("--peer-python", default=sys.executable, help="an interpreter with d3rlpy installed")
    parser.add_argument("--peer-probe", nargs=3, metavar=("METHOD", "DATA", "STEPS"), help=argparse.SUPPRESS)
    parser.add_argument("--trees", nargs="*", default=[], metavar="LABEL=DIR",
                        help="other source trees whose library runs each variant too (e.g. a worktree of an earlier commit)")
    args = parser.parse_args()
    if args.peer_probe:
        method, data, steps = args.peer_probe
        print(peer_probe(method, data, int(steps)))
        return
    if args.peers and "pretrain" not in args.jobs:
        parser.error("--peers times d3rlpy on the pretrain job's data: include pretrain in --jobs")
    trees: dict[str, str | None] = {"": None}
    for item in args.trees:
        label, sep, tree = item.partition("=")
        if not sep or not (Path(tree) / "dime_offline").is_dir():
            parser.error(f"--trees {item!r}: expected LABEL=DIR with DIR/dime_offline")
        trees[f"@{label}"] = tree
    variants = [variant + label for label in trees for variant in args.variants]

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {load()}")
    shapes = [(256, 256, 256), (512, 256, 256), (768, 256, 256)]
    rates_before = matmul_gflops(shapes, repeats=5)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results: dict[tuple[str, str], list[float]] = {}
        data, pretrained = work / "data.parquet", work / "pretrained"
        if {"pretrain", "finetune"} & set(args.jobs):
            run_cli(["collect", "--env", args.pretrain_env, "--policy", "random", "--steps", "5000", "--out", str(data)])
        if "finetune" in args.jobs:
            run_cli(["pretrain", "--data", str(data), "--steps", "20", "--out", str(pretrained), "--set", "eval_every=0",
                     "--set", "tensorboard=false", "--set", "eval_episodes=1", "--set", "max_episode_steps=10"])
        for round_ in range(args.repeats):
            for job in args.jobs:
                for variant in variants:
                    name, _, label = variant.partition("@")
                    tree = trees["@" + label] if label else None
                    out = work / f"{job}-{variant.replace('/', '_')}-{round_}"
                    setting = name if "=" in name else f"agent.matmul_precision={name}"
                    common = ["--out", str(out), "--set", setting, "--set", f"log_every={LOG_EVERY}",
                              "--set", "tensorboard=false", "--set", "eval_episodes=1", "--set", "checkpoint_every=0"]
                    if job == "online":
                        run_cli(["finetune", "--env", args.env, "--steps", str(args.warmup + args.steps),
                                 "--set", f"agent.learning_starts={args.warmup}", "--set", "eval_every=0",
                                 "--set", "max_episode_steps=100", *common], tree)
                        rate = steady_rate(out / "metrics.csv") / DIMEConfig.preset("cpu").utd
                    elif job == "finetune":
                        run_cli(["finetune", "--checkpoint", str(pretrained), "--data", str(data), "--env", args.pretrain_env,
                                 "--steps", str(args.steps), "--set", "eval_every=0", "--set", "max_episode_steps=100", *common], tree)
                        rate = steady_rate(out / "metrics.csv") / DIMEConfig.preset("cpu").utd
                    else:
                        run_cli(["pretrain", "--data", str(data), "--steps", str(args.steps), "--set", "eval_every=0",
                                 "--set", "max_episode_steps=100", *common], tree)
                        rate = steady_rate(out / "metrics.csv")
                    results.setdefault((job, variant), []).append(rate)
                    print(f"round {round_} {job:<8} {variant:<9} {rate:6.2f}/s   load {load()}", flush=True)
                if job == "pretrain":
                    for peer in args.peers:
                        rate = run_peer(args.peer_python, peer, data, args.steps)
                        results.setdefault(("pretrain", f"d3rlpy-{peer}"), []).append(rate)
                        print(f"round {round_} pretrain d3rlpy-{peer:<5} {rate:6.2f}/s   load {load()}", flush=True)
    rates_after = matmul_gflops(shapes, repeats=5)
    ceiling = max(max(rates_before.values()), max(rates_after.values()))
    print("fp32 matmul GFLOP/s before: " + ", ".join(f"{k} {v:.0f}" for k, v in rates_before.items())
          + "; after: " + ", ".join(f"{k} {v:.0f}" for k, v in rates_after.items()))

    env_dims = {"online": args.env, "pretrain": args.pretrain_env, "finetune": args.pretrain_env}
    phases = {"online": None, "pretrain": "offline", "finetune": "online"}
    width = max(9, *(len(v) for v in variants))
    header = (f"{'job':<9} {'variant':<{width}} {'rate /s':>8} {'[min-max]':>13} {'GFLOP/step':>10} {'bound /s':>8} {'x bound':>7}"
              f" {'ref GFLOP':>9} {'ref bound':>9} {'x ref':>6}")
    print(header)
    print("-" * len(header))
    for job in args.jobs:
        env = gym.make(env_dims[job])
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        per_update = flops_per_update(obs_dim, act_dim, phases[job])
        per_step = per_update * (1 if job == "pretrain" else DIMEConfig.preset("cpu").utd)
        bound = ceiling * 1e9 / per_step
        for variant in variants:
            r = results[(job, variant)]
            med = statistics.median(r)
            reference = REFERENCE_GFLOP.get((job, env_dims[job]))
            ref_cols = "" if reference is None else f" {reference:>9.1f} {ceiling / reference:>9.1f} {med / (ceiling / reference):>6.2f}"
            print(f"{job:<9} {variant:<{width}} {med:>8.2f} {f'[{min(r):.1f}-{max(r):.1f}]':>13} {per_step / 1e9:>10.2f} "
                  f"{bound:>8.1f} {med / bound:>7.2f}{ref_cols}")
        if job == "pretrain":
            for peer in args.peers:
                r = results[("pretrain", f"d3rlpy-{peer}")]
                print(f"{job:<9} {'d3rlpy-' + peer:<{width}} {statistics.median(r):>8.2f} {f'[{min(r):.1f}-{max(r):.1f}]':>13}")
        # Paired: each round's rate over the first variant's rate in the same round (the host's speed
        # drifts between rounds more than it does within one).
        first = results[(job, variants[0])]
        for variant in variants[1:]:
            ratios = [a / b for a, b in zip(results[(job, variant)], first)]
            print(f"{job:<9} {variant} / {variants[0]}: rounds " + ", ".join(f"{x:.2f}" for x in ratios)
                  + f"; median {statistics.median(ratios):.2f}")
        for peer in args.peers if job == "pretrain" else []:
            for variant in variants:  # each DIME variant's rate over the peer's in the same round
                ratios = [a / b for a, b in zip(results[(job, variant)], results[(job, f"d3rlpy-{peer}")])]
                print(f"{job:<9} {variant} / d3rlpy-{peer}: rounds " + ", ".join(f"{x:.2f}" for x in ratios)
                      + f"; median {statistics.median(ratios):.2f}")
    print(f"online, finetune: env steps/s (utd {DIMEConfig.preset('cpu').utd}); pretrain: gradient steps/s; bound = {ceiling:.0f} "
          "GFLOP/s (best fp32 matmul rate measured here) / FLOPs per step; load now " + load())


if __name__ == "__main__":
    main()
