"""Recipe for D4RL-like ``medium-replay`` and ``medium`` datasets made with DIME, nothing downloaded.

D4RL made its gym-MuJoCo ``medium`` data with a SAC policy stopped early, at about a third of the
expert return, and its ``medium-replay`` data from the replay buffer of that run. We do the same
with DIME (``datasets/README.md`` and the cards in ``datasets/cards/`` describe the results):

1. ``online``: train DIME from scratch with ``dime-offline finetune`` until an evaluation's mean
   return reaches the target (``--target-fraction`` of the way from the random to the expert
   reference return, 1/3 by default: HalfCheetah 3858, Hopper 1064) or the step / wall-clock
   budget runs out. The run's whole online replay, random warm-up included, is written as
   ``<family>-medium-replay-dime<tag>.parquet``; its final checkpoint is the "medium" policy.
2. ``medium``: roll that checkpoint out (stochastic DIME actions, as in its evaluations) with
   ``dime-offline collect`` into ``<family>-medium-dime<tag>.parquet``.

Everything goes to ``--cache`` (default ``cache/datasets``, git-ignored), with a manifest
``<family>-dime<tag>.manifest.json`` holding the settings, the stop reason, timings and per-dataset
statistics (transitions, episodes, returns, normalised scores) that the dataset cards quote.

The full HalfCheetah/Hopper recipes are long on a 2-core CPU (DIME's small "cpu" preset runs a
few env steps per second, so 100k+ steps take many hours): bound them with ``--max-hours`` and
name reduced variants with ``--tag`` (e.g. ``--target-fraction 0.15 --tag small``); the manifest
records whether the target was reached. ``pendulum`` is the variant a 2-core machine finishes in
minutes.

    python benchmarks/make_datasets.py pendulum                      # both stages, ~20 min on 2 shared cores
    python benchmarks/make_datasets.py halfcheetah --max-hours 12    # full recipe
    python benchmarks/make_datasets.py hopper --stage medium         # rollouts of an existing run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

import dime_offline
from dime_offline.data.parquet import read_parquet, write_parquet
from dime_offline.data.schema import TransitionData
from dime_offline.errors import DimeOfflineError
from dime_offline.evaluation.metrics import D4RL_REFERENCE_RETURNS, env_family, normalized_score
from dime_offline.trainers.collect import CollectConfig, collect
from dime_offline.trainers.online import FinetuneConfig, finetune

PENDULUM_REFERENCES = (-1240.9, -150.0)
"""(random, expert) returns for Pendulum-v1, ours (D4RL has none): random = mean return of uniform
actions over 500 episodes (seeds 0-499, std 288.6); expert = a round figure for a converged
off-policy agent (swing-up from any start, about -150 per 200-step episode)."""


@dataclass(frozen=True)
class Recipe:
    """How one environment family's pair of datasets is made."""

    env_id: str
    """Gymnasium id."""
    references: tuple[float, float]
    """(random, expert) returns used for the target and the normalised scores."""
    max_steps: int
    """Online step budget of the DIME run (it stops earlier at the target)."""
    learning_starts: int
    """Uniform-random warm-up steps of the online run (they are part of the replay, as in D4RL)."""
    eval_every: int
    """Env steps between the evaluations that check the target."""
    eval_episodes: int
    """Episodes per evaluation."""
    medium_steps: int
    """Transitions of the ``medium`` rollouts (D4RL: 1M)."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIMEConfig overrides on top of the preset."""


RECIPES: dict[str, Recipe] = {
    "halfcheetah": Recipe(
        env_id="HalfCheetah-v4", references=D4RL_REFERENCE_RETURNS["halfcheetah"], max_steps=500_000,
        learning_starts=5000, eval_every=5000, eval_episodes=5, medium_steps=1_000_000,
    ),
    "hopper": Recipe(
        env_id="Hopper-v4", references=D4RL_REFERENCE_RETURNS["hopper"], max_steps=500_000,
        learning_starts=5000, eval_every=5000, eval_episodes=5, medium_steps=1_000_000,
    ),
    # Rewards lie in [-16.3, 0] per step: a support of [-1600, 200] covers the discounted returns
    # with room for the entropy bonus, at a finer atom spacing than the MuJoCo default +-1600.
    "pendulum": Recipe(
        env_id="Pendulum-v1", references=PENDULUM_REFERENCES, max_steps=20_000, learning_starts=1000,
        eval_every=500, eval_episodes=5, medium_steps=20_000, agent={"v_min": -1600.0, "v_max": 200.0},
    ),
}


