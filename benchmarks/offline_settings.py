"""Offline-stage settings, measured side by side: temperature, critic reduction, batch renorm, weights.

Each variant is ``dime-offline pretrain`` on the same dataset, seeds and budget with a few
``--set`` overrides on top of the defaults (``VARIANTS``). Reported per variant (mean over seeds):

* the evaluation return at the end and the best over the run (stochastic policy, the library's
  protocol), and the normalised score of the final one when the dataset has reference returns;
* ``q_data - mc``: the critics' mean value at the data actions minus the data's mean discounted
  return-to-go at the end (a positive number is over-estimation on the data itself);
* ``gap`` (conservative penalty's soft-max minus data value), ``alpha``, updates per second.

Results are stored per (variant, seed) as JSON under ``--out``/results and reused (``--force``
reruns), so the study can run in pieces; ``--report`` prints the table from stored results::

    python benchmarks/offline_settings.py --data cache/datasets/pendulum-medium-replay-dime.parquet \
        --steps 4000 --seeds 0 --variants base plain alpha-fixed-0.1
    python benchmarks/offline_settings.py --data ... --report

docs/algorithm.md ("Offline stage") records the figures and the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dime_offline.config import load_run_config
from dime_offline.data.replay import ReplayStore
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.offline import PretrainConfig, pretrain

AUTO = "offline.alpha_mode=auto"
CSTR_DEMO = ["offline.behaviour_weight=10", "offline.behaviour_scored_steps=4"]
"""The CSTR demo's behaviour weight with 4 scored kernels: the base of the CSTR studies' variants."""

VARIANTS: dict[str, list[str]] = {
    "base": [],
    "auto": [AUTO],
    "plain": ["offline.conservative_weight=0", "offline.behaviour_weight=0", AUTO],
    "alpha-fixed-1": ["offline.alpha_mode=fixed", "offline.alpha=1.0"],
    "alpha-fixed-0.1": ["offline.alpha_mode=fixed", "offline.alpha=0.1"],
    "alpha-fixed-0.01": ["offline.alpha_mode=fixed", "offline.alpha=0.01"],
    "target-8": [AUTO, "offline.target_entropy_per_dim=-8"],
    "actor-min": [AUTO, "offline.actor_q_reduction=min"],
    "brn-warmup-1k": [AUTO, "agent.brn_warmup_steps=1000"],
    "conservative-0": ["offline.conservative_weight=0"],
    "conservative-0.1": [AUTO, "offline.conservative_weight=0.1"],
    "conservative-0.9": ["offline.conservative_weight=0.9"],
    "calibration-off": ["offline.calibration=false"],
    "behaviour-0": [AUTO, "offline.behaviour_weight=0"],
    "behaviour-1": [AUTO, "offline.behaviour_weight=1"],
    "fixed-behaviour-1": ["offline.behaviour_weight=1"],
    "fixed-behaviour-10": ["offline.behaviour_weight=10"],
    "behaviour-steps-4": ["offline.behaviour_scored_steps=4"],
    "behaviour-steps-2": ["offline.behaviour_scored_steps=2"],
    "behaviour-10-steps-4": CSTR_DEMO,
    "behaviour-10-steps-4-min": [*CSTR_DEMO, "offline.actor_q_reduction=min"],
    "behaviour-10-steps-4-conservative-0.9": [*CSTR_DEMO, "offline.conservative_weight=0.9"],
    "behaviour-10-steps-4-conservative-0.1": [*CSTR_DEMO, "offline.conservative_weight=0.1"],
    "behaviour-10-steps-4-calibration-off": [*CSTR_DEMO, "offline.calibration=false"],
    "n-actions-1": ["offline.n_actions=1"],
    "n-actions-2": ["offline.n_actions=2"],
    "n-actions-4": ["offline.n_actions=4"],
    "n-actions-10": ["offline.n_actions=10"],
    "fixed-0.1-min": ["offline.alpha_mode=fixed", "offline.alpha=0.1", "offline.actor_q_reduction=min"],
    "fixed-0.1-min-brn1k": ["offline.alpha_mode=fixed", "offline.alpha=0.1", "offline.actor_q_reduction=min",
                            "agent.brn_warmup_steps=1000"],
}
"""Variant name -> ``--set`` overrides on top of the defaults."""

STUDY_AGENT = ["agent.critic_hidden=[128,128]", "agent.score_hidden=[128,128]", "agent.score_frequencies=64", "agent.score_time_hidden=64"]
"""Smaller networks than the "cpu" preset (same algorithm, N = 16 steps) so a study fits a shared 2-core CPU."""


def run_variant(name: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    overrides = [*args.agent_set, *VARIANTS[name]]
    out = Path(args.out) / "runs" / f"{name}-s{seed}"
    cfg = load_run_config(
        PretrainConfig, None, overrides, data=args.data, steps=args.steps, seed=seed, out_dir=str(out), overwrite=True,
        preset="cpu", eval_every=args.eval_every, eval_episodes=args.eval_episodes, tensorboard=False, quiet=True,
        checkpoint_every=0, torch_threads=args.threads, log_every=min(1000, args.steps),
    )
    started = time.monotonic()
    result = pretrain(cfg)
    metrics = read_metrics_csv(result.metrics_csv)

    def last(key: str) -> float | None:
        series = metrics.get(key)
        return None if series is None else float(series[1][-1])

    store = ReplayStore.from_parquet(args.data, online_capacity=0, gamma=result.agent.cfg.gamma)
    mc_mean = float(store.mc_return[: store.offline_size].mean())
    evals = [(r.step, r.stats.return_mean) for r in result.loop.evaluations]
    final = result.loop.final
    return {
        "variant": name,
        "seed": seed,
        "overrides": overrides,
        "steps": args.steps,
        "evaluations": evals,
        "final_return": None if final is None else final.stats.return_mean,
        "final_score": None if final is None else final.stats.normalized_score,
        "best_return": None if result.loop.best is None else result.loop.best.stats.return_mean,
        "q_data": last("train/critic/q_data"),
        "mc_mean": mc_mean,
        "gap": last("train/conservative/gap"),
        "alpha": last("train/alpha/value"),
        "updates_per_second": result.loop.updates_per_second,
        "wall_seconds": time.monotonic() - started,
    }


def report(results: list[dict[str, Any]]) -> str:
    rows = ["| variant | seeds | final return | best return | final score | q_data - mc | gap | alpha | updates/s |",
            "|---|---|---|---|---|---|---|---|---|"]
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        by_variant.setdefault(r["variant"], []).append(r)

    def stat(items: list[dict[str, Any]], key: str, fmt: str = "{:.1f}") -> str:
        values = [i[key] for i in items if i.get(key) is not None]
        if not values:
            return "-"
        text = fmt.format(float(np.mean(values)))
        return text + (f" ± {fmt.format(float(np.std(values)))}" if len(values) > 1 else "")

    for name in [v for v in VARIANTS if v in by_variant]:
        items = by_variant[name]
        for i in items:
            i["q_over"] = None if i["q_data"] is None else i["q_data"] - i["mc_mean"]
        rows.append(
            f"| {name} | {len(items)} | {stat(items, 'final_return')} | {stat(items, 'best_return')} |"
            f" {stat(items, 'final_score')} | {stat(items, 'q_over')} | {stat(items, 'gap')} |"
            f" {stat(items, 'alpha', '{:.3g}')} | {stat(items, 'updates_per_second')} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="datasets/samples/pendulum-medium-replay-dime.parquet")
    parser.add_argument("--steps", type=int, default=4000, help="gradient steps per run")
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--agent-set", nargs="*", default=STUDY_AGENT, help="agent overrides shared by every variant")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="cache/offline_settings")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--report", action="store_true", help="only print the table of stored results")
    args = parser.parse_args(argv)
    results_dir = Path(args.out) / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    if not args.report:
        for name in args.variants:
            for seed in args.seeds:
                target = results_dir / f"{name}-s{seed}.json"
                if target.exists() and not args.force:
                    continue
                print(f"[offline_settings] {name} seed {seed} ...", file=sys.stderr, flush=True)
                record = run_variant(name, seed, args)
                record["machine"] = {"platform": platform.platform(), "torch": torch.__version__, "threads": args.threads}
                target.write_text(json.dumps(record, indent=1) + "\n")
    results = [json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))]
    print(f"dataset {args.data}; results in {results_dir}")
    print(report(results))


if __name__ == "__main__":
    main()
