"""Does off-policy evaluation rank policies as their true values do? FQE against rollouts in a simulator.

Policies of clearly different quality are all evaluated by FQE on one logged dataset and compared
with their true values: the discounted return (gamma 0.99) of rollouts in the simulator started in
the data's own initial states, over ``--horizon`` steps or until a termination (0.99^400 = 0.018:
the tail left out is below 2 % of any value here). OPE sees the data and the policy only. Two
environments (``--env``):

**pendulum** (default). Logged data: the shipped Pendulum sample (3000 transitions in 15 episodes
of a medium replay buffer). Policies:

* DIME checkpoints along pretraining on that data (``--budgets`` gradient steps each), acting in
  their deployment mode (best of K chains by the critics, as ``load_policy`` and ``ope`` use);
* uniformly random actions (stochastic: FQE draws 8 actions per state);
* full torque for ever (``spin``: the pendulum whirls, a bad policy);
* behaviour cloning of the logged data (``bc``: ``o2o.train_bc``'s MLP, ``--bc-steps`` steps; every
  suite has it, as the issue's list of policies does).

and, reported apart because they go where the shipped data never goes (the upright states; the
limit docs/algorithm.md names), two hand-written controllers: energy-pumping swing-up with a PD balance (``swing_up``,
about -130 per 200-step episode, expert level) and the same with half the torque (``swing_up_half``).
The initial states are set into Pendulum-v1 (the state is the angle and the angular velocity the
observation holds); the env is deterministic, so only the random policy is rolled out ``--repeats``
times per state. ``--controller-episodes N`` adds N noisy episodes of the swing-up controller to
the logged data, so that it covers the upright states too.

**cstr**. Logged data: ``--hours`` of the CSTR twin's historian export under its PI loop and
operator (``--telemetry-seed``), converted with the shipped spec as benchmarks/cstr_demo.py does
(written into the workdir), or ``--data``; ``--operator-noise`` widens the logged actions. Policies:

* DIME checkpoints along pretraining on that data, with the demo's agent and offline settings
  (``cstr_demo.DEMO_AGENT``, ``DEMO_OFFLINE``), acting in their deployment mode;
* the plant's PI loop without the operator (``pi``) and the same loop detuned (``pi_sluggish``:
  gain 0.5 K/K, integral time 10 min). The loop remembers its previous temperature, so FQE replays
  it along the logged episodes (``ope._replayed_actions``), and a rollout starts it reset;
* the jacket setpoint held where it is (``hold``: the output frozen, as an operator in MANUAL);
* uniformly random jacket setpoints.

The initial states are set into the twin (reactor temperature, concentration, jacket temperature,
setpoint, feed temperature and the previous jacket setpoint are all in the observation); the twin
is stochastic (feed temperature, setpoint schedule), so every policy is rolled out ``--repeats``
times per state, each rollout with its own seed, and a rollout stops at an interlock trip.

**hopper** (any gym-MuJoCo locomotion env whose observation leaves out the x position: the state is
set from a logged observation). Logged data: ``--data`` (e.g. the medium-replay recipe's file,
``benchmarks/make_datasets.py hopper --stage online``). Policies: uniformly random actions, DIME
checkpoints along pretraining on the data (the defaults), and any further checkpoints named with
``--policy NAME=RUN`` (e.g. the online run that made the data). The env is deterministic from a set
state, so only the random policy is rolled out ``--repeats`` times per initial state.

Reported: each policy's truth, estimate, relative error and action gap, the Spearman rank
correlation (target >= 0.8), how many pairs of policies whose true values are >= 10 % apart the
estimates order right, and the mean relative error, over the main set and over all of them; with
bootstrap intervals (``OPEConfig``'s default, as ``dime-offline ope`` runs), the same ranking figures
for the intervals' lower ends and how many intervals hold their truth.

    python benchmarks/ope_validation.py [--env cstr] --workdir /tmp/ope-bench [--reuse] [--bootstrap 0]
        [--json out.json] [--fqe-seeds 1 2] [--set critic=distributional]
    python benchmarks/ope_validation.py --env hopper --data cache/datasets/hopper-medium-replay-dime.parquet \
        --budgets 100 1000 5000 --policy online_20k=cache/datasets/hopper-dime-run --workdir /tmp/ope-hopper
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from cstr_demo import DEMO_AGENT, DEMO_OFFLINE, SHIPPED_SPEC
from o2o import train_bc

from dime_offline.config import apply_overrides, to_dict
from dime_offline.converters import convert_telemetry, load_spec
from dime_offline.data.actions import scale_action
from dime_offline.data.load import load_dataset
from dime_offline.data.replay import ReplayConfig, ReplayStore
from dime_offline.data.schema import TransitionData
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.cstr import OBS_NAMES, CSTRParams
from dime_offline.envs.make import make_env
from dime_offline.envs.pi_controller import U_PREV_INDEX, PIConfig, PIController
from dime_offline.envs.telemetry import (
    TelemetryConfig,
    generate_telemetry,
    write_telemetry,
)
from dime_offline.evaluation.baselines import UniformRandomPolicy
from dime_offline.ope import OPEConfig, fitted_q_evaluation
from dime_offline.policy import load_policy
from dime_offline.regularizers import OfflineConfig
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.types import EpisodicPolicy, Policy

SAMPLE = Path(__file__).resolve().parents[1] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"
PENDULUM = "Pendulum-v1"
BALANCE_COS = 0.93
"""The swing-up controllers balance (PD) once cos(angle) exceeds this, and pump energy below it."""
GAMMA = 0.99
SEPARATED = 0.10
"""Two policies count as clearly apart when their true values differ by this share of the larger."""


@dataclass(frozen=True)
class Candidate:
    """A policy to validate on."""

    policy: Policy
    deterministic: bool
    main_set: bool = True
    """False: reported apart (it goes where the logged data never goes)."""


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


class HoldJacket:
    """The CSTR twin's jacket setpoint held where it is (the controller output frozen)."""

    def __init__(self, params: CSTRParams) -> None:
        self.low, self.high = np.array([params.u_low]), np.array([params.u_high])

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return scale_action(obs[:, [U_PREV_INDEX]].astype(np.float64), self.low, self.high).astype(np.float32)