@dataclass(frozen=True)
class Paths:
    """Where one family's artefacts live under the cache folder."""

    replay: Path
    medium: Path
    run: Path
    manifest: Path

    @classmethod
    def of(cls, cache: Path, family: str, tag: str) -> Paths:
        tag = f"-{tag}" if tag else ""
        return cls(
            replay=cache / f"{family}-medium-replay-dime{tag}.parquet",
            medium=cache / f"{family}-medium-dime{tag}.parquet",
            run=cache / f"{family}-dime{tag}-run",
            manifest=cache / f"{family}-dime{tag}.manifest.json",
        )


def target_return(references: tuple[float, float], fraction: float) -> float:
    """The return ``fraction`` of the way from the random to the expert reference."""
    low, high = references
    return low + fraction * (high - low)


def dataset_stats(data: TransitionData, references: tuple[float, float], time_limit: int | None) -> dict[str, Any]:
    """Transitions, episodes and return statistics of a dataset's complete episodes.

    An episode is complete when it ended in a terminal state or ran to the time limit; the one a
    step budget cut short (the last) is left out of the return statistics.
    """
    returns, lengths = data.episode_returns(), data.episode_lengths()
    ends = np.concatenate([data.episode_starts()[1:], [len(data)]]) - 1
    complete = data.terminated[ends] | (lengths == time_limit if time_limit else np.zeros(len(lengths), bool))
    complete[:-1] = True  # only the last episode can have been cut by the budget
    kept = returns[complete]
    summary: dict[str, Any] = {
        "transitions": len(data),
        "episodes": len(lengths),
        "complete_episodes": int(complete.sum()),
        "terminated_episodes": int(data.terminated.sum()),
    }
    if len(kept):
        summary.update(
            return_mean=float(kept.mean()), return_std=float(kept.std()),
            return_min=float(kept.min()), return_max=float(kept.max()),
            normalized_score_mean=normalized_score(float(kept.mean()), references),
        )
    return summary


def set_references(path: Path, references: tuple[float, float], extra: dict[str, Any]) -> TransitionData:
    """Rewrite a dataset with the recipe's reference returns (the only ones for envs D4RL does not
    cover) and the provenance ``extra`` in its metadata."""
    data, _ = read_parquet(path)
    data.metadata.ref_min_score, data.metadata.ref_max_score = references
    data.metadata.extra.update(extra)
    write_parquet(data, path)
    return data


def run_online(recipe: Recipe, paths: Paths, args: argparse.Namespace, target: float) -> dict[str, Any]:
    """Stage 1: the online DIME run, stopped at ``target``; writes the medium-replay dataset."""
    cfg = FinetuneConfig(
        env_id=recipe.env_id, steps=args.max_steps or recipe.max_steps, seed=args.seed, out_dir=str(paths.run),
        overwrite=args.overwrite, preset=args.preset,
        agent={"learning_starts": recipe.learning_starts, **recipe.agent},
        eval_every=recipe.eval_every, eval_episodes=recipe.eval_episodes, checkpoint_every=recipe.eval_every * 10,
        max_wall_seconds=None if args.max_hours is None else args.max_hours * 3600.0,
        target_return=target, save_replay=str(paths.replay), tensorboard=False, quiet=args.quiet,
    )
    result = finetune(cfg)
    summary = result.to_dict()
    data = set_references(paths.replay, recipe.references, {"recipe": "benchmarks/make_datasets.py online"})
    return {
        "finetune_config": asdict(cfg),
        "env_steps": summary["steps"],
        "updates": summary["updates"],
        "wall_seconds": summary["wall_seconds"],
        "stopped_by_target": summary["stopped_by_target"],
        "stopped_by_time": summary["stopped_by_time"],
        "final_evaluation": summary["final"],
        "evaluations": [
            {"step": r.step, "return_mean": r.stats.return_mean, "normalized_score": normalized_score(r.stats.return_mean, recipe.references)}
            for r in result.loop.evaluations
        ],
        "dataset": dataset_stats(data, recipe.references, _time_limit(recipe.env_id)),
    }


