"""How often does the OPE bootstrap interval hold the true value? Coverage on a task with known values.

``dime-offline ope`` reports a percentile interval from episode resamples (``ope.py``). Its nominal
coverage (``--confidence``, 0.9 by default) holds only if the resampled fits vary as fits on fresh
data would and FQE has no bias. This script measures it where the truth is known exactly enough:

* **Task**: a point on [-2, 2] moved by up to 0.2 per step plus Gaussian noise (``--noise``),
  reward -x^2, discount ``--gamma``; logged episodes of ``--length`` steps from x_0 ~ U(-2, 2) under
  uniformly random actions (a wide behaviour: every policy below acts inside the data).
* **Policies**: proportional controllers a = clip(-g x, -1, 1) with gains 2 (good), 0.5 and -0.5
  (steers away, bad).
* **Truth**: the value from the initial-state distribution, by ``--rollouts`` Monte-Carlo rollouts of
  ``--horizon`` steps (its standard error is printed; it is far below the intervals' widths). The
  interval resamples episodes, initial states included, so this is the value it claims to cover.
  Also, per dataset, the value from that dataset's own initial states (as many rollouts, spread over
  them): the estimate minus it is FQE's own error, without the sampling of initial states.
* **Trials**: ``--datasets`` independent logged datasets (seeds 0, 1, ...), each evaluated by FQE with
  the library's defaults (``OPEConfig``: 4 fits, 4000 steps) and ``--bootstrap`` replicates; a trial is
  covered when lo <= truth <= hi.

Reported per policy: coverage with its binomial standard error, mean interval width, mean estimate
minus truth, the estimates' spread across datasets (what an interval's width should match) and FQE's
own error against each dataset's initial states.

    python benchmarks/ope_coverage.py --datasets 20 --json out.json
    python benchmarks/ope_coverage.py --datasets 3 --first-dataset 3 --set target_update_interval=1   # a variant, datasets 3-5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from dime_offline.config import apply_overrides
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.ope import OPEConfig, fitted_q_evaluation

GAINS = {"gain_2": 2.0, "gain_0.5": 0.5, "gain_-0.5": -0.5}


@dataclass(frozen=True)
class Task:
    noise: float
    gamma: float
    episodes: int
    length: int

    def step(self, x: np.ndarray, action: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return np.clip(x + 0.2 * action + self.noise * rng.standard_normal(x.shape), -2.0, 2.0)

    def logged(self, seed: int) -> TransitionData:
        """``episodes`` logged episodes under uniformly random actions, each cut (truncated) after ``length`` steps."""
        rng = np.random.default_rng(seed)
        n, t_max = self.episodes, self.length
        x = np.zeros((n, t_max + 1))
        x[:, 0] = rng.uniform(-2.0, 2.0, n)
        actions = rng.uniform(-1.0, 1.0, (n, t_max))
        for t in range(t_max):
            x[:, t + 1] = self.step(x[:, t], actions[:, t], rng)
        return TransitionData(
            episode_id=np.repeat(np.arange(n), t_max), step=np.tile(np.arange(t_max, dtype=np.int32), n),
            obs=x[:, :-1].reshape(-1, 1).astype(np.float32), action=actions.reshape(-1, 1).astype(np.float32),
            reward=-np.square(x[:, :-1]).reshape(-1).astype(np.float32), next_obs=x[:, 1:].reshape(-1, 1).astype(np.float32),
            terminated=np.zeros(n * t_max, bool), truncated=np.tile(np.arange(t_max) == t_max - 1, n),
            metadata=DatasetMetadata(action_low=[-1.0], action_high=[1.0]),
        )

    def true_value(self, gain: float, rollouts: int, horizon: int, seed: int, initial: np.ndarray | None = None) -> tuple[float, float]:
        """(mean, standard error) of the discounted return under a = clip(-g x) from x_0 ~ U(-2, 2), or
        from each state of ``initial`` equally often (the value a dataset's own initial states have)."""
        rng = np.random.default_rng(seed)
        x = rng.uniform(-2.0, 2.0, rollouts) if initial is None else np.resize(initial.astype(np.float64), rollouts)
        returns = np.zeros(rollouts)
        for t in range(horizon):
            returns += self.gamma**t * -np.square(x)
            x = self.step(x, np.clip(-gain * x, -1.0, 1.0), rng)
        return float(returns.mean()), float(returns.std() / np.sqrt(rollouts))


class Proportional:
    """a = clip(-gain x, -1, 1): the policies evaluated (deterministic, stateless)."""

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.clip(-self.gain * obs[:, :1], -1.0, 1.0).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=int, default=20, help="independent logged datasets (trials per policy)")
    parser.add_argument("--first-dataset", type=int, default=0, help="seed of the first dataset (to split a study over processes)")
    parser.add_argument("--episodes", type=int, default=40, help="logged episodes per dataset")
    parser.add_argument("--length", type=int, default=25, help="steps per logged episode")
    parser.add_argument("--noise", type=float, default=0.1, help="standard deviation of the dynamics noise")
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--bootstrap", type=int, default=OPEConfig.bootstrap, help="bootstrap replicates per FQE run")
    parser.add_argument("--confidence", type=float, default=OPEConfig.confidence)
    parser.add_argument("--rollouts", type=int, default=200_000, help="Monte-Carlo rollouts of each true value")
    parser.add_argument("--horizon", type=int, default=150, help="steps of each rollout")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="an OPEConfig setting other than the library's default (repeatable), e.g. target_update_interval=1")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the trials and the summary here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    task = Task(noise=args.noise, gamma=args.gamma, episodes=args.episodes, length=args.length)
    print(f"task {asdict(task)}, {args.datasets} datasets, bootstrap {args.bootstrap}, confidence {args.confidence}, settings {args.set},"
          f" torch threads {args.threads}, load {os.getloadavg()}", flush=True)
    truths = {name: task.true_value(gain, args.rollouts, args.horizon, seed=10_000 + i) for i, (name, gain) in enumerate(GAINS.items())}
    for name, (value, se) in truths.items():
        print(f"truth {name}: {value:.3f} (standard error {se:.3f})")

    started = time.monotonic()
    trials = []
    for seed in range(args.first_dataset, args.first_dataset + args.datasets):
        data = task.logged(seed)
        for name, gain in GAINS.items():
            cfg = apply_overrides(OPEConfig(bootstrap=args.bootstrap, confidence=args.confidence, seed=seed), args.set)
            value = fitted_q_evaluation(Proportional(gain), data, cfg, gamma=task.gamma).value
            assert value.lo is not None and value.hi is not None
            truth = truths[name][0]
            initial = data.obs[data.episode_starts(), 0]
            sample_truth = task.true_value(gain, args.rollouts, args.horizon, seed=20_000 + seed, initial=initial)[0]
            trials.append({"dataset": seed, "policy": name, "truth": truth, "sample_truth": sample_truth,
                           "estimate": value.estimate, "lo": value.lo, "hi": value.hi, "covered": value.lo <= truth <= value.hi})
            print(f"dataset {seed} {name}: estimate {value.estimate:.3f} [{value.lo:.3f}, {value.hi:.3f}] truth {truth:.3f}"
                  f" {'covered' if trials[-1]['covered'] else 'MISSED'}", flush=True)

    summary = {}
    print(f"\n| policy | truth | coverage (nominal {args.confidence:.0%}) | mean width | bias (mean estimate - truth) |"
          " spread of estimates across datasets | FQE error (estimate - the data's initial states' truth) |"
          "\n|---|---|---|---|---|---|---|")
    for name in GAINS:
        rows = [t for t in trials if t["policy"] == name]
        coverage = float(np.mean([t["covered"] for t in rows]))
        estimates = [t["estimate"] for t in rows]
        summary[name] = {
            "truth": truths[name][0], "coverage": coverage, "coverage_se": float(np.sqrt(coverage * (1 - coverage) / len(rows))),
            "mean_width": float(np.mean([t["hi"] - t["lo"] for t in rows])), "bias": float(np.mean(estimates)) - truths[name][0],
            "estimate_sd": statistics.stdev(estimates) if len(estimates) > 1 else float("nan"),
            "fqe_error_mean": float(np.mean([t["estimate"] - t["sample_truth"] for t in rows])),
            "fqe_error_sd": statistics.stdev([t["estimate"] - t["sample_truth"] for t in rows]) if len(rows) > 1 else float("nan"),
        }
        s = summary[name]
        print(f"| {name} | {s['truth']:.2f} | {s['coverage']:.2f} ± {s['coverage_se']:.2f} | {s['mean_width']:.2f} |"
              f" {s['bias']:+.2f} | {s['estimate_sd']:.2f} | {s['fqe_error_mean']:+.2f} ± {s['fqe_error_sd']:.2f} |")
    pooled = float(np.mean([t["covered"] for t in trials]))
    print(f"pooled coverage {pooled:.2f} over {len(trials)} trials; wall {time.monotonic() - started:.0f} s; load {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"task": asdict(task), "args": vars(args), "summary": summary, "pooled_coverage": pooled, "trials": trials},
                      f, indent=1)


if __name__ == "__main__":
    main()
