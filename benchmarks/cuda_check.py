"""Does DIME run right and fast on a CUDA GPU? One script for a machine with one (issue 8: "where a GPU is
present, ``--device cuda`` must work and use it well").

Sections, each printed as it finishes and saved to ``--out``/cuda_check.json:

* **parity**: agents built with one seed on the CPU and on the GPU hold the same weights; the noise-free
  chain's actions and the critics' expected Q on the same observations agree (float32 products, TF32
  off, so within float32 rounding); with ``auto`` precision (bfloat16 products on the GPU) they stay
  within a stated tolerance;
* **speed**: ms per agent update (one ``policy_delay`` cycle / its length, synchronised) and per batch-1
  action, for the ``cpu`` and ``paper`` presets and each ``--precisions`` value, on the GPU and on this
  machine's CPU at ``--cpu-threads`` threads, alternating device by device in one run; plus the update's
  FLOPs and the rate they imply, and the host synchronisations one update makes (CUDA sync debug mode);
* **online**: ``trainers.online.finetune`` on ``--env`` from scratch on the GPU, env steps per second of
  the steady logged intervals (the figure issue 8's online target is stated in);
* **pretrain**: ``trainers.offline.pretrain`` on ``--data`` on the GPU with the default regularisers,
  gradient steps per second;
* **learning** (``--learning``): the slow Pendulum learning test's run (tests/agent/test_learning.py)
  on the GPU; the best evaluation must pass -400 as it must on the CPU.

    python benchmarks/cuda_check.py --out /tmp/cuda            # on a machine with a CUDA GPU
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from update_speed import make_batch, update_flops  # noqa: E402

from dime_offline.agent.config import DIMEConfig  # noqa: E402
from dime_offline.agent.dime import DIMEAgent  # noqa: E402
from dime_offline.types import Batch  # noqa: E402

OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah
GPU = "cuda"  # --device: "cpu" dry-runs the script on a machine without one


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def on(batch: Batch, device: torch.device) -> Batch:
    return Batch(*(None if t is None else t.to(device) for t in batch))


def relative_error(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    a64 = torch.as_tensor(np.asarray(a), dtype=torch.float64)
    b64 = torch.as_tensor(np.asarray(b), dtype=torch.float64)
    return float((a64 - b64).norm() / b64.norm().clamp_min(1e-12))


def parity(preset: str) -> dict[str, float]:
    """Relative errors GPU vs CPU of the noise-free chain's actions and of the critics' expected Q."""
    obs = np.random.default_rng(1).standard_normal((64, OBS_DIM)).astype(np.float32)
    out: dict[str, float] = {}
    for precision in ("float32", "auto"):
        cfg = DIMEConfig.preset(preset, matmul_precision=precision, deterministic_act="noise_free")
        cpu = DIMEAgent(OBS_DIM, ACT_DIM, DIMEConfig.preset(preset, matmul_precision="float32",
                                                            deterministic_act="noise_free"), seed=0)
        gpu = DIMEAgent(OBS_DIM, ACT_DIM, cfg, seed=0, device=GPU)
        if precision == "float32":
            cpu_state, gpu_state = cpu.policy.state_dict(), gpu.policy.state_dict()
            out["max_weight_difference"] = max(
                float((cpu_state[k] - gpu_state[k].cpu()).abs().max()) for k in cpu_state if cpu_state[k].is_floating_point()
            )
        action_cpu = cpu.act(obs, deterministic=True)
        out[f"action_rel_error_{precision}"] = relative_error(gpu.act(obs, deterministic=True), action_cpu)
        out[f"q_rel_error_{precision}"] = relative_error(gpu.q_values(obs, action_cpu).cpu(), cpu.q_values(obs, action_cpu))
    return out


def count_syncs(agent: DIMEAgent, batch: Batch) -> float:
    """Host synchronisations per update over one policy-delay cycle (CUDA sync debug mode)."""
    cycle = agent.cfg.policy_delay
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(cycle):
                agent.update(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught) / cycle


def speed(presets: list[str], precisions: list[str], cpu_threads: int, cycles: int, warmup: int) -> list[dict]:
    """Update and act times per (preset, device, precision); the devices' agents alternate cycle by cycle."""
    rows = []
    for preset in presets:
        base = DIMEConfig.preset(preset)
        cpu_batch = make_batch(OBS_DIM, ACT_DIM, base.batch_size)
        flops = update_flops(DIMEAgent(OBS_DIM, ACT_DIM, DIMEConfig.preset(preset, matmul_precision="float32"), seed=0),
                             cpu_batch)
        agents = {}
        for device in (GPU, "cpu"):
            for precision in precisions:
                agent = DIMEAgent(OBS_DIM, ACT_DIM, DIMEConfig.preset(preset, matmul_precision=precision), seed=0,
                                  device=device)
                batch = on(cpu_batch, agent.device)
                start = time.perf_counter()
                agent.update(batch)
                sync(agent.device)
                first_ms = (time.perf_counter() - start) * 1000
                for _ in range(warmup * base.policy_delay):
                    agent.update(batch)
                agents[(device, precision)] = (agent, batch, first_ms)
        times: dict = {key: [] for key in agents}
        act_times: dict = {key: [] for key in agents}
        obs1 = np.zeros(OBS_DIM, dtype=np.float32)
        torch.set_num_threads(cpu_threads)
        for _ in range(cycles):
            for key, (agent, batch, _) in agents.items():
                sync(agent.device)
                start = time.perf_counter()
                for _ in range(base.policy_delay):
                    agent.update(batch)
                sync(agent.device)
                times[key].append((time.perf_counter() - start) * 1000 / base.policy_delay)
                start = time.perf_counter()
                for _ in range(10):
                    agent.act(obs1)
                act_times[key].append((time.perf_counter() - start) * 1000 / 10)
        for key, (agent, batch, first_ms) in agents.items():
            update_ms = statistics.median(times[key])
            rows.append({
                "preset": preset, "device": key[0], "precision": key[1],
                "compute_dtype": str(agent.matmul_dtype).removeprefix("torch."),
                "update_ms": update_ms, "update_ms_min": min(times[key]), "update_ms_max": max(times[key]),
                "act_ms_batch1": statistics.median(act_times[key]), "first_update_ms": first_ms,
                "update_gflop": flops / 1e9, "achieved_gflops": flops / 1e9 / (update_ms / 1000),
                "env_steps_per_s": 1000 / (update_ms * base.utd),
                "syncs_per_update": count_syncs(agent, batch) if key[0] == "cuda" else None,
            })
            print(json.dumps(rows[-1]), flush=True)
    return rows