def run_medium(recipe: Recipe, paths: Paths, args: argparse.Namespace) -> dict[str, Any]:
    """Stage 2: roll out the online run's final checkpoint into the medium dataset."""
    cfg = CollectConfig(
        env_id=recipe.env_id, policy=str(paths.run), steps=args.medium_steps or recipe.medium_steps,
        out=str(paths.medium), seed=args.seed + 1, quiet=args.quiet,
    )
    result = collect(cfg)
    data = set_references(paths.medium, recipe.references, {"recipe": "benchmarks/make_datasets.py medium"})
    return {
        "collect_config": asdict(cfg),
        "wall_seconds": result.wall_seconds,
        "dataset": dataset_stats(data, recipe.references, _time_limit(recipe.env_id)),
    }


def _time_limit(env_id: str) -> int | None:
    return gym.spec(env_id).max_episode_steps


def _git_sha() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(RECIPES), help="environment family")
    parser.add_argument("--stage", choices=("online", "medium", "all"), default="all")
    parser.add_argument("--cache", type=Path, default=Path("cache/datasets"), help="output folder (git-ignored)")
    parser.add_argument("--tag", default="", help="name of a reduced variant, e.g. 'small' (files get '-small')")
    parser.add_argument("--target-fraction", type=float, default=1 / 3, help="target as a fraction of random->expert")
    parser.add_argument("--target-return", type=float, default=None, help="explicit target return (overrides the fraction)")
    parser.add_argument("--max-steps", type=int, default=None, help="online step budget (default: the recipe's)")
    parser.add_argument("--max-hours", type=float, default=None, help="wall-clock budget of the online run")
    parser.add_argument("--medium-steps", type=int, default=None, help="transitions of the medium rollouts")
    parser.add_argument("--preset", default="cpu", help="DIME preset: cpu (small networks) or paper")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing online run (without it, an existing one is an error)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    recipe = RECIPES[args.family]
    paths = Paths.of(args.cache, args.family, args.tag)
    args.cache.mkdir(parents=True, exist_ok=True)
    target = args.target_return if args.target_return is not None else target_return(recipe.references, args.target_fraction)
    manifest: dict[str, Any] = json.loads(paths.manifest.read_text()) if paths.manifest.exists() else {}
    manifest.update(
        family=args.family, env_id=recipe.env_id, family_key=env_family(recipe.env_id), tag=args.tag,
        recipe=asdict(recipe), target_return=target, target_fraction=None if args.target_return is not None else args.target_fraction,
        package_version=dime_offline.__version__, git_sha=_git_sha(), torch_threads=torch.get_num_threads(),
        machine={"platform": platform.platform(), "cpus": os.cpu_count()},
    )
    started = time.monotonic()
    if args.stage in ("online", "all"):
        manifest["online"] = run_online(recipe, paths, args, target)
        manifest["online"]["load_average_at_end"] = _loadavg()
        manifest["files"] = {"medium_replay": str(paths.replay), "run": str(paths.run)}
        paths.manifest.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        online = manifest["online"]
        print(
            f"online: {online['env_steps']} env steps in {online['wall_seconds']:.0f} s,"
            f" final return {online['final_evaluation']['return_mean']:.1f}"
            f" (target {target:.1f}, reached: {online['stopped_by_target']}) -> {paths.replay}"
        )
    if args.stage in ("medium", "all"):
        manifest["medium"] = run_medium(recipe, paths, args)
        manifest.setdefault("files", {})["medium"] = str(paths.medium)
        paths.manifest.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        stats = manifest["medium"]["dataset"]
        print(f"medium: {stats['transitions']} transitions, return {stats.get('return_mean', float('nan')):.1f} -> {paths.medium}")
    print(f"manifest: {paths.manifest} ({time.monotonic() - started:.0f} s)")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


if __name__ == "__main__":
    try:
        main()
    except DimeOfflineError as exc:  # a setting or file of the user's: one line and exit 2, as the CLI does
        print(f"make_datasets.py: {exc}", file=sys.stderr)
        sys.exit(2)
