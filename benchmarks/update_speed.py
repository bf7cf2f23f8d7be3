"""DIME update and action speed on this CPU, for each preset and compute precision, against a FLOP bound.

For every preset and every ``--precisions`` value (``agent.matmul_precision``: float32 against the
default ``auto``, i.e. bfloat16 products where the CPU has bf16 units) it measures, in one run, the
precisions' agents alternating cycle by cycle:

* ms per full agent update: critic update plus the amortised actor and temperature update, i.e. the wall
  time of one ``policy_delay`` cycle (3 ``agent.update`` calls) divided by its length;
* ms per action at batch 1 (``agent.act``, the 16-step chain);
* ms of the first update after building the agent (there is no compilation step to wait for);
* the FLOPs of one update (``torch.utils.flop_counter.FlopCounterMode`` over a whole cycle, divided by
  its length; it counts matmuls, forward and backward);
* the fp32 matmul rate of this machine for the update's dominant shapes, measured in the same run; the
  FLOP lower bound is update FLOPs / that rate, and the table reports measured time / lower bound;
* the peak memory of one update: the growth of the resident set's high-water mark (VmHWM, reset after
  building the agent) while a fresh process runs its first policy-delay cycle (Adam state included),
  plus that process's lifetime peak RSS (``resource.getrusage``). Each preset's probe runs in its own
  subprocess. Linux only.

Timings are medians over ``--repeats`` after ``--warmup`` cycles; the thread count and load average
are printed.
Shapes default to HalfCheetah (obs 17, action 6) at the preset's batch size.

    python benchmarks/update_speed.py                  # both presets
    python benchmarks/update_speed.py --presets cpu --repeats 20 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
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
from dime_offline.nets import score_net
from dime_offline.types import Batch


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


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
    """FLOPs of one update, averaged over a policy-delay cycle.

    Counted with the score net's fused Dense + GELU kernels switched off: the counter does not
    see inside oneDNN's fused op, and the products are the same either way.
    """
    cycle = agent.cfg.policy_delay
    fused = score_net.fused_linear_gelu_available
    score_net.fused_linear_gelu_available = lambda device: False
    try:
        with FlopCounterMode(display=False) as counter:
            for _ in range(cycle):
                agent.update(batch)
    finally:
        score_net.fused_linear_gelu_available = fused
    return counter.get_total_flops() / cycle


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise KeyError(field)


def memory_probe(preset: str, precision: str, obs_dim: int, act_dim: int) -> dict[str, float]:
    """Run in a fresh process: build, then one policy-delay cycle; resident-memory figures in MiB.

    The RSS high-water mark is reset after building (Linux: writing 5 to /proc/self/clear_refs), so the
    growth is that of the update cycle alone, not of imports or construction.
    """
    cfg = DIMEConfig.preset(preset, matmul_precision=precision)
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


def run_memory_probe(preset: str, precision: str, obs_dim: int, act_dim: int, threads: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-probe", preset, "--precisions", precision, "--obs-dim", str(obs_dim),
         "--act-dim", str(act_dim), "--threads", str(threads)],
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_preset(
    preset: str, precisions: list[str], obs_dim: int, act_dim: int, repeats: int, warmup: int, rates: dict[str, float]
) -> dict[str, dict[str, float]]:
    """Per precision: update and act times (the precisions' agents alternate cycle by cycle), the
    first update's time and the update's FLOP count and bound."""
    batch = make_batch(obs_dim, act_dim, DIMEConfig.preset(preset).batch_size)
    agents, first_ms = {}, {}
    for precision in precisions:
        agents[precision] = DIMEAgent(obs_dim, act_dim, DIMEConfig.preset(preset, matmul_precision=precision), seed=0)
        start = time.perf_counter()
        agents[precision].update(batch)
        first_ms[precision] = (time.perf_counter() - start) * 1000.0
    cycle = DIMEConfig.preset(preset).policy_delay
    obs1 = np.zeros(obs_dim, dtype=np.float32)
    for agent in agents.values():
        for _ in range(warmup * cycle):
            agent.update(batch)
    cycle_times: dict[str, list[float]] = {p: [] for p in precisions}
    act_times: dict[str, list[float]] = {p: [] for p in precisions}
    for _ in range(repeats):
        for precision, agent in agents.items():
            start = time.perf_counter()
            for _ in range(cycle):
                agent.update(batch)
            cycle_times[precision].append((time.perf_counter() - start) * 1000.0 / cycle)
            start = time.perf_counter()
            for _ in range(20):
                agent.act(obs1)
            act_times[precision].append((time.perf_counter() - start) * 1000.0 / 20)
    flops = update_flops(agents[precisions[0]], batch)  # the same products whatever their dtype
    lower_bound_ms = flops / (rates["ceiling"] * 1e9) * 1000.0
    out = {}
    for precision in precisions:
        update_ms = statistics.median(cycle_times[precision])
        out[precision] = {
            "update_ms": update_ms,
            "update_ms_min": min(cycle_times[precision]),
            "update_ms_max": max(cycle_times[precision]),
            "act_ms": statistics.median(act_times[precision]),
            "first_update_ms": first_ms[precision],
            "update_gflop": flops / 1e9,
            "lower_bound_ms": lower_bound_ms,
            "ratio": update_ms / lower_bound_ms,
            "achieved_gflops": flops / 1e9 / (update_ms / 1000.0),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["paper", "cpu"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"], help="agent.matmul_precision values")
    parser.add_argument("--obs-dim", type=int, default=17)
    parser.add_argument("--act-dim", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=9, help="timed policy-delay cycles per preset")
    parser.add_argument("--warmup", type=int, default=3, help="untimed cycles before timing")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--memory-probe", metavar="PRESET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe, args.precisions[0], args.obs_dim, args.act_dim)))
        return

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, obs {args.obs_dim}, action {args.act_dim}, "
          f"median of {args.repeats} cycles after {args.warmup} warm-up cycles, load {load_average()}")
    shapes = [(256, 256, 256), (512, 256, 256), (512, 2048, 2048)]
    rates = matmul_gflops(shapes, repeats=5)
    rates["ceiling"] = max(rates.values())
    print("fp32 matmul GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    rows = []
    for preset in args.presets:
        cfg = DIMEConfig.preset(preset)
        results = bench_preset(preset, args.precisions, args.obs_dim, args.act_dim, args.repeats, args.warmup, rates)
        for precision, result in results.items():
            result.update(run_memory_probe(preset, precision, args.obs_dim, args.act_dim, args.threads))
            rows.append((preset, precision, cfg, result))

    header = (f"{'preset':<7} {'critic':>11} {'precision':>9} {'update ms':>10} {'[min-max]':>13} {'act ms':>7} "
              f"{'1st upd ms':>10} {'GFLOP/upd':>9} {'bound ms':>8} {'ratio':>6} {'GFLOP/s':>7} {'peak MiB':>8} "
              f"{'upd +MiB':>8}")
    print(header)
    print("-" * len(header))
    for preset, precision, cfg, r in rows:
        critic = "x".join(map(str, cfg.critic_hidden))
        print(f"{preset:<7} {critic:>11} {precision:>9} {r['update_ms']:>10.1f} "
              f"{'[' + format(r['update_ms_min'], '.1f') + '-' + format(r['update_ms_max'], '.1f') + ']':>13} "
              f"{r['act_ms']:>7.2f} {r['first_update_ms']:>10.0f} {r['update_gflop']:>9.2f} {r['lower_bound_ms']:>8.1f} "
              f"{r['ratio']:>6.2f} {r['achieved_gflops']:>7.0f} {r['peak_rss_mib']:>8.0f} {r['update_peak_growth_mib']:>8.0f}")
    print("update ms: one critic update + 1/policy_delay of an actor+temperature update (the precisions' agents "
          "alternate cycle by cycle); bound ms: update FLOPs at the best fp32 matmul rate measured in this run; "
          "ratio = update ms / bound ms; 1st upd ms: the first update after building the agent; upd +MiB: peak-RSS "
          f"growth during the first policy-delay cycle of a fresh process (Adam state included). Load {load_average()}.")


if __name__ == "__main__":
    main()