def steady_rate(metrics_csv: Path) -> float:
    """Median updates/s over the logged intervals after the first one holding updates (e2e_speed.py's rule)."""
    with open(metrics_csv, newline="") as f:
        rates = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "train/updates_per_second"]
    with_updates = [i for i, rate in enumerate(rates) if rate > 0]
    steady = rates[with_updates[0] + 1 :] if with_updates else []
    return statistics.median(steady) if steady else float("nan")


def online(env_id: str, warmup: int, steps: int, precision: str, workdir: Path) -> dict:
    from dime_offline.trainers.online import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        env_id=env_id, steps=warmup + steps, seed=0, out_dir=str(workdir / f"online-{precision}"), preset="cpu",
        device=GPU, agent={"learning_starts": warmup, "matmul_precision": precision}, eval_every=warmup + steps,
        eval_episodes=2, checkpoint_every=0, log_every=100, tensorboard=False, quiet=True,
    )
    start = time.perf_counter()
    finetune(cfg)
    utd = DIMEConfig.preset("cpu").utd
    return {"job": "online", "env": env_id, "precision": precision, "wall_s": time.perf_counter() - start,
            "env_steps_per_s": steady_rate(Path(cfg.out_dir) / "metrics.csv") / utd}


def pretrain(data: str, steps: int, precision: str, workdir: Path) -> dict:
    from dime_offline.trainers.offline import PretrainConfig, pretrain as run_pretrain

    cfg = PretrainConfig(
        data=data, steps=steps, seed=0, out_dir=str(workdir / f"pretrain-{precision}"), preset="cpu", device=GPU,
        agent={"matmul_precision": precision}, eval_every=0, checkpoint_every=0, log_every=100, tensorboard=False,
        quiet=True,
    )
    start = time.perf_counter()
    run_pretrain(cfg)
    return {"job": "pretrain", "data": data, "precision": precision, "wall_s": time.perf_counter() - start,
            "grad_steps_per_s": steady_rate(Path(cfg.out_dir) / "metrics.csv")}