@dataclass
class Suite:
    """One environment's validation: its simulator, logged data, pretraining settings and policies."""

    name: str
    env_id: str
    stochastic_env: bool
    """True: every policy is rolled out ``--repeats`` times per initial state (else only stochastic ones)."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIME settings of the pretraining runs (on top of the ``cpu`` preset)."""
    offline: dict[str, Any] = field(default_factory=dict)
    """OfflineConfig settings of the pretraining runs."""

    def make(self, horizon: int) -> gym.Env[Any, Any]:
        """The simulator, with no time limit inside ``horizon`` steps."""
        if self.env_id == CSTR_ENV_ID:  # the twin truncates itself at its own horizon
            return make_env(self.env_id, max_episode_steps=horizon + 1, horizon=horizon + 1)
        return make_env(self.env_id, max_episode_steps=horizon + 1)

    def start(self, env: gym.Env[Any, Any], obs: np.ndarray, seed: int) -> np.ndarray:
        """Put ``env`` into the state a logged observation shows; returns the observation it then gives."""
        if self.env_id == CSTR_ENV_ID:
            value = dict(zip(OBS_NAMES, obs.astype(np.float64)))
            options = {
                "state": (value["concentration_a"], value["reactor_temp"], value["jacket_temp"]),
                "setpoint": value["temp_setpoint"], "feed_temp": value["feed_temp"], "u_prev": value["prev_jacket_sp"],
            }
            return env.reset(seed=seed, options=options)[0]
        env.reset(seed=seed)
        if self.env_id == PENDULUM:
            env.unwrapped.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]])
        else:  # gym-MuJoCo locomotion: observation = qpos without the x position, then qvel
            nq = env.unwrapped.model.nq
            env.unwrapped.set_state(np.r_[0.0, obs[: nq - 1]], obs[nq - 1 :])
        return env.unwrapped._get_obs()


SUITES = {
    "pendulum": Suite("pendulum", PENDULUM, stochastic_env=False),
    "cstr": Suite(
        "cstr", CSTR_ENV_ID, stochastic_env=True,
        # The demo's settings, but acting as deployed (best of K), as the Pendulum checkpoints do.
        agent={k: v for k, v in DEMO_AGENT.items() if k != "deterministic_act"}, offline=dict(DEMO_OFFLINE),
    ),
    "hopper": Suite("hopper", "Hopper-v4", stochastic_env=False),
}


