"""Does off-policy evaluation rank policies as their true values do? FQE against rollouts on Pendulum.

Policies of clearly different quality, all evaluated on one logged dataset (default: the shipped
Pendulum sample, 3000 transitions in 15 episodes of a medium replay buffer):

* DIME checkpoints along pretraining on that data (``--budgets`` gradient steps each), acting in
  their deployment mode (best of K chains by the critics, as ``load_policy`` and ``ope`` use);
* uniformly random actions (stochastic: FQE draws 8 actions per state);
* full torque for ever (``spin``: the pendulum whirls, a bad policy).

and, reported apart because they go where the shipped data never goes (the upright states; the
limit docs/algorithm.md names), two hand-written controllers: energy-pumping swing-up with a PD balance (``swing_up``,
about -130 per 200-step episode, expert level) and the same with half the torque (``swing_up_half``).

The true value of each policy is its discounted return (the data's gamma, 0.99) from the data's own
initial states, which are set into Pendulum-v1 (the state is the angle and the angular velocity the
observation holds), over ``--horizon`` steps with no time limit (0.99^400 = 0.018: the tail left
out is below 2 % of any value here); a stochastic policy's is averaged over ``--repeats`` rollouts
per state. OPE sees the data and the policy only. Reported: each policy's truth, estimate,
relative error and action gap, the Spearman rank correlation (target >= 0.8) and the mean relative
error, over the main set (checkpoints, random, full torque) and over all of them.
``--controller-episodes N`` adds N noisy episodes of the swing-up controller to the logged data, so
that it covers the upright states too.

    python benchmarks/ope_validation.py --workdir /tmp/ope-bench [--reuse] [--bootstrap 5] [--json out.json]
        [--fqe-seeds 1 2] [--set critic=distributional]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from dime_offline.config import apply_overrides, to_dict
from dime_offline.data.load import load_dataset
from dime_offline.data.schema import TransitionData
from dime_offline.envs.make import make_env
from dime_offline.evaluation.baselines import UniformRandomPolicy
from dime_offline.ope import OPEConfig, fitted_q_evaluation
from dime_offline.policy import load_policy
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.types import Policy

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"
PENDULUM = "Pendulum-v1"
BALANCE_COS = 0.93
"""The swing-up controllers balance (PD) once cos(angle) exceeds this, and pump energy below it."""


class SwingUp:
    """Energy pumping towards the upright energy, a PD law near the top (torque in [-limit, limit])."""

    def __init__(self, limit: float = 1.0) -> None:
        self.limit = limit

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        cos, sin, velocity = obs[:, 0], obs[:, 1], obs[:, 2]
        # Pendulum-v1: angle'' = 15 sin(angle) + 3 u, so 0.5 v^2 + 15 cos(angle) is conserved without
        # torque and is 15 upright at rest.
        energy = 0.5 * velocity**2 + 15.0 * cos
        pump = 0.5 * velocity * (15.0 - energy)
        balance = -(10.0 * np.arctan2(sin, cos) + 2.0 * velocity)
        torque = np.where(cos > BALANCE_COS, balance, pump) / 2.0  # [-1, 1] is [-2, 2] N m
        return np.clip(torque, -self.limit, self.limit)[:, None].astype(np.float32)


class FullTorque:
    """Always the largest positive torque."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.ones((len(obs), 1), np.float32)


def with_controller_episodes(base: TransitionData, episodes: int, noise: float, seed: int) -> TransitionData:
    """``base`` plus ``episodes`` 200-step episodes of :class:`SwingUp` with Gaussian action noise (std
    ``noise`` in [-1, 1] units): logged data that also covers the upright states."""
    rows: dict[str, list[object]] = {k: [] for k in
                                     ("episode_id", "step", "obs", "action", "reward", "next_obs", "terminated", "truncated")}
    controller, rng = SwingUp(), np.random.default_rng(seed)
    half_range = (np.asarray(base.metadata.action_high) - np.asarray(base.metadata.action_low)) / 2.0
    env = make_env(PENDULUM)
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        step, done = 0, False
        while not done:
            unit = np.clip(controller.act(obs[None])[0] + rng.normal(0.0, noise, 1), -1.0, 1.0).astype(np.float32)
            next_obs, reward, terminated, truncated, _ = env.step(unit)
            done = terminated or truncated
            for key, value in (("episode_id", int(base.episode_id.max()) + 1 + episode), ("step", step), ("obs", obs),
                               ("action", unit * half_range), ("reward", reward), ("next_obs", next_obs),
                               ("terminated", terminated), ("truncated", truncated and not terminated)):
                rows[key].append(value)
            obs, step = next_obs, step + 1
    env.close()
    dtypes = {"episode_id": np.int64, "step": np.int32, "terminated": bool, "truncated": bool}
    extra = TransitionData(**{k: np.asarray(v, dtypes.get(k, np.float32)) for k, v in rows.items()}, metadata=base.metadata)
    return TransitionData.concatenate([base, extra])


