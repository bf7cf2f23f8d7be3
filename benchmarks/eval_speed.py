"""Evaluation wall time: episodes one by one (the old protocol) vs stepped together (``evaluate``).

A DIME action is a 16-step diffusion chain whose cost barely depends on the batch size, so the
old protocol (one env, one episode after the other, one batch-1 ``act`` per env step; here
``evaluate(..., max_parallel=1)``, which runs exactly that) pays
E * T policy calls for E episodes of T steps, while ``dime_offline.evaluation.rollout.evaluate``
steps the E episodes through a gymnasium vector env with one batch-E call per vector step (T
calls). Both run the same episodes (episode i from ``reset(seed=seed + i)``); only the order in
which the stochastic policy draws its noise differs, so returns agree in distribution, lengths
exactly when the env has no early termination (HalfCheetah). With ``--deterministic`` the agent
acts as evaluation does by default (the best of K chain samples by the critics, a function of the
observation alone), so each episode's return must agree too.

The agent is an untrained ``DIMEConfig.preset("cpu")`` DIMEAgent (the cost of an action does not
depend on the weights). The two protocols alternate, first one then the other, for ``--repeats``
rounds; the table gives the median and range of each, the policy calls, and the ratio of the
medians. The load average is printed before and after, so runs on a shared machine are visible.

    python benchmarks/eval_speed.py                                   # 10 HalfCheetah-v4 episodes
    python benchmarks/eval_speed.py --deterministic                   # as `evaluate` acts by default
    python benchmarks/eval_speed.py --max-episode-steps 20 --repeats 1   # smoke test, seconds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.envs.make import make_env, spaces_of
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.evaluation.rollout import evaluate
from dime_offline.types import Policy


class CountingPolicy:
    """Delegates to a policy and counts its ``act`` calls (a counter add, nothing next to a chain)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.calls = 0

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        self.calls += 1
        return self.policy.act(obs, deterministic=deterministic)


def timed(run: Callable[[CountingPolicy], EpisodeStats], agent: DIMEAgent) -> tuple[float, int, EpisodeStats]:
    """(seconds, policy calls, statistics) of one evaluation."""
    policy = CountingPolicy(agent)
    start = time.perf_counter()
    stats = run(policy)
    return time.perf_counter() - start, policy.calls, stats


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max-episode-steps", type=int, default=None, help="default: the registered time limit")
    parser.add_argument("--repeats", type=int, default=5, help="rounds, each timing both protocols once")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic actions (best of K by the critics, evaluation's default) instead of sampled ones")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env = make_env(args.env, max_episode_steps=args.max_episode_steps)
    try:
        spaces = spaces_of(env)
    finally:
        env.close()
    agent = DIMEAgent(spaces.obs_dim, spaces.action_dim, DIMEConfig.preset("cpu"), seed=args.seed)
    for rows in (1, args.episodes):  # first calls at each batch size allocate; keep them out of the timings
        agent.act(np.zeros((rows, spaces.obs_dim), np.float32), deterministic=args.deterministic)

    protocols: dict[str, Callable[[CountingPolicy], EpisodeStats]] = {
        "one by one": lambda p: evaluate(
            p, args.env, args.episodes, args.seed, deterministic=args.deterministic,
            max_episode_steps=args.max_episode_steps, max_parallel=1,
        ),
        "stepped together": lambda p: evaluate(
            p, args.env, args.episodes, args.seed, deterministic=args.deterministic,
            max_episode_steps=args.max_episode_steps,
        ),
    }
    print(f"{args.env}, {args.episodes} episodes, max episode steps {args.max_episode_steps or 'registered'}, "
          f"DIME preset cpu, {'deterministic' if args.deterministic else 'sampled'} actions, "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}, {args.repeats} rounds")
    print(f"load average before: {_load()}")
    seconds: dict[str, list[float]] = {name: [] for name in protocols}
    calls: dict[str, int] = {}
    stats: dict[str, EpisodeStats] = {}
    for _ in range(args.repeats):
        for name, run in protocols.items():
            elapsed, calls[name], stats[name] = timed(run, agent)
            seconds[name].append(elapsed)
    print(f"load average after:  {_load()}")

    header = (f"{'protocol':<17} {'median s':>9} {'[min-max]':>15} {'policy calls':>12} {'env steps':>9} "
              f"{'return mean':>11}")
    print(header)
    print("-" * len(header))
    for name in protocols:
        s = seconds[name]
        print(f"{name:<17} {statistics.median(s):>9.2f} {f'[{min(s):.2f}-{max(s):.2f}]':>15} {calls[name]:>12} "
              f"{sum(stats[name].lengths):>9} {stats[name].return_mean:>11.1f}")
    old, new = (statistics.median(seconds[name]) for name in protocols)
    same = stats["one by one"].lengths == stats["stepped together"].lengths
    agreement = f"episode lengths {'equal' if same else 'DIFFER'}"
    if args.deterministic:  # a function of the observation: the same episodes to float32 rounding in the batch
        gap = float(np.max(np.abs(np.subtract(stats["one by one"].returns, stats["stepped together"].returns))))
        agreement += f", largest per-episode return difference {gap:.3g}"
    print(f"ratio one by one / stepped together: {old / new:.2f}x; {agreement}")


if __name__ == "__main__":
    main()