def policies_for(suite: Suite, runs: dict[str, Path], seed: int, action_dim: int, bc: Policy) -> dict[str, Candidate]:
    """The validation's policies, worst first where known (``bc``: the behaviour-cloning policy)."""
    checkpoints = {name: Candidate(load_policy(path, seed=seed), True) for name, path in runs.items()}
    generic = {"random": Candidate(UniformRandomPolicy(action_dim, seed), False), "bc": Candidate(bc, True)}
    if suite.env_id == CSTR_ENV_ID:
        return {
            **generic,
            "hold": Candidate(HoldJacket(CSTRParams()), True),
            **checkpoints,
            "pi_sluggish": Candidate(PIController(PIConfig(gain=0.5, integral_minutes=10.0), seed=seed), True),
            "pi": Candidate(PIController(seed=seed), True),
        }
    if suite.env_id != PENDULUM:
        return {**generic, **checkpoints}
    return {
        "full_torque": Candidate(FullTorque(), True),
        **generic,
        **checkpoints,
        "swing_up_half": Candidate(SwingUp(limit=0.5), True, main_set=False),
        "swing_up": Candidate(SwingUp(), True, main_set=False),
    }


def logged_data(suite: Suite, args: argparse.Namespace, workdir: Path) -> tuple[str, TransitionData, str]:
    """(file pretrained on, data FQE sees, a tag naming that data for the truth cache)."""
    if suite.env_id == CSTR_ENV_ID and args.data is None:
        operator = PIConfig(output_noise=args.operator_noise if args.operator_noise is not None else PIConfig.output_noise)
        noise_tag = "" if args.operator_noise is None else f"-noise{args.operator_noise:g}"
        logs = workdir / f"logs-{args.hours:g}h-seed{args.telemetry_seed}{noise_tag}.parquet"
        if not (args.reuse and logs.is_file()):
            telemetry = generate_telemetry(TelemetryConfig(hours=args.hours, seed=args.telemetry_seed, controller=operator))
            historian = write_telemetry(telemetry.long, workdir / "historian.csv")
            convert_telemetry(historian, load_spec(SHIPPED_SPEC), logs)
        path = str(logs)
    else:
        path = args.data or str(SAMPLE)
    data = load_dataset(path, check_continuity=False)
    if suite.env_id == CSTR_ENV_ID:
        return path, data, Path(path).stem
    if args.controller_episodes:
        data = with_controller_episodes(data, args.controller_episodes, noise=0.5, seed=args.seed + 1000)
    return path, data, str(args.controller_episodes)


def true_value(
    suite: Suite, policy: Policy, initial_obs: np.ndarray, *, gamma: float, horizon: int, deterministic: bool
) -> float:
    """Mean discounted return over ``horizon`` steps (or up to a termination) of the simulator started
    in each observed state (rollout i seeded with i)."""
    envs = [suite.make(horizon) for _ in initial_obs]
    obs = np.stack([suite.start(env, start, seed=i) for i, (env, start) in enumerate(zip(envs, initial_obs))]).astype(np.float32)
    if isinstance(policy, EpisodicPolicy):
        policy.reset()
    total, alive = np.zeros(len(envs)), np.ones(len(envs), bool)
    for t in range(horizon):
        actions = policy.act(obs, deterministic=deterministic)
        for i in np.flatnonzero(alive):
            obs[i], reward, terminated, *_ = envs[i].step(actions[i])
            total[i] += gamma**t * reward
            alive[i] = not terminated
        if not alive.any():
            break
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


def pairs_ordered(truth: np.ndarray, estimate: np.ndarray) -> tuple[int, int]:
    """(pairs the estimates order as the truths, pairs) over the pairs whose true values are clearly apart."""
    right = total = 0
    for i in range(len(truth)):
        for j in range(i + 1, len(truth)):
            if abs(truth[i] - truth[j]) >= SEPARATED * max(abs(truth[i]), abs(truth[j])):
                total += 1
                right += (truth[i] - truth[j]) * (estimate[i] - estimate[j]) > 0
    return right, total