def true_value(policy: Policy, initial_obs: np.ndarray, *, gamma: float, horizon: int, deterministic: bool) -> float:
    """Mean discounted return over ``horizon`` steps of Pendulum-v1 started in each observed state."""
    envs = [make_env(PENDULUM, max_episode_steps=horizon + 1) for _ in initial_obs]
    obs = np.empty_like(initial_obs, dtype=np.float32)
    for i, (env, start) in enumerate(zip(envs, initial_obs)):
        env.reset(seed=i)
        env.unwrapped.state = np.array([np.arctan2(start[1], start[0]), start[2]])
        obs[i] = env.unwrapped._get_obs()
    total = np.zeros(len(envs))
    for t in range(horizon):
        actions = policy.act(obs, deterministic=deterministic)
        for i, env in enumerate(envs):
            obs[i], reward, *_ = env.step(actions[i])
            total[i] += gamma**t * reward
    for env in envs:
        env.close()
    return float(total.mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=float)
        for value in np.unique(x):  # ties share their mean rank
            r[x == value] = r[x == value].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def checkpoints(budgets: list[int], workdir: Path, data: str, seed: int, threads: int, reuse: bool) -> dict[str, Path]:
    """One pretraining run per budget, all with the same seed."""
    runs = {}
    for steps in budgets:
        out = workdir / f"pretrain-{steps}"
        if not (reuse and (out / "checkpoint" / "meta.json").is_file()):
            started = time.monotonic()
            pretrain(PretrainConfig(
                data=data, steps=steps, seed=seed, out_dir=str(out), overwrite=True, eval_every=0, eval_episodes=1,
                checkpoint_every=0, log_every=max(steps // 4, 1), tensorboard=False, quiet=True, torch_threads=threads,
            ))
            print(f"pretrained {steps} steps in {time.monotonic() - started:.0f} s", flush=True)
        runs[f"dime_{steps}"] = out
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SAMPLE))
    parser.add_argument("--budgets", nargs="+", type=int, default=[100, 400, 1500], help="pretraining steps per checkpoint")
    parser.add_argument("--workdir", default="runs/ope-validation", help="where the checkpoints go")
    parser.add_argument("--reuse", action="store_true", help="reuse checkpoints already in --workdir")
    parser.add_argument("--steps", type=int, default=OPEConfig.steps, help="FQE steps per policy")
    parser.add_argument("--fits", type=int, default=OPEConfig.fits, help="whole-data fits averaged into the estimate")
    parser.add_argument("--bootstrap", type=int, default=0, help="bootstrap replicates per policy (each costs a critic)")
    parser.add_argument("--horizon", type=int, default=400, help="rollout steps of the true value")
    parser.add_argument("--repeats", type=int, default=8, help="rollouts per initial state of a stochastic policy")
    parser.add_argument("--controller-episodes", type=int, default=0,
                        help="add this many episodes of the swing-up controller (action noise 0.5) to the logged data")
    parser.add_argument("--seed", type=int, default=0, help="pretraining, the random policy, the added episodes")
    parser.add_argument("--fqe-seeds", nargs="+", type=int, default=None, help="FQE seeds, one fit per seed (default: --seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an OPEConfig field for every fit, e.g. --set critic=distributional (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    print(f"load {os.getloadavg()}", flush=True)
    data = load_dataset(args.data, check_continuity=False)
    if args.controller_episodes:
        data = with_controller_episodes(data, args.controller_episodes, noise=0.5, seed=args.seed + 1000)
    initial = data.obs[data.episode_starts()]
    runs = checkpoints(args.budgets, Path(args.workdir), args.data, args.seed, args.threads, args.reuse)
    # name: (policy, deterministic, in the main set)
    policies: dict[str, tuple[Policy, bool, bool]] = {
        "full_torque": (FullTorque(), True, True),
        "random": (UniformRandomPolicy(1, args.seed), False, True),
        **{name: (load_policy(path, seed=args.seed), True, True) for name, path in runs.items()},
        "swing_up_half": (SwingUp(limit=0.5), True, False),
        "swing_up": (SwingUp(), True, False),
    }
    gamma = 0.99
    base = apply_overrides(OPEConfig(data=args.data, steps=args.steps, fits=args.fits, bootstrap=args.bootstrap), args.set)
    fqe_seeds = args.fqe_seeds or [args.seed]
    rows = []
    # True values depend on the policy, the initial states and the rollout settings only: kept in the
    # workdir so that a rerun with other FQE settings (--reuse) does not roll out again.
    truth_file = Path(args.workdir) / f"truths-{args.controller_episodes}-{args.horizon}-{args.repeats}-{args.seed}.json"
    truths = json.loads(truth_file.read_text()) if args.reuse and truth_file.is_file() else {}
    for name, (policy, deterministic, main_set) in policies.items():
        repeats = 1 if deterministic else args.repeats
        if name not in truths:
            truths[name] = true_value(policy, np.repeat(initial, repeats, axis=0), gamma=gamma, horizon=args.horizon,
                                      deterministic=deterministic)
            truth_file.write_text(json.dumps(truths))
        truth = truths[name]
        for fqe_seed in fqe_seeds:
            cfg = dataclasses.replace(base, seed=fqe_seed, policy_samples=None if deterministic else 8)
            result = fitted_q_evaluation(policy, data, cfg, gamma=gamma, deterministic=deterministic)
            row = {
                "policy": name, "fqe_seed": fqe_seed, "main_set": main_set, "truth": truth, "estimate": result.value.estimate,
                "lo": result.value.lo, "hi": result.value.hi, "relative_error": abs(result.value.estimate - truth) / abs(truth),
                "behaviour": result.behaviour_value.estimate, "action_gap": result.action_gap,
            }
            rows.append(row)
            interval = "" if row["lo"] is None else f" [{row['lo']:.1f}, {row['hi']:.1f}]"
            print(f"{name} (FQE seed {fqe_seed}): truth {truth:.1f}, OPE {row['estimate']:.1f}{interval}, relative error"
                  f" {row['relative_error']:.2f}, action gap {row['action_gap']:.2f}", flush=True)

    summary: dict[str, object] = {"rows": rows, "args": vars(args), "fqe": to_dict(base), "load_end": os.getloadavg()}
    for fqe_seed in fqe_seeds:
        seed_rows = [r for r in rows if r["fqe_seed"] == fqe_seed]
        for label, chosen in (("main_set", [r for r in seed_rows if r["main_set"]]), ("all", seed_rows)):
            truth = np.array([r["truth"] for r in chosen])
            estimate = np.array([r["estimate"] for r in chosen])
            errors = [r["relative_error"] for r in chosen]
            figures = {"policies": len(chosen), "spearman": spearman(truth, estimate),
                       "mean_relative_error": float(np.mean(errors)), "max_relative_error": float(np.max(errors))}
            if all(r["lo"] is not None for r in chosen):
                figures["interval_covers_truth"] = sum(r["lo"] <= r["truth"] <= r["hi"] for r in chosen)
            summary[f"{label}_seed{fqe_seed}"] = figures
            print(f"{label}, FQE seed {fqe_seed}: {figures}", flush=True)
    summary["wall_seconds"] = time.monotonic() - started
    print(f"behaviour (logged, Monte-Carlo): {rows[0]['behaviour']:.1f}; wall {summary['wall_seconds']:.0f} s;"
          f" load {os.getloadavg()}")
    print("| policy | FQE seed | true value | OPE estimate | relative error | action gap |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        interval = "" if r["lo"] is None else f" [{r['lo']:.1f}, {r['hi']:.1f}]"
        print(f"| {r['policy']}{'' if r['main_set'] else ' (controller)'} | {r['fqe_seed']} | {r['truth']:.1f}"
              f" | {r['estimate']:.1f}{interval} | {r['relative_error']:.2f} | {r['action_gap']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
