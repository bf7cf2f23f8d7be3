"""How slowly should the acting average move? Several decays evaluated along one fine-tuning run.

The acting average (``agent.acting_average_decay``, docs/algorithm.md §9.2) changes nothing in how
the agent learns: exploration and every gradient step use the live weights, and deterministic
evaluation (best of K on fixed candidate noise, fixed reset seeds) draws no random numbers. So one
fine-tuning run can carry several averages side by side and evaluate each on the same episodes at
every evaluation: the arms are paired, they differ only in the weights that act. The run's own
average (the config's decay) is evaluated by the trainer as usual; this script keeps one more
average per ``--decays`` value, updated after every update from the same live weights, and
evaluates each one and the live weights (decay 0) right after the trainer's evaluation.

    python benchmarks/acting_average_study.py --config cache/o2o-hopper/finetune/trials/s000-seed0/finetune_config.json \\
        --out /tmp/avg-seed0 --decays 0 0.995 0.999 --json /tmp/avg-seed0.json

``--config`` is a fine-tuning run's ``finetune_config.json`` (e.g. a sweep trial's); the run is
repeated as configured into ``--out``. The JSON holds, per arm, the evaluation returns at the
boundary (the checkpoint before any online step) and at every evaluation step; summarise several
with ``--report A.json B.json ...`` (issue 9's no-dip and drawdown measures, per arm and seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dime_offline.agent.dime import DIMEAgent, frozen_copy, move_average
from dime_offline.config import from_dict
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.trainers import online

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its sibling scripts by path
from handover_report import curve_measures

NO_DIP_SHARE = 0.1  # issue 9: the first 10 % of fine-tuning


class ExtraAverages:
    """Acting averages of one agent beyond its own, each with its decay, evaluated beside it."""

    def __init__(self, agent: DIMEAgent, decays: list[float]) -> None:
        self.agent = agent
        self.start_updates = agent.critic_updates
        start = (agent.acting_policy, agent.acting_critic)  # the checkpoint's average
        self.averages = {d: tuple(frozen_copy(m) for m in start) for d in decays if d > 0}
        self.live = 0.0 in decays
        own_update = agent._update_acting_average

        def update_all() -> None:
            own_update()
            for decay, average in self.averages.items():
                move_average(average, (agent.policy, agent.critic), decay)

        agent._update_acting_average = update_all  # type: ignore[method-assign]

    def arms(self) -> dict[str, tuple[Any, Any]]:
        """Arm name -> (acting policy, acting critic) to evaluate besides the agent's own average."""
        arms = {f"decay_{d:g}": pair for d, pair in self.averages.items()}
        if self.live:
            arms["decay_0"] = (self.agent.policy, self.agent.critic)
        return arms


def _stats(stats: EpisodeStats) -> dict[str, Any]:
    return {"mean": float(stats.return_mean), "returns": [float(r) for r in stats.returns]}


def run(config_file: str, out: str, decays: list[float]) -> dict[str, Any]:
    cfg = from_dict(online.FinetuneConfig, json.loads(Path(config_file).read_text()))
    cfg = dataclasses.replace(cfg, out_dir=out, overwrite=True, quiet=True, tensorboard=False, trackers=[])
    evaluations: dict[str, list[dict[str, Any]]] = {}
    extras: list[ExtraAverages] = []
    original_load, original_evaluate = online.load_checkpoint, online.evaluate

    def evaluate_all(agent: DIMEAgent, *args: Any, **kwargs: Any) -> EpisodeStats:
        stats = original_evaluate(agent, *args, **kwargs)
        updates = agent.critic_updates - extras[0].start_updates
        evaluations.setdefault("own", []).append({"updates": updates, **_stats(stats)})
        kept = agent.acting_policy, agent.acting_critic
        try:
            for name, (acting_policy, acting_critic) in extras[0].arms().items():
                agent.acting_policy, agent.acting_critic = acting_policy, acting_critic
                evaluations.setdefault(name, []).append({"updates": updates, **_stats(original_evaluate(agent, *args, **kwargs))})
        finally:
            agent.acting_policy, agent.acting_critic = kept
        print(f"update {updates}: " + ", ".join(f"{k} {v[-1]['mean']:.0f}" for k, v in evaluations.items()), flush=True)
        return stats

    def load_and_instrument(*args: Any, **kwargs: Any) -> Any:
        agent, saved_cfg, meta = original_load(*args, **kwargs)
        extras.append(ExtraAverages(agent, decays))
        # The boundary: the checkpoint as loaded (its average continues as the run's own), same episodes.
        evaluate_all(
            agent, cfg.env_id, cfg.eval_episodes, seed=cfg.seed + online.EVAL_SEED_OFFSET,
            deterministic=cfg.eval_deterministic, max_episode_steps=cfg.max_episode_steps,
        )
        return agent, saved_cfg, meta

    online.load_checkpoint, online.evaluate = load_and_instrument, evaluate_all
    try:
        result = online.finetune(cfg)
    finally:
        online.load_checkpoint, online.evaluate = original_load, original_evaluate
    agent = extras[0].agent
    # The run's own average under its decay's name (it is the config's, e.g. the default 0.99).
    evaluations[f"decay_{agent.cfg.acting_average_decay:g}"] = evaluations.pop("own")
    return {
        "config": config_file, "steps": cfg.steps, "eval_every": cfg.eval_every, "utd": agent.cfg.utd,
        "evaluations": evaluations, "trainer_evaluations": [float(e.stats.return_mean) for e in result.loop.evaluations],
    }