def ranking_figures(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How well one FQE seed's estimates rank and value ``rows`` (policies with "truth", "estimate",
    "relative_error", "lo", "hi"). With intervals, also the ranking by their lower ends: the
    pessimistic choice, which marks down a policy whose value the resamples disagree on."""
    truth = np.array([r["truth"] for r in rows])
    estimate = np.array([r["estimate"] for r in rows])
    errors = [r["relative_error"] for r in rows]
    right, apart = pairs_ordered(truth, estimate)
    figures: dict[str, Any] = {
        "policies": len(rows), "spearman": spearman(truth, estimate), "pairs_apart_ordered": f"{right}/{apart}",
        "mean_relative_error": float(np.mean(errors)), "max_relative_error": float(np.max(errors)),
    }
    if all(r["lo"] is not None for r in rows):
        lower = np.array([r["lo"] for r in rows])
        right, apart = pairs_ordered(truth, lower)
        figures["interval_covers_truth"] = sum(r["lo"] <= r["truth"] <= r["hi"] for r in rows)
        figures["spearman_lower_bound"] = spearman(truth, lower)
        figures["pairs_apart_ordered_lower_bound"] = f"{right}/{apart}"
    return figures


def checkpoints(suite: Suite, budgets: list[int], workdir: Path, data: str, seed: int, threads: int, reuse: bool) -> dict[str, Path]:
    """One pretraining run per budget, all with the same seed."""
    runs = {}
    for steps in budgets:
        out = workdir / f"pretrain-{steps}"
        if not (reuse and (out / "checkpoint" / "meta.json").is_file()):
            started = time.monotonic()
            pretrain(PretrainConfig(
                data=data, steps=steps, seed=seed, out_dir=str(out), overwrite=True, eval_every=0, eval_episodes=1,
                checkpoint_every=0, log_every=max(steps // 4, 1), tensorboard=False, quiet=True, torch_threads=threads,
                agent=suite.agent, offline=OfflineConfig(**suite.offline),
            ))
            print(f"pretrained {steps} steps in {time.monotonic() - started:.0f} s", flush=True)
        runs[f"dime_{steps}"] = out
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(SUITES), default="pendulum", help="simulator and policy set")
    parser.add_argument("--data", default=None, help="logged data (default: the shipped Pendulum sample; the"
                        " generated historian export on the CSTR twin)")
    parser.add_argument("--hours", type=float, default=60.0, help="cstr: hours of generated plant history")
    parser.add_argument("--telemetry-seed", type=int, default=11, help="cstr: seed of the generated plant history")
    parser.add_argument("--operator-noise", type=float, default=None,
                        help="cstr: std of the operator's noise on the logged PI output, K (default 0.3): wider logged actions")
    parser.add_argument("--budgets", nargs="+", type=int, default=[100, 400, 1500], help="pretraining steps per checkpoint")
    parser.add_argument("--workdir", default=None, help="where the data, checkpoints and truths go"
                        " (default: runs/ope-validation, runs/ope-validation-cstr)")
    parser.add_argument("--reuse", action="store_true", help="reuse data, checkpoints and truths already in --workdir")
    parser.add_argument("--steps", type=int, default=OPEConfig.steps, help="FQE steps per policy")
    parser.add_argument("--fits", type=int, default=OPEConfig.fits, help="whole-data fits averaged into the estimate")
    parser.add_argument("--bootstrap", type=int, default=OPEConfig.bootstrap,
                        help="bootstrap replicates per policy (each costs a critic; 0: estimates only, about 3x faster)")
    parser.add_argument("--horizon", type=int, default=400, help="rollout steps of the true value")
    parser.add_argument("--repeats", type=int, default=8, help="rollouts per initial state of a stochastic policy or env")
    parser.add_argument("--controller-episodes", type=int, default=0,
                        help="pendulum: add this many episodes of the swing-up controller (action noise 0.5) to the logged data")
    parser.add_argument("--seed", type=int, default=0, help="pretraining, the random policy, BC, the added episodes")
    parser.add_argument("--bc-steps", type=int, default=5000, help="gradient steps of the behaviour-cloning policy")
    parser.add_argument("--fqe-seeds", nargs="+", type=int, default=None, help="FQE seeds, one fit per seed (default: --seed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override an OPEConfig field for every fit, e.g. --set critic=distributional (repeatable)")
    parser.add_argument("--policy", action="append", default=[], metavar="NAME=RUN",
                        help="also validate on this checkpoint (a run folder), reported as NAME (repeatable)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    suite = SUITES[args.env]
    if args.controller_episodes and suite.env_id != PENDULUM:
        parser.error("--controller-episodes adds swing-up episodes: pendulum only")
    if suite.env_id not in (PENDULUM, CSTR_ENV_ID) and args.data is None:
        parser.error(f"--env {args.env} needs --data (logged transitions of {suite.env_id})")
    extra = dict(item.split("=", 1) for item in args.policy if "=" in item)
    if len(extra) != len(args.policy):
        parser.error("--policy takes NAME=RUN")

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    print(f"load {os.getloadavg()}", flush=True)
    workdir = Path(args.workdir or ("runs/ope-validation" if suite.env_id == PENDULUM else f"runs/ope-validation-{suite.name}"))
    workdir.mkdir(parents=True, exist_ok=True)
    data_path, data, data_tag = logged_data(suite, args, workdir)
    print(f"logged data {data_path}: {len(data)} transitions, {len(data.episode_starts())} episodes", flush=True)
    initial = data.obs[data.episode_starts()]
    runs = checkpoints(suite, args.budgets, workdir, data_path, args.seed, args.threads, args.reuse)
    runs.update({name: Path(run) for name, run in extra.items()})
    # BC of the data FQE sees, trained afresh each run (seconds); its truth is cached like the others',
    # so --reuse with another --bc-steps or --seed needs a fresh workdir.
    bc, _ = train_bc(ReplayStore.from_transitions(data, ReplayConfig(online_capacity=0)), args.bc_steps, batch_size=256,
                     seed=args.seed)
    policies = policies_for(suite, runs, args.seed, data.action_dim, bc)
    base = apply_overrides(OPEConfig(data=data_path, steps=args.steps, fits=args.fits, bootstrap=args.bootstrap), args.set)
    fqe_seeds = args.fqe_seeds or [args.seed]
    rows = []
    # True values depend on the policy, the initial states and the rollout settings only: kept in the
    # workdir so that a rerun with other FQE settings (--reuse) does not roll out again.
    truth_file = workdir / f"truths-{data_tag}-{args.horizon}-{args.repeats}-{args.seed}.json"
    truths = json.loads(truth_file.read_text()) if args.reuse and truth_file.is_file() else {}
    for name, candidate in policies.items():
        repeats = args.repeats if suite.stochastic_env or not candidate.deterministic else 1
        if name not in truths:
            truths[name] = true_value(suite, candidate.policy, np.repeat(initial, repeats, axis=0), gamma=GAMMA,
                                      horizon=args.horizon, deterministic=candidate.deterministic)
            truth_file.write_text(json.dumps(truths))
        truth = truths[name]
        for fqe_seed in fqe_seeds:
            cfg = dataclasses.replace(base, seed=fqe_seed, policy_samples=None if candidate.deterministic else 8)
            result = fitted_q_evaluation(candidate.policy, data, cfg, gamma=GAMMA, deterministic=candidate.deterministic)
            row = {
                "policy": name, "fqe_seed": fqe_seed, "main_set": candidate.main_set, "truth": truth,
                "estimate": result.value.estimate, "lo": result.value.lo, "hi": result.value.hi,
                "relative_error": abs(result.value.estimate - truth) / abs(truth),
                "behaviour": result.behaviour_value.estimate, "action_gap": result.action_gap,
                "last_quarter_change": result.last_quarter_change, "fit_spread": result.fit_spread,
            }
            rows.append(row)
            interval = "" if row["lo"] is None else f" [{row['lo']:.1f}, {row['hi']:.1f}]"
            print(f"{name} (FQE seed {fqe_seed}): truth {truth:.1f}, OPE {row['estimate']:.1f}{interval}, relative error"
                  f" {row['relative_error']:.2f}, action gap {row['action_gap']:.2f}", flush=True)

    summary: dict[str, object] = {"env": suite.env_id, "data": data_path, "rows": rows, "args": vars(args),
                                  "fqe": to_dict(base), "load_end": os.getloadavg()}
    for fqe_seed in fqe_seeds:
        seed_rows = [r for r in rows if r["fqe_seed"] == fqe_seed]
        for label, chosen in (("main_set", [r for r in seed_rows if r["main_set"]]), ("all", seed_rows)):
            figures = ranking_figures(chosen)
            summary[f"{label}_seed{fqe_seed}"] = figures
            print(f"{label}, FQE seed {fqe_seed}: {figures}", flush=True)
    summary["wall_seconds"] = time.monotonic() - started
    print(f"behaviour (logged, Monte-Carlo): {rows[0]['behaviour']:.1f}; wall {summary['wall_seconds']:.0f} s;"
          f" load {os.getloadavg()}")
    print("| policy | FQE seed | true value | OPE estimate | relative error | action gap |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        interval = "" if r["lo"] is None else f" [{r['lo']:.1f}, {r['hi']:.1f}]"
        print(f"| {r['policy']}{'' if r['main_set'] else ' (apart)'} | {r['fqe_seed']} | {r['truth']:.1f}"
              f" | {r['estimate']:.1f}{interval} | {r['relative_error']:.2f} | {r['action_gap']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
