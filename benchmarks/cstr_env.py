"""CSTR twin speed: env steps/s, raw and through gymnasium.make, with and without the PI controller.

Goal: > 10k steps/s single-threaded for the raw env (fine-tuning and evaluation step it in Python).
Also printed for scale: gymnasium's Pendulum-v1 (a classic-control env of similar size), measured
in the same run.

Run:  python benchmarks/cstr_env.py [--steps 50000]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import gymnasium as gym
import numpy as np

import dime_offline.envs  # noqa: F401  (registers the twin)
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.cstr import CSTREnv
from dime_offline.envs.pi_controller import PIController


def steps_per_second(env: gym.Env, steps: int, policy=None) -> float:
    obs, _ = env.reset(seed=0)
    action = np.asarray(env.action_space.sample(), dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(steps):
        a = action if policy is None else policy.command(obs)
        obs, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            obs, _ = env.reset()
            if policy is not None:
                policy.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=50_000)
    args = parser.parse_args()
    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    rows = [
        ("CSTREnv (raw), constant action", steps_per_second(CSTREnv(), args.steps)),
        ("CSTREnv (raw), PI controller", steps_per_second(CSTREnv(), args.steps, PIController(seed=0))),
        (f"gymnasium.make('{CSTR_ENV_ID}')", steps_per_second(gym.make(CSTR_ENV_ID), args.steps)),
        ("gymnasium.make('Pendulum-v1')", steps_per_second(gym.make("Pendulum-v1"), args.steps)),
    ]
    for name, rate in rows:
        print(f"{name:<40} {rate:>10,.0f} steps/s")


if __name__ == "__main__":
    main()
