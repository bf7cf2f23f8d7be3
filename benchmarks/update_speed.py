"""DIME update and action speed on this CPU, for each preset, against a FLOP lower bound.

For every preset it measures, in one run:

* ms per full agent update: critic update plus the amortised actor and temperature update, i.e. the wall
  time of one ``policy_delay`` cycle (3 ``agent.update`` calls) divided by its length;
* ms per action at batch 1 (``agent.act``, the 16-step chain);
* the FLOPs of one update (``torch.utils.flop_counter.FlopCounterMode`` over a whole cycle, divided by
  its length; it counts matmuls, forward and backward);
* the fp32 matmul rate of this machine for the update's dominant shapes, measured in the same run; the
  FLOP lower bound is update FLOPs / that rate, and the table reports measured time / lower bound;
* the peak memory of one update: the growth of the resident set's high-water mark (VmHWM, reset after
  building the agent) while a fresh process runs its first policy-delay cycle (Adam state included),
  plus that process's lifetime peak RSS (``resource.getrusage``). Each preset's probe runs in its own
  subprocess. Linux only.

Timings are medians over ``--repeats`` after ``--warmup`` cycles; the thread count is printed.
Shapes default to HalfCheetah (obs 17, action 6) at the preset's batch size.

    python benchmarks/update_speed.py                  # both presets
    python benchmarks/update_speed.py --presets cpu --repeats 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.types import Batch


def make_batch(obs_dim: int, act_dim: int, batch_size: int, seed: int = 0) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    rows = batch_size
    return Batch(
        obs=torch.randn(rows, obs_dim, generator=gen),
        action=torch.rand(rows, act_dim, generator=gen) * 2 - 1,
        reward=torch.randn(rows, generator=gen),
        next_obs=torch.randn(rows, obs_dim, generator=gen),
        terminated=(torch.rand(rows, generator=gen) < 0.01).float(),
        truncated=torch.zeros(rows),
        mc_return=torch.full((rows,), float("nan")),
        is_offline=torch.zeros(rows),
    )


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, inner: int = 1) -> tuple[float, float, float]:
    """(median, min, max) milliseconds per call of ``fn`` over ``repeats`` timings of ``inner`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) * 1000.0 / inner)
    return statistics.median(times), min(times), max(times)


def matmul_gflops(shapes: list[tuple[int, int, int]], repeats: int) -> dict[str, float]:
    """Measured fp32 GFLOP/s of (M x K) @ (K x N) for each shape (median of repeats, >= 0.2 s each)."""
    rates = {}
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        flops = 2.0 * m * k * n
        start = time.perf_counter()
        calls = 0
        while time.perf_counter() - start < 0.05:
            torch.mm(a, b)
            calls += 1
        per_repeat = max(1, int(calls * 4))  # ~0.2 s per repeat
        med, _, _ = median_ms(lambda: torch.mm(a, b), repeats=repeats, warmup=0, inner=per_repeat)
        rates[f"{m}x{k}x{n}"] = flops / (med / 1000.0) / 1e9
    return rates


def update_flops(agent: DIMEAgent, batch: Batch) -> float:
    """FLOPs of one update, averaged over a policy-delay cycle."""
    cycle = agent.cfg.policy_delay
    with FlopCounterMode(display=False) as counter:
        for _ in range(cycle):
            agent.update(batch)
    return counter.get_total_flops() / cycle


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def memory_probe(preset: str, obs_dim: int, act_dim: int) -> dict[str, float]:
    """Run in a fresh process: build, then one policy-delay cycle; resident-memory figures in MiB.

    The RSS high-water mark is reset after building (Linux: writing 5 to /proc/self/clear_refs), so the
    growth is that of the update cycle alone, not of imports or construction.
    """
    cfg = DIMEConfig.preset(preset)
    agent = DIMEAgent(obs_dim, act_dim, cfg, seed=0)
    batch = make_batch(obs_dim, act_dim, cfg.batch_size)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    for _ in range(cfg.policy_delay):
        agent.update(batch)
    peak = _status_mib("VmHWM")
    return {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "update_peak_growth_mib": peak - before}


def run_memory_probe(preset: str, obs_dim: int, act_dim: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", preset, "--obs-dim", str(obs_dim),
         "--act-dim", str(act_dim), "--threads", str(threads)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_preset(preset: str, obs_dim: int, act_dim: int, repeats: int, warmup: int, rates: dict[str, float]) -> dict[str, float]:
    cfg = DIMEConfig.preset(preset)
    agent = DIMEAgent(obs_dim, act_dim, cfg, seed=0)
    batch = make_batch(obs_dim, act_dim, cfg.batch_size)
    cycle = cfg.policy_delay

    def one_cycle() -> None:
        for _ in range(cycle):
            agent.update(batch)

    cycle_ms, cycle_min, cycle_max = median_ms(one_cycle, repeats, warmup)
    obs1 = np.zeros(obs_dim, dtype=np.float32)
    act_ms, _, _ = median_ms(lambda: agent.act(obs1), repeats=repeats, warmup=5, inner=20)
    flops = update_flops(agent, batch)
    rate = rates["ceiling"]
    lower_bound_ms = flops / (rate * 1e9) * 1000.0
    update_ms = cycle_ms / cycle
    return {
        "update_ms": update_ms,
        "update_ms_min": cycle_min / cycle,
        "update_ms_max": cycle_max / cycle,
        "act_ms": act_ms,
        "update_gflop": flops / 1e9,
        "lower_bound_ms": lower_bound_ms,
        "ratio": update_ms / lower_bound_ms,
        "achieved_gflops": flops / 1e9 / (update_ms / 1000.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "cpu"])
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=9, help="timed policy-delay cycles per preset")
    parser.add_argument("--warmup", type=int, default=3, help="untimed cycles before timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-probe", metavar="PRESET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.obs_dim, args.act_dim)))
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, obs {args.obs_dim}, action {args.act_dim}, "
          f"median of {args.repeats} cycles after {args.warmup} warm-up cycles")
    shapes = [(256, 256, 256), (512, 256, 256), (512, 2048, 2048)]
    rates = matmul_gflops(shapes, repeats=5)
    rates["ceiling"] = max(rates.values())
    print("fp32 matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    rows = []
    for preset in args.presets:
        cfg = DIMEConfig.preset(preset)
        result = bench_preset(preset, args.obs_dim, args.act_dim, args.repeats, args.warmup, rates)
        result.update(run_memory_probe(preset, args.obs_dim, args.act_dim, args.threads))
        rows.append((preset, cfg, result))

    header = (f"{'preset':<7} {'critic':>11} {'score net':>13} {'update ms':>10} {'[min-max]':>13} {'act ms':>7} "
              f"{'GFLOP/upd':>9} {'bound ms':>8} {'ratio':>6} {'GFLOP/s':>7} {'peak MiB':>8} {'upd +MiB':>8}")
    print(header)
    print("-" * len(header))
    for preset, cfg, r in rows:
        critic = "x".join(map(str, cfg.critic_hidden))
        score = "x".join(map(str, cfg.score_hidden))
        print(f"{preset:<7} {critic:>11} {score:>13} {r['update_ms']:>10.1f} "
              f"{'[' + format(r['update_ms_min'], '.1f') + '-' + format(r['update_ms_max'], '.1f') + ']':>13} "
              f"{r['act_ms']:>7.2f} {r['update_gflop']:>9.2f} {r['lower_bound_ms']:>8.1f} {r['ratio']:>6.2f} "
              f"{r['achieved_gflops']:>7.0f} {r['peak_rss_mib']:>8.0f} {r['update_peak_growth_mib']:>8.0f}")
    print("update ms: one critic update + 1/policy_delay of an actor+temperature update; bound ms: update FLOPs "
          "at the best measured matmul rate; ratio = update ms / bound ms; upd +MiB: peak-RSS growth during the "
          "first policy-delay cycle of a fresh process (Adam state included).")


if __name__ == "__main__":
    main()
