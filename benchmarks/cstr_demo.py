"""The CSTR demo, end to end: historian export -> canonical dataset -> offline DIME -> online
fine-tuning in the twin -> comparison with the plant's PI controller.

Steps (each one the library function behind a CLI command, see docs/demo-cstr.md):

1. ``data make-telemetry``: simulate the twin under its PI controller and operator for ``--hours``
   and write a historian-style long export (``historian.csv``, plus the simulator's truth);
2. ``data from-telemetry``: convert it with the shipped spec ``datasets/specs/telemetry/cstr.yaml``
   (``logs.parquet`` and ``conversion_report.json``);
3. ``pretrain``: DIME offline on the logs (``pretrain/``);
4. ``finetune --checkpoint pretrain/ --data logs.parquet``: online in ``dime_offline/CSTR-v0``
   (``finetune/``);
5. evaluation of the PI controller (deterministic, and stochastic as operated, i.e. the behaviour
   policy), the pretrained and the fine-tuned policy on the same seeded episodes (the same
   setpoint schedules and feed disturbances), with process metrics next to the return.

Writes ``results.json`` and ``cstr-demo.png`` into ``--out`` and prints the table. The plot shows
the learning curves (noise-free policy, on the training-time evaluation episodes, with the PI
controller's return on those same episodes) and one comparison episode's reactor temperature and
jacket setpoint under each controller. Defaults are sized for about 10-15 minutes on two idle CPU
cores.

Run:  python benchmarks/cstr_demo.py [--out runs/cstr-demo] [--pretrain-steps 3000] [--finetune-steps 2400]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dime_offline.checkpoints import load_checkpoint
from dime_offline.converters import convert_telemetry, load_spec
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.make import make_env
from dime_offline.envs.pi_controller import SETPOINT_INDEX, PIController
from dime_offline.envs.telemetry import (
    TelemetryConfig,
    generate_telemetry,
    write_telemetry,
)
from dime_offline.io import atomic_path, atomic_write_text
from dime_offline.trainers.loop import EvalRecord
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET
from dime_offline.types import Policy

REPO = Path(__file__).resolve().parents[1]
SHIPPED_SPEC = REPO / "datasets" / "specs" / "telemetry" / "cstr.yaml"

DEMO_AGENT: dict[str, Any] = {
    # The value support sized for the twin: rewards are about -1 per step (-100 on a trip), so
    # discounted returns (gamma 0.99) lie well inside [-500, 100]; the MuJoCo default of +-1600
    # would spend most of the 101 atoms on values that never occur.
    "v_min": -500.0,
    "v_max": 100.0,
    # One action dimension needs less than the authors' 3 x 256 score net; 128 wide halves the
    # cost of a regularised update on two CPU cores (docs/algorithm.md, section 6).
    "score_hidden": [128, 128, 128],
    # Temperature: rewards are about 1 per step here (MuJoCo: 5-10), so start alpha at 0.1, and
    # ask for a narrower policy than the authors' -4 per dimension: a tracking loop needs the
    # jacket setpoint to within a fraction of a kelvin (1 K is 0.067 in [-1, 1] units).
    "alpha_init": 0.1,
    "target_entropy_per_dim": -8.0,
    # Lets the comparison also report the noise-free chain (act(deterministic=True)).
    "deterministic_act": "noise_free",
}
"""DIME settings of the demo on top of the ``cpu`` preset (``--agent-set key=value`` adds more)."""

DEMO_OFFLINE: dict[str, Any] = {
    # A strong behaviour term: within a few thousand gradient steps it is what keeps the offline
    # policy next to the PI controller's actions (weight 0.1: the policy drifts to a hot jacket
    # and trips the reactor; 1: no trips but 2.7 K tracking error; 10: 0.7 K, at 1500 steps).
    "behaviour_weight": 10.0,
}
"""OfflineConfig settings of the demo (``--offline-set key=value`` adds more)."""


# ------------------------------------------------------------------------------------------------
# Evaluation with process metrics
@dataclass
class Episode:
    """One closed-loop episode of the twin (T steps)."""

    seed: int
    episode_return: float
    terminated: bool
    minutes: np.ndarray
    """(T,) time at the end of each step, min."""
    reactor_temp: np.ndarray
    """(T,) reactor temperature at the end of each step, K."""
    setpoint: np.ndarray
    """(T,) reactor temperature setpoint the step was meant to reach, K."""
    jacket_sp: np.ndarray
    """(T,) jacket temperature setpoint applied during the step, K."""
    u_start: float
    """Jacket setpoint in force before the first step, K."""

    @property
    def tracking_error(self) -> float:
        """Mean |T - T_sp| over the episode, K."""
        return float(np.mean(np.abs(self.reactor_temp - self.setpoint)))

    @property
    def mean_move(self) -> float:
        """Mean |u_t - u_{t-1}| per step (controller moves), K."""
        return float(np.mean(np.abs(np.diff(self.jacket_sp, prepend=self.u_start))))


def run_episode(policy: Policy, seed: int, *, deterministic: bool) -> Episode:
    """Roll ``policy`` (actions in [-1, 1]) through one episode of the twin from ``reset(seed)``."""
    env = make_env(CSTR_ENV_ID)
    if isinstance(policy, PIController):
        policy.reset()
    try:
        obs, _ = env.reset(seed=seed)
        dt = env.unwrapped.params.dt_minutes
        u_start = float(obs[-1])
        temps, setpoints, moves, total = [], [], [], 0.0
        terminated = truncated = False
        while not (terminated or truncated):
            setpoint = float(obs[SETPOINT_INDEX])
            action = policy.act(np.asarray(obs, np.float32)[None], deterministic=deterministic)[0]
            obs, reward, terminated, truncated, info = env.step(action)
            temps.append(setpoint + info["tracking_error"])
            setpoints.append(setpoint)
            moves.append(info["applied_action"])
            total += float(reward)
    finally:
        env.close()
    steps = len(temps)
    return Episode(seed, total, bool(terminated), dt * np.arange(1, steps + 1), np.asarray(temps),
                   np.asarray(setpoints), np.asarray(moves), u_start)


def evaluate_controller(
    name: str, policy: Policy, seeds: list[int], *, deterministic: bool
) -> tuple[dict[str, Any], list[Episode]]:
    """Table row (means over the seeds, per-episode returns and trips) and the episodes."""
    episodes = [run_episode(policy, s, deterministic=deterministic) for s in seeds]
    returns = np.array([e.episode_return for e in episodes])
    row = {
        "controller": name,
        "episodes": len(episodes),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "trips_per_episode": float(np.mean([e.terminated for e in episodes])),
        "tracking_error_K": float(np.mean([e.tracking_error for e in episodes])),
        "move_K_per_step": float(np.mean([e.mean_move for e in episodes])),
        "length_mean": float(np.mean([len(e.reactor_temp) for e in episodes])),
        "returns": returns.tolist(),
        "terminated": [e.terminated for e in episodes],
    }
    return row, episodes


# ------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/cstr-demo"), help="Run directory (replaced).")
    parser.add_argument("--hours", type=float, default=120.0, help="Hours of plant history to generate.")
    parser.add_argument("--telemetry-seed", type=int, default=11, help="Seed of the plant history.")
    parser.add_argument("--spec", type=Path, default=SHIPPED_SPEC, help="Converter spec.")
    parser.add_argument("--pretrain-steps", type=int, default=3000, help="Offline gradient steps.")
    parser.add_argument("--finetune-steps", type=int, default=2400, help="Online env steps (240 = one 2-h episode).")
    parser.add_argument("--utd", type=int, default=1, help="Updates per env step while fine-tuning.")
    parser.add_argument("--pretrain-eval-every", type=int, default=500, help="Gradient steps between evaluations.")
    parser.add_argument("--finetune-eval-every", type=int, default=480, help="Env steps between evaluations.")
    parser.add_argument("--train-eval-episodes", type=int, default=5, help="Episodes per evaluation during training.")
    parser.add_argument("--eval-episodes", type=int, default=10, help="Episodes of the final comparison.")
    parser.add_argument("--eval-seed", type=int, default=5000, help="Comparison episode i uses reset(eval_seed + i).")
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument("--preset", default="cpu", help="DIME preset.")
    parser.add_argument("--agent-set", action="append", default=[], metavar="KEY=VALUE",
                        help="Extra DIME setting on top of the demo's (repeatable), e.g. diffusion_steps=8.")
    parser.add_argument("--offline-set", action="append", default=[], metavar="KEY=VALUE",
                        help="OfflineConfig setting (repeatable), e.g. conservative_weight=0.3.")
    parser.add_argument("--torch-threads", type=int, default=1, help="Torch CPU threads.")
    parser.add_argument("--plot-episode", type=int, default=None,
                        help="Comparison episode to plot (index; default: the PI controller's worst).")
    parser.add_argument("--plot-copy", type=Path, default=None,
                        help="Also write the plot here (e.g. docs/img/cstr-demo.png).")
    return parser.parse_args(argv)


def _settings(items: list[str]) -> dict[str, Any]:
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"setting '{item}' must look like key=value")
        out[key.strip()] = yaml.safe_load(raw)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.torch_threads)
    timings: dict[str, float] = {}
    machine = {
        "platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": args.torch_threads,
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
    }
    print(f"machine: {machine['platform']}, {machine['cpus']} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch threads {args.torch_threads}")

    # 1. plant history under the PI controller, as a historian export
    started = time.monotonic()
    telemetry = generate_telemetry(TelemetryConfig(hours=args.hours, seed=args.telemetry_seed))
    historian = write_telemetry(telemetry.long, out / "historian.csv")
    timings["make_telemetry"] = time.monotonic() - started
    truth = telemetry.truth
    print(f"[1/5] {len(telemetry.long):,} historian rows, {args.hours:g} h, {truth['batch'].nunique()} batches, "
          f"{int(truth['terminated'].sum())} trip(s) ({timings['make_telemetry']:.0f} s)")

    # 2. historian export -> canonical transitions
    started = time.monotonic()
    logs = out / "logs.parquet"
    report = convert_telemetry(historian, load_spec(args.spec), logs)
    atomic_write_text(out / "conversion_report.json", report.to_json(indent=2) + "\n")
    timings["from_telemetry"] = time.monotonic() - started
    print(f"[2/5] {report.transitions:,} transitions in {report.episode_count} episodes "
          f"({timings['from_telemetry']:.0f} s)")

    # 3. offline pretraining
    agent_settings = {**DEMO_AGENT, **_settings(args.agent_set)}
    pre = pretrain(PretrainConfig(
        data=str(logs), steps=args.pretrain_steps, seed=args.seed, out_dir=str(out / "pretrain"), overwrite=True,
        preset=args.preset, agent=agent_settings, offline=_offline_config(args.offline_set),
        eval_every=args.pretrain_eval_every, eval_episodes=args.train_eval_episodes, eval_deterministic=True,
        checkpoint_every=0, log_every=100, torch_threads=args.torch_threads, tensorboard=False, quiet=True,
    ))
    timings["pretrain"] = pre.loop.wall_seconds
    print(f"[3/5] pretrain: {pre.loop.updates} gradient steps in {pre.loop.wall_seconds:.0f} s "
          f"({pre.loop.updates_per_second:.1f}/s)")

    # 4. online fine-tuning from the pretrained checkpoint, the logs kept in the replay store
    fine = finetune(FinetuneConfig(
        env_id=CSTR_ENV_ID, steps=args.finetune_steps, seed=args.seed, out_dir=str(out / "finetune"),
        overwrite=True, checkpoint=pre.checkpoint, data=str(logs), agent={"utd": args.utd},
        eval_every=args.finetune_eval_every, eval_episodes=args.train_eval_episodes, eval_deterministic=True,
        checkpoint_every=0, log_every=100, torch_threads=args.torch_threads, tensorboard=False, quiet=True,
    ))
    timings["finetune"] = fine.loop.wall_seconds
    print(f"[4/5] finetune: {fine.loop.steps} env steps, {fine.loop.updates} updates in {fine.loop.wall_seconds:.0f} s")

    # 5. the comparison, on the same seeded episodes
    started = time.monotonic()
    seeds = [args.eval_seed + i for i in range(args.eval_episodes)]
    offline_agent, _, _ = load_checkpoint(pre.checkpoint)
    online_agent, _, _ = load_checkpoint(fine.checkpoint)
    for agent in (offline_agent, online_agent):  # averaged weights, if kept, in every mode (as `evaluate`)
        agent.adopt_acting_average()
    controllers: list[tuple[str, Policy, bool]] = [
        ("PI (deterministic)", PIController(seed=args.eval_seed), True),
        ("PI + operator (behaviour policy)", PIController(seed=args.eval_seed), False),
        ("DIME offline (stochastic)", offline_agent, False),
        ("DIME offline (noise-free)", offline_agent, True),
        ("DIME fine-tuned (stochastic)", online_agent, False),
        ("DIME fine-tuned (noise-free)", online_agent, True),
    ]
    rows, episodes = [], {}
    for name, policy, deterministic in controllers:
        row, episodes[name] = evaluate_controller(name, policy, seeds, deterministic=deterministic)
        rows.append(row)
    # Plot the hardest episode (the PI controller's worst): where controllers differ most.
    plotted = int(np.argmin(rows[0]["returns"])) if args.plot_episode is None else args.plot_episode
    trajectories = {name: runs[plotted] for name, runs in episodes.items()}
    # The PI controller on the episodes the training-time evaluations used, for the learning curves.
    curve_seeds = [args.seed + EVAL_SEED_OFFSET + i for i in range(args.train_eval_episodes)]
    curve_references = {
        name: evaluate_controller(name, policy, curve_seeds, deterministic=deterministic)[0]["return_mean"]
        for name, policy, deterministic in controllers[:2]
    }
    timings["comparison"] = time.monotonic() - started
    timings["total"] = sum(timings.values())
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]

    table = format_table(rows)
    print(f"[5/5] comparison on {len(seeds)} episodes, seeds {seeds[0]}..{seeds[-1]} ({timings['comparison']:.0f} s)\n")
    print(table)
    results = {
        "machine": machine,
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "budgets": {
            "hours": args.hours, "telemetry_seed": args.telemetry_seed, "pretrain_steps": args.pretrain_steps,
            "finetune_steps": args.finetune_steps, "utd": args.utd, "eval_episodes": args.eval_episodes,
            "eval_seeds": seeds, "seed": args.seed, "preset": args.preset, "agent": agent_settings,
            "offline": {**DEMO_OFFLINE, **_settings(args.offline_set)}, "spec": str(args.spec),
        },
        "dataset": {"path": str(logs), "transitions": report.transitions, "episodes": report.episode_count,
                    "true_trips": int(truth["terminated"].sum())},
        "pretrain": pre.to_dict() | {"curve": _curve(pre.loop.evaluations)},
        "finetune": fine.to_dict() | {"curve": _curve(fine.loop.evaluations)},
        "curve_seeds": curve_seeds,
        "plot_episode_seed": seeds[plotted],
        "curve_references": curve_references,
        "comparison": rows,
        "table": table,
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    curves = (results["pretrain"]["curve"], results["finetune"]["curve"])
    plot(out / "cstr-demo.png", *curves, curve_references, trajectories)
    if args.plot_copy is not None:
        plot(args.plot_copy, *curves, curve_references, trajectories)
    print(f"\nwrote {out / 'results.json'} and {out / 'cstr-demo.png'} (total {timings['total']:.0f} s)")
    return results


def _offline_config(items: list[str]) -> Any:
    from dime_offline.regularizers import OfflineConfig

    return OfflineConfig(**{**DEMO_OFFLINE, **_settings(items)})


def _curve(evaluations: list[EvalRecord]) -> list[dict[str, float]]:
    return [{"step": r.step, "return_mean": r.stats.return_mean, "return_std": r.stats.return_std,
             "terminated_episodes": int(sum(r.stats.terminated))} for r in evaluations]


def format_table(rows: list[dict[str, Any]]) -> str:
    """The comparison as a Markdown table."""
    lines = [
        "| controller | return (mean ± std) | trips / episode | mean abs(T − T_sp), K | mean abs(Δu), K/step |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['controller']} | {r['return_mean']:.1f} ± {r['return_std']:.1f} | {r['trips_per_episode']:.2f} "
            f"| {r['tracking_error_K']:.2f} | {r['move_K_per_step']:.2f} |"
        )
    return "\n".join(lines)


def plot(
    path: Path, pre_curve: list[dict[str, float]], fine_curve: list[dict[str, float]], references: dict[str, float],
    trajectories: dict[str, Episode],
) -> None:
    """Learning curves (top; ``references``: PI returns on the same episodes) and one episode's
    temperature and jacket setpoint per controller (bottom)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10.0, 6.4), dpi=80)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, 2)
    for col, (curve, title, x_label) in enumerate(
        [(pre_curve, "offline pretraining", "gradient steps"), (fine_curve, "online fine-tuning", "env steps")]
    ):
        axes = figure.add_subplot(grid[0, col])
        steps = [point["step"] for point in curve]
        mean = np.array([point["return_mean"] for point in curve])
        std = np.array([point["return_std"] for point in curve])
        axes.plot(steps, mean, marker="o", markersize=3, color="C0", label="DIME, noise-free (eval mean ± std)")
        axes.fill_between(steps, mean - std, mean + std, color="C0", alpha=0.2)
        for (name, value), style in zip(references.items(), ("--", ":")):
            axes.axhline(value, color="k", linestyle=style, linewidth=1, label=f"{name}")
        axes.set_title(f"DIME {title}", fontsize="medium")
        axes.set_xlabel(x_label)
        axes.set_ylabel("episode return")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="x-small", loc="lower right")
    shown = ["PI (deterministic)", "PI + operator (behaviour policy)", "DIME offline (noise-free)",
             "DIME fine-tuned (noise-free)"]
    temp_axes = figure.add_subplot(grid[1, 0])
    move_axes = figure.add_subplot(grid[1, 1], sharex=temp_axes)
    first = trajectories[shown[0]]
    low, high = float(first.setpoint.min()) - 3.0, float(first.setpoint.max()) + 6.0
    temp_axes.step(first.minutes, first.setpoint, where="pre", color="k", linewidth=1, label="setpoint")
    for i, name in enumerate(shown):
        episode = trajectories[name]
        label = name + (" (tripped)" if episode.terminated else "")
        temp_axes.plot(episode.minutes, episode.reactor_temp, color=f"C{i}", linewidth=1, label=label)
        move_axes.plot(episode.minutes, episode.jacket_sp, color=f"C{i}", linewidth=1, label=label)
        if episode.terminated:  # the runaway leaves the axis: mark where the interlock tripped
            temp_axes.plot(episode.minutes[-1], high - 0.5, marker="x", markersize=8, color=f"C{i}")
    temp_axes.set_ylim(low, high)
    temp_axes.set_title(f"comparison episode with seed {first.seed} (x: interlock trip)", fontsize="medium")
    temp_axes.set_xlabel("minutes")
    temp_axes.set_ylabel("reactor temperature T, K")
    temp_axes.grid(alpha=0.3)
    temp_axes.legend(fontsize="x-small", loc="best")
    move_axes.set_title("jacket temperature setpoint u", fontsize="medium")
    move_axes.set_xlabel("minutes")
    move_axes.set_ylabel("u, K")
    move_axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


if __name__ == "__main__":
    main()