def pendulum_learning(workdir: Path) -> dict:
    """The slow Pendulum learning test's configuration on the GPU (tests/agent/test_learning.py)."""
    from dime_offline.trainers.online import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        env_id="Pendulum-v1", steps=5000, seed=0, out_dir=str(workdir / "pendulum"), preset="cpu", device=GPU,
        agent={"learning_starts": 1000, "v_min": -1600.0, "v_max": 200.0, "critic_hidden": [128, 128],
               "score_hidden": [128, 128, 128]},
        eval_every=1000, eval_episodes=5, checkpoint_every=0, log_every=1000, tensorboard=False, quiet=True,
    )
    start = time.perf_counter()
    result = finetune(cfg)
    returns = [r.stats.return_mean for r in result.loop.evaluations]
    return {"job": "pendulum_learning", "returns": returns, "best": max(returns), "passes": max(returns) > -400.0,
            "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sections", nargs="+", default=["parity", "speed", "online", "pretrain"],
                        choices=["parity", "speed", "online", "pretrain", "learning"])
    parser.add_argument("--presets", nargs="+", default=["cpu", "paper"])
    parser.add_argument("--precisions", nargs="+", default=["float32", "auto"])
    parser.add_argument("--cpu-threads", type=int, default=2, help="torch threads of the CPU agents")
    parser.add_argument("--cycles", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--env", default="HalfCheetah-v4")
    parser.add_argument("--online-warmup", type=int, default=300)
    parser.add_argument("--online-steps", type=int, default=600)
    parser.add_argument("--data", default=str(Path(__file__).parents[1] / "datasets/samples/pendulum-medium-replay-dime.parquet"))
    parser.add_argument("--pretrain-steps", type=int, default=600)
    parser.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global GPU
    GPU = args.device
    if GPU == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device is visible; this check needs one")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if GPU == "cuda" else GPU,
                    "bf16": GPU == "cuda" and torch.cuda.is_bf16_supported(), "cpu_threads": args.cpu_threads,
                    "load": os.getloadavg(), "cpu_bf16": [getattr(torch.cpu, n)() for n in
                                                          ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
                                                          if hasattr(torch.cpu, n)]}
    print(json.dumps(report), flush=True)
    save = lambda: (args.out / "cuda_check.json").write_text(json.dumps(report, indent=1))  # noqa: E731
    workdir = Path(tempfile.mkdtemp())
    for section in args.sections:
        start = time.perf_counter()
        try:
            if section == "parity":
                report["parity"] = {preset: parity(preset) for preset in args.presets}
            elif section == "speed":
                report["speed"] = speed(args.presets, args.precisions, args.cpu_threads, args.cycles, args.warmup)
            elif section == "online":
                report["online"] = [online(args.env, args.online_warmup, args.online_steps, p, workdir)
                                    for p in args.precisions]
            elif section == "pretrain":
                report["pretrain"] = [pretrain(args.data, args.pretrain_steps, p, workdir) for p in args.precisions]
            elif section == "learning":
                report["learning"] = pendulum_learning(workdir)
        except Exception as error:  # a report of what failed is the point of the check: keep going
            import traceback

            report[section] = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
        report.setdefault("section_seconds", {})[section] = time.perf_counter() - start
        print(f"== {section} ({report['section_seconds'][section]:.0f} s): "
              + json.dumps(report[section])[:3000], flush=True)
        save()


if __name__ == "__main__":
    main()