def _measures(evals: list[dict[str, Any]], steps: int, eval_every: int) -> dict[str, Any]:
    """Issue 9's measures of one arm (``handover_report.curve_measures``; the first evaluation is the
    boundary, the others come every ``eval_every`` env steps)."""
    boundary, online_evals = evals[0]["mean"], evals[1:]
    at = np.array([eval_every * (i + 1) for i in range(len(online_evals))])
    means = np.array([e["mean"] for e in online_evals])
    noise = np.array([2 * np.std(e["returns"]) / np.sqrt(len(e["returns"])) for e in online_evals])
    dip, dip_ok, drawdown, _, kept = curve_measures(boundary, at, means, noise, NO_DIP_SHARE * steps)
    return {"boundary": boundary, "dip_ratio": dip / boundary, "dip_ok": dip_ok, "drawdown": drawdown, "kept": kept,
            "final": float(means[-1]), "online_mean": float(means.mean())}


def report(files: list[str]) -> None:
    """Per arm: each run's boundary, first evaluation / boundary, largest drawdown and final; then
    the means over runs and the counts of runs within issue 9's no-dip and kept-gain targets."""
    records = [json.loads(Path(f).read_text()) for f in files]
    arms = sorted({a for r in records for a in r["evaluations"]}, key=lambda a: float(a.split("_")[1]))
    for arm in arms:
        measured = [_measures(r["evaluations"][arm], r["steps"], r["eval_every"]) for r in records]
        print(f"{arm}: mean final {np.mean([m['final'] for m in measured]):.0f},"
              f" mean online {np.mean([m['online_mean'] for m in measured]):.0f},"
              f" mean drawdown {np.mean([m['drawdown'] for m in measured]):.0f},"
              f" no dip {sum(bool(m['dip_ok']) for m in measured)}/{len(measured)},"
              f" kept {sum(m['kept'] for m in measured)}/{len(measured)}")
        for f, r, m in zip(files, records, measured):
            curve = ", ".join(f"{e['mean']:.0f}" for e in r["evaluations"][arm])
            print(f"  {Path(f).stem}: boundary {m['boundary']:.0f}, first/boundary {m['dip_ratio']:.2f},"
                  f" drawdown {m['drawdown']:.0f}, final {m['final']:.0f}  [{curve}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a fine-tuning run's finetune_config.json")
    parser.add_argument("--out", help="run directory for the repeated run")
    parser.add_argument("--decays", nargs="+", type=float, default=[0.0, 0.995, 0.999])
    parser.add_argument("--json", help="write the evaluations here")
    parser.add_argument("--report", nargs="+", help="summarise these JSON files instead of running")
    args = parser.parse_args()
    if args.report:
        report(args.report)
        return
    print(f"load average before: {os.getloadavg()}", flush=True)
    record = run(args.config, args.out, args.decays)
    record["load_after"] = os.getloadavg()
    text = json.dumps(record, indent=1)
    if args.json:
        Path(args.json).write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
