"""Offline-to-online benchmark: DIME-offline and DIME fine-tuning against baselines, side by side.

One dataset, several seeds, the same budgets for every method:

Offline (``--offline-steps`` gradient steps, batch ``--batch-size``, then the final policy is
evaluated on ``--final-episodes`` episodes):

* ``dime-offline``: ``dime-offline pretrain`` (conservative critic + behaviour term, defaults);
* ``bc``: behaviour cloning, an MLP (2 x 256, ReLU, tanh output) regressing the data actions
  (MSE, Adam 3e-4) on standardised observations, written here (CORL's BC setting);
* ``iql``, ``td3bc``, ``cql``: d3rlpy 2.8.1 IQL, TD3+BC and CQL with the settings of d3rlpy's own
  D4RL reproductions (IQL: expectile 0.7, temperature 3, return-based reward scale x1000; TD3+BC:
  alpha 2.5, standardised observations; CQL: 2 x 256 encoders, actor lr 1e-4, 10 action samples,
  conservative weight 5 with a Lagrangian threshold of 10). d3rlpy is a benchmark-only extra
  (benchmarks/README.md).

Online (``--online-steps`` env steps each, same update-to-data ratio, evaluations every
``--eval-every`` steps on ``--eval-episodes`` episodes):

* ``dime-finetune``: ``dime-offline finetune`` from this seed's ``dime-offline`` checkpoint, with
  the dataset kept in the replay store (50/50 batches) and no random warm-up;
* ``dime-scratch``: DIME from scratch (random warm-up of ``--learning-starts`` steps);
* ``dime-rlpd``: DIME from scratch with the dataset in its replay store, 50/50 batches (RLPD-style).

Reported per method, as normalised scores (100 x (R - R_random) / (R_expert - R_random), references
from the dataset's metadata, else D4RL's table): the offline score; online, the score at the
boundary (step 0: the pretrained policy for ``dime-finetune``), the minimum over the first
``--dip-window`` online steps (default a tenth of the online budget, the issue's 10k of 100k) and
the final score; mean +- std over seeds; and per online method the seeds whose gains were kept (issue
9: no evaluation after the dip window below 0.9 x the best earlier one by more than twice its standard
error, as ``handover_report.curve_measures`` judges it; results stored before 2026-12-02 lack the
noise and are not judged). All policies are
evaluated from the same start states
(reset seeds ``seed + 1_000_003 + i``, as ``finetune`` does); DIME policies act as ``--dime-acting``
says (default deterministic, the library's best-of-K; "stochastic" is the authors' protocol and what
the results recorded before 0.2 used), BC and d3rlpy policies deterministically.

Each (method, seed) result is stored as JSON under ``--out``/results and reused on the next call
(``--force`` reruns), so a long benchmark can run in bounded pieces:

    python benchmarks/o2o.py --data cache/datasets/pendulum-medium-replay-dime.parquet \
        --offline-steps 5000 --online-steps 5000 --seeds 0 1 2 --methods bc iql td3bc
    python benchmarks/o2o.py --data ... --methods dime-offline dime-finetune --seeds 0
    python benchmarks/o2o.py --data ... --report        # table, o2o.json and o2o.png from stored results

A fine-tuning variant (``--finetune-set handover.conservative_weight=0``, repeatable) is measured on
the same checkpoints in an ``--out`` of its own holding copies of the stored results and the
``dime-offline`` runs: only the ``dime-finetune`` records must match the variant, the others are shared.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dime_offline.config import apply_overrides
from dime_offline.data.normalization import NormalizationStats
from dime_offline.data.parquet import read_parquet_metadata
from dime_offline.data.replay import ReplayStore
from dime_offline.evaluation.metrics import (
    EpisodeStats,
    normalized_score,
    reference_returns,
)
from dime_offline.evaluation.rollout import evaluate
from dime_offline.trainers.loop import seed_everything
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET
from dime_offline.types import Policy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ is not a package: its sibling scripts by path
from handover_report import curve_measures, within_tenth_below  # noqa: E402

OFFLINE_METHODS = ("dime-offline", "bc", "iql", "td3bc", "cql")
D3RLPY_METHODS = ("iql", "td3bc", "cql")
ONLINE_METHODS = ("dime-finetune", "dime-scratch", "dime-rlpd")
METHODS = OFFLINE_METHODS + ONLINE_METHODS
D3RLPY_HINT = (
    "the iql/td3bc/cql baselines need d3rlpy 2.8.1: pip install d3rlpy==2.8.1 --no-deps && pip install tqdm"
    " 'gym>=0.26' click structlog colorama dataclasses-json scikit-learn (see benchmarks/README.md)"
)


@dataclass(frozen=True)
class Setup:
    """The benchmark's fixed settings, shared by every method and seed."""

    data: str
    """Canonical Parquet dataset."""
    env_id: str
    """Environment for evaluation and online training (default: the dataset's ``env_id``)."""
    offline_steps: int
    """Gradient steps of every offline method."""
    online_steps: int
    """Env steps of every online method."""
    batch_size: int
    """Batch size of every method."""
    eval_every: int
    """Env steps between online evaluations."""
    eval_episodes: int
    """Episodes per online evaluation."""
    final_episodes: int
    """Episodes of the final evaluation of offline policies."""
    dip_window: int
    """Online steps over which the minimum ("unlearning dip") is taken."""
    learning_starts: int
    """Random warm-up steps of the from-scratch online runs."""
    preset: str
    """DIME preset."""
    agent: dict[str, Any]
    """DIMEConfig overrides for every DIME run."""
    out: str
    """Output folder."""
    dime_acting: str = "deterministic"
    """How DIME policies act in evaluations: "deterministic" (the library's default, best of K chains by
    the critics) or "stochastic" (samples of the chain, the authors' protocol)."""
    finetune: tuple[str, ...] = ()
    """``finetune --set`` overrides of the ``dime-finetune`` runs (e.g. ``handover.conservative_weight=0``):
    a fine-tuning variant measured on the same checkpoints, in its own ``--out``."""


# ----------------------------------------------------------------------------- data
def load_store(setup: Setup) -> ReplayStore:
    """The dataset as an offline-only replay store (actions in [-1, 1], returns-to-go, statistics)."""
    return ReplayStore.from_parquet(setup.data, online_capacity=0)


def references(setup: Setup) -> tuple[float, float] | None:
    metadata, *_ = read_parquet_metadata(setup.data)
    return reference_returns(setup.env_id, metadata)


def run_evaluation(policy: Policy, setup: Setup, seed: int, episodes: int, deterministic: bool) -> EpisodeStats:
    metadata, *_ = read_parquet_metadata(setup.data)
    return evaluate(
        policy, setup.env_id, episodes, seed=seed + EVAL_SEED_OFFSET, deterministic=deterministic, metadata=metadata
    )


# ----------------------------------------------------------------------------- behaviour cloning
class BCPolicy:
    """An MLP (O -> 256 -> 256 -> A, ReLU, tanh) on standardised observations; acts deterministically."""

    def __init__(self, obs_dim: int, act_dim: int, stats: NormalizationStats, hidden: int = 256) -> None:
        self.net = torch.nn.Sequential(
            torch.nn.Linear(obs_dim, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
            torch.nn.Linear(hidden, act_dim), torch.nn.Tanh(),
        )
        self.mean = torch.as_tensor(np.asarray(stats.obs_mean, np.float32))
        self.std = torch.as_tensor(np.asarray(stats.obs_std, np.float32))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """(B, O) raw observations -> (B, A) actions in [-1, 1]."""
        return self.net((obs - self.mean) / self.std)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return self.forward(torch.as_tensor(obs, dtype=torch.float32)).numpy()


def train_bc(store: ReplayStore, steps: int, batch_size: int, seed: int, lr: float = 3e-4) -> tuple[BCPolicy, float]:
    """Fit :class:`BCPolicy` to the store's (obs, action) pairs; returns it and the last loss."""
    assert store.normalization is not None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = BCPolicy(store.obs_dim, store.action_dim, store.normalization)
    optimiser = torch.optim.Adam(policy.net.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed + 3)
    loss = torch.zeros(())
    for _ in range(steps):
        batch = store.sample(batch_size, generator=generator)
        loss = torch.nn.functional.mse_loss(policy.forward(batch.obs), batch.action)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
    return policy, float(loss.detach())


# ----------------------------------------------------------------------------- d3rlpy baselines
class D3rlpyPolicy:
    """Adapter from a fitted d3rlpy algorithm to the ``Policy`` protocol (deterministic actions)."""

    def __init__(self, algo: Any) -> None:
        self.algo = algo

    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        return np.clip(self.algo.predict(np.asarray(obs, np.float32)), -1.0, 1.0)


def import_d3rlpy() -> Any | None:
    """d3rlpy with its per-step logging silenced, or None when it is not installed."""
    try:
        import d3rlpy
        import structlog
    except ImportError:
        return None
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return d3rlpy


def train_d3rlpy(method: str, store: ReplayStore, steps: int, batch_size: int, seed: int) -> D3rlpyPolicy:
    """IQL, TD3+BC or CQL with d3rlpy's D4RL-reproduction settings on the store's data ([-1, 1] actions)."""
    algo, dataset = build_d3rlpy(method, store, batch_size, seed)
    fit_d3rlpy(algo, dataset, steps)
    return D3rlpyPolicy(algo)


def build_d3rlpy(method: str, store: ReplayStore, batch_size: int, seed: int) -> tuple[Any, Any]:
    """(algorithm, dataset): an unfitted d3rlpy IQL, TD3+BC or CQL with d3rlpy's D4RL-reproduction
    settings, and the store's offline rows as a d3rlpy dataset (actions in [-1, 1])."""
    d3rlpy = import_d3rlpy()
    if d3rlpy is None:
        sys.exit(D3RLPY_HINT)
    n = store.offline_size
    terminals = store.terminated[:n].numpy().astype(np.float32)
    timeouts = store.truncated[:n].numpy().astype(np.float32)
    if not (terminals[-1] or timeouts[-1]):
        timeouts[-1] = 1.0
    dataset = d3rlpy.dataset.MDPDataset(
        observations=store.obs[:n].numpy(), actions=store.action[:n].numpy(), rewards=store.reward[:n].numpy(),
        terminals=terminals, timeouts=timeouts, action_space=d3rlpy.ActionSpace.CONTINUOUS,
    )
    d3rlpy.seed(seed)
    if method == "iql":
        config = d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=batch_size, expectile=0.7,
            weight_temp=3.0, max_weight=100.0,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0),
        )
    elif method == "cql":
        encoder = d3rlpy.models.encoders.VectorEncoderFactory([256, 256])
        config = d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4, alpha_learning_rate=3e-4,
            initial_alpha=math.e, actor_encoder_factory=encoder, critic_encoder_factory=encoder,
            batch_size=batch_size, n_action_samples=10, alpha_threshold=10.0, conservative_weight=5.0,
        )
    else:
        config = d3rlpy.algos.TD3PlusBCConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=batch_size, target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5, alpha=2.5, update_actor_interval=2,
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
        )
    return config.create(device=False), dataset


def fit_d3rlpy(algo: Any, dataset: Any, steps: int) -> None:
    """``steps`` gradient steps of d3rlpy's own ``fit`` loop, without logging or saving (a second call
    goes on training the same networks)."""
    d3rlpy = import_d3rlpy()
    algo.fit(
        dataset, n_steps=steps, n_steps_per_epoch=steps, show_progress=False, save_interval=steps + 1,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )


# ----------------------------------------------------------------------------- DIME
def run_dir(setup: Setup, method: str, seed: int) -> Path:
    return Path(setup.out) / "runs" / f"{method}-s{seed}"


def pretrain_dime(setup: Setup, seed: int) -> tuple[Policy, dict[str, Any]]:
    """``dime-offline pretrain`` for ``setup.offline_steps`` gradient steps; returns the agent and facts."""
    try:
        from dime_offline.trainers.offline import PretrainConfig, pretrain
    except ImportError:
        sys.exit("dime-offline pretrain is not available in this checkout (dime_offline/trainers/offline.py)")
    from dime_offline.checkpoints import load_checkpoint

    out = run_dir(setup, "dime-offline", seed)
    cfg = PretrainConfig(
        data=setup.data, steps=setup.offline_steps, seed=seed, out_dir=str(out), overwrite=True, preset=setup.preset,
        agent={**setup.agent, "batch_size": setup.batch_size}, eval_every=0, tensorboard=False, quiet=True,
    )
    result = pretrain(cfg)
    agent, _, _ = load_checkpoint(result.checkpoint)
    return agent, {"wall_seconds": result.loop.wall_seconds, "updates": result.loop.updates, "checkpoint": result.checkpoint}


def finetune_dime(setup: Setup, method: str, seed: int) -> dict[str, Any]:
    """One online DIME run (see the module docstring); returns its evaluations and timings."""
    checkpoint = None
    if method == "dime-finetune":
        checkpoint = str(run_dir(setup, "dime-offline", seed))
        if not Path(checkpoint).exists():
            sys.exit(f"dime-finetune needs the dime-offline run of seed {seed} first ({checkpoint})")
    agent = {"batch_size": setup.batch_size}
    if checkpoint is None:
        agent.update(setup.agent, learning_starts=setup.learning_starts)
    cfg = FinetuneConfig(
        env_id=setup.env_id, steps=setup.online_steps, seed=seed, out_dir=str(run_dir(setup, method, seed)),
        overwrite=True, checkpoint=checkpoint, data=None if method == "dime-scratch" else setup.data,
        preset=setup.preset, agent=agent, eval_every=setup.eval_every, eval_episodes=setup.eval_episodes,
        checkpoint_every=0, tensorboard=False, quiet=True, eval_deterministic=setup.dime_acting == "deterministic",
    )
    if checkpoint is not None:
        cfg = apply_overrides(cfg, list(setup.finetune))
    result = finetune(cfg)
    curve = [(r.step, r.stats.return_mean) for r in result.loop.evaluations]
    noise = [evaluation_noise(r.stats) for r in result.loop.evaluations]
    if checkpoint is not None:  # the boundary: the pretrained policy on the same start states
        from dime_offline.checkpoints import load_checkpoint

        pretrained, _, _ = load_checkpoint(checkpoint)
        deterministic = setup.dime_acting == "deterministic"
        stats = run_evaluation(pretrained, setup, seed, setup.eval_episodes, deterministic)
        curve.insert(0, (0, stats.return_mean))
        noise.insert(0, evaluation_noise(stats))
    return {
        "curve": curve,
        "noise": noise,
        # with the champion (finetune's default) the curve is the deployed policy's; the learner's own returns
        # on the selection episodes, and where the champion came from, are kept beside it
        **_champion_series(Path(result.metrics_csv)),
        "wall_seconds": result.loop.wall_seconds,
        "updates": result.loop.updates,
        "updates_per_second": result.loop.updates_per_second,
    }


def _champion_series(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's ``eval/selection_learner`` and ``eval/champion_step`` series (empty without a champion)."""
    series: dict[str, list[tuple[int, float]]] = {"learner_selection_curve": [], "champion_steps": []}
    names = {"eval/selection_learner": "learner_selection_curve", "eval/champion_step": "champion_steps"}
    with open(metrics_csv) as handle:
        for row in csv.DictReader(handle):
            if row["key"] in names:
                series[names[row["key"]]].append((int(row["step"]), float(row["value"])))
    return series


# ----------------------------------------------------------------------------- one (method, seed)
def run_method(setup: Setup, method: str, seed: int) -> dict[str, Any]:
    """Train and evaluate one method for one seed; returns a JSON-ready record."""
    seed_everything(seed)
    started = time.monotonic()
    record: dict[str, Any] = {"method": method, "seed": seed, "load_average_before": _loadavg()}
    if method in OFFLINE_METHODS:
        store = load_store(setup)
        deterministic = True
        if method == "bc":
            policy, loss = train_bc(store, setup.offline_steps, setup.batch_size, seed)
            record["final_loss"] = loss
        elif method in D3RLPY_METHODS:
            policy = train_d3rlpy(method, store, setup.offline_steps, setup.batch_size, seed)
        else:
            policy, facts = pretrain_dime(setup, seed)
            record.update(facts)
            deterministic = setup.dime_acting == "deterministic"
        train_seconds = time.monotonic() - started
        stats = run_evaluation(policy, setup, seed, setup.final_episodes, deterministic)
        record.update(
            train_seconds=train_seconds, gradient_steps=setup.offline_steps, return_mean=stats.return_mean,
            return_std=stats.return_std, episodes=stats.episodes,
        )
    else:
        record.update(finetune_dime(setup, method, seed))
        record["env_steps"] = setup.online_steps
    record["wall_seconds"] = time.monotonic() - started
    record["load_average_after"] = _loadavg()
    return record


# ----------------------------------------------------------------------------- summary
def online_scores(curve: list[tuple[int, float]], refs: tuple[float, float] | None, window: int) -> dict[str, float | None]:
    """Normalised scores of one online run's evaluation curve [(env step, mean return), ...]:
    the boundary (step 0, if evaluated), the minimum over steps in (0, window], the final one, and
    the mean over every online evaluation (an area under the curve: sample efficiency)."""
    score = lambda r: normalized_score(r, refs) if refs is not None else r  # noqa: E731
    boundary = [r for s, r in curve if s == 0]
    early = [r for s, r in curve if 0 < s <= window]
    online = [r for s, r in curve if s > 0]
    return {
        "boundary": score(boundary[0]) if boundary else None,
        "min_first_window": score(min(early)) if early else None,
        "final": score(curve[-1][1]),
        "mean_online": score(float(np.mean(online))) if online else None,
    }


def evaluation_noise(stats: EpisodeStats) -> float:
    """Twice the standard error of an evaluation's mean return: issue 9's evaluation noise."""
    return 2.0 * stats.return_std / math.sqrt(stats.episodes)


def gains_kept(record: dict[str, Any], refs: tuple[float, float] | None, window: int) -> bool | None:
    """Issue 9's keep-what-is-found verdict of one online run after the first ``window`` steps, by
    ``handover_report.curve_measures``, in the table's units (normalised scores where there are
    references, their noise scaled alike); None for a record stored without its evaluations' noise."""
    if "noise" not in record:
        return None
    curve = np.asarray(record["curve"], dtype=float)
    noise = np.asarray(record["noise"], dtype=float)
    values = curve[:, 1]
    if refs is not None:  # the affine map of normalized_score, and its scale for the noise
        values, noise = 100.0 * (values - refs[0]) / (refs[1] - refs[0]), 100.0 * noise / (refs[1] - refs[0])
    online = curve[:, 0] > 0
    return curve_measures(None, curve[online, 0], values[online], noise[online], window)[4]


def mean_std(values: list[float | None]) -> tuple[float, float, int] | None:
    kept = [v for v in values if v is not None]
    if not kept:
        return None
    return float(np.mean(kept)), float(np.std(kept)), len(kept)


def summarise(setup: Setup, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-method mean +- std over seeds of the offline and online scores."""
    refs = references(setup)
    score = lambda r: normalized_score(r, refs) if refs is not None else r  # noqa: E731
    summary: dict[str, Any] = {"offline": {}, "online": {}}
    for method in OFFLINE_METHODS:
        rows = [r for r in records if r["method"] == method]
        if rows:
            summary["offline"][method] = {
                "score": mean_std([score(r["return_mean"]) for r in rows]),
                "seeds": sorted(r["seed"] for r in rows),
                "train_seconds": mean_std([r["train_seconds"] for r in rows]),
            }
    for method in ONLINE_METHODS:
        rows = [r for r in records if r["method"] == method]
        if rows:
            per_seed = [online_scores([tuple(p) for p in r["curve"]], refs, setup.dip_window) for r in rows]
            entry = {key: mean_std([p[key] for p in per_seed]) for key in ("boundary", "min_first_window", "final", "mean_online")}
            entry["seeds"] = sorted(r["seed"] for r in rows)
            entry["wall_seconds"] = mean_std([r["wall_seconds"] for r in rows])
            verdicts = [v for v in (gains_kept(r, refs, setup.dip_window) for r in rows) if v is not None]
            if verdicts:  # counted over the seeds whose records hold their evaluations' noise
                entry["kept"] = (sum(verdicts), len(verdicts))
            if method == "dime-finetune":
                # The goal: the dip stays within 10 % of the offline (boundary) score, per seed.
                ratios = [
                    p["min_first_window"] / p["boundary"] if p["boundary"] and p["min_first_window"] is not None else None
                    for p in per_seed
                ]
                entry["dip_ratio"] = mean_std(ratios)
                entry["seeds_without_dip"] = sum(
                    p["boundary"] is not None and p["min_first_window"] is not None
                    and within_tenth_below(p["min_first_window"], p["boundary"])
                    for p in per_seed
                )
            summary["online"][method] = entry
    return summary


def format_table(setup: Setup, summary: dict[str, Any]) -> str:
    def cell(value: tuple[float, float, int] | None) -> str:
        return "—" if value is None else f"{value[0]:.1f} ± {value[1]:.1f}"

    unit = "normalised score" if references(setup) is not None else "return"
    lines = [
        f"Offline: {setup.offline_steps} gradient steps, batch {setup.batch_size}; {unit}, final policy,"
        f" {setup.final_episodes} episodes (mean ± std over seeds)",
        "| method | score | seeds | train s |",
        "|---|---|---|---|",
    ]
    for method, entry in summary["offline"].items():
        lines.append(f"| {method} | {cell(entry['score'])} | {len(entry['seeds'])} | {cell(entry['train_seconds'])} |")
    lines += [
        "",
        f"Online: {setup.online_steps} env steps; {unit}; evaluations every {setup.eval_every} steps on"
        f" {setup.eval_episodes} episodes; dip = minimum over the first {setup.dip_window} steps;"
        " mean = mean over all online evaluations",
        "| method | boundary | dip (min, first window) | final | mean | seeds | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, entry in summary["online"].items():
        lines.append(
            f"| {method} | {cell(entry['boundary'])} | {cell(entry['min_first_window'])} | {cell(entry['final'])}"
            f" | {cell(entry['mean_online'])} | {len(entry['seeds'])} | {cell(entry['wall_seconds'])} |"
        )
    for method, entry in summary["online"].items():
        if "kept" in entry:
            lines.append(f"\n{method}: gains kept (no fall below 0.9 x the best by more than 2 SE) in"
                         f" {entry['kept'][0]} of {entry['kept'][1]} seeds")
    finetuned = summary["online"].get("dime-finetune")
    if finetuned is not None and finetuned.get("dip_ratio") is not None:
        lines.append(
            f"\ndime-finetune: dip within 10 % of the boundary score in {finetuned['seeds_without_dip']} of"
            f" {len(finetuned['seeds'])} seeds (dip / boundary {cell(finetuned['dip_ratio'])})"
        )
    return "\n".join(lines)


def plot(setup: Setup, summary: dict[str, Any], records: list[dict[str, Any]], path: Path) -> None:
    """Offline scores as bars (left) and online curves, mean ± std over seeds (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    refs = references(setup)
    score = lambda r: normalized_score(r, refs) if refs is not None else r  # noqa: E731
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.6]})
    names = list(summary["offline"])
    means = [summary["offline"][m]["score"][0] for m in names]
    stds = [summary["offline"][m]["score"][1] for m in names]
    left.bar(names, means, yerr=stds, color=["tab:red" if m.startswith("dime") else "tab:gray" for m in names], capsize=3)
    left.set_title(f"offline, {setup.offline_steps} gradient steps", fontsize=10)
    left.set_ylabel("normalised score" if refs is not None else "return")
    left.tick_params(axis="x", labelsize=8)
    for method, colour in zip(ONLINE_METHODS, ("tab:red", "tab:blue", "tab:green"), strict=True):
        curves = [dict((int(s), score(r)) for s, r in rec["curve"]) for rec in records if rec["method"] == method]
        if not curves:
            continue
        steps = sorted(set.intersection(*(set(c) for c in curves)))
        values = np.array([[c[s] for s in steps] for c in curves])
        right.plot(steps, values.mean(0), color=colour, label=f"{method} (n={len(curves)})")
        right.fill_between(steps, values.mean(0) - values.std(0), values.mean(0) + values.std(0), color=colour, alpha=0.2)
    baselines = {m: e["score"][0] for m, e in summary["offline"].items() if not m.startswith("dime")}
    if baselines:  # the best offline baseline, for reference against the online curves
        best = max(baselines, key=lambda m: baselines[m])
        right.axhline(baselines[best], color="tab:gray", lw=1, ls="--", label=f"{best} offline")
    if right.lines:
        right.legend(fontsize=8)
    right.axvline(setup.dip_window, color="k", lw=0.5, ls=":")
    right.set_title(f"online, {setup.online_steps} env steps", fontsize=10)
    right.set_xlabel("online env steps")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ----------------------------------------------------------------------------- main
def parse_setup(args: argparse.Namespace) -> Setup:
    metadata, *_ = read_parquet_metadata(args.data)
    env_id = args.env or metadata.env_id
    if not env_id:
        sys.exit(f"{args.data} names no environment; pass --env")
    agent: dict[str, Any] = {}
    for item in args.agent_set:
        key, _, raw = item.partition("=")
        agent[key] = json.loads(raw)
    window = args.dip_window or max(1, args.online_steps // 10)
    out = args.out or str(Path("cache/o2o") / Path(args.data).stem)
    return Setup(
        data=str(args.data), env_id=env_id, offline_steps=args.offline_steps, online_steps=args.online_steps,
        batch_size=args.batch_size, eval_every=args.eval_every or max(1, args.online_steps // 40),
        eval_episodes=args.eval_episodes, final_episodes=args.final_episodes, dip_window=window,
        learning_starts=args.learning_starts if args.learning_starts is not None else min(5000, args.online_steps // 5),
        preset=args.preset, agent=agent, out=out, dime_acting=args.dime_acting, finetune=tuple(args.finetune_set),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="canonical Parquet dataset")
    parser.add_argument("--env", default=None, help="gymnasium id (default: the dataset's env_id)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--offline-steps", type=int, default=100_000, help="gradient steps of each offline method")
    parser.add_argument("--online-steps", type=int, default=100_000, help="env steps of each online method")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--eval-every", type=int, default=None, help="default: online steps / 40")
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--final-episodes", type=int, default=10)
    parser.add_argument("--dip-window", type=int, default=None, help="default: online steps / 10")
    parser.add_argument("--learning-starts", type=int, default=None, help="scratch warm-up (default min(5000, online/5))")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--dime-acting", choices=("deterministic", "stochastic"), default="deterministic",
                        help="DIME evaluations: best-of-K deterministic (library default) or sampled (authors)")
    parser.add_argument("--agent-set", action="append", default=[], metavar="FIELD=JSON", help="DIMEConfig override")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="FIELD=VALUE",
                        help="finetune override of the dime-finetune runs (repeatable), e.g. handover.conservative_weight=0")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--out", default=None, help="output folder (default cache/o2o/<dataset>)")
    parser.add_argument("--plot-copy", default=None, help="also copy the plot here (e.g. docs/img/o2o.png)")
    parser.add_argument("--force", action="store_true", help="rerun (method, seed) pairs that have results")
    parser.add_argument("--report", action="store_true", help="only summarise stored results")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = parse_setup(args)
    out = Path(setup.out)
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    (out / "setup.json").write_text(json.dumps(asdict(setup), indent=2) + "\n")

    methods = [m for m in METHODS if m in args.methods]
    if set(D3RLPY_METHODS) & set(methods) and import_d3rlpy() is None:
        print(f"[o2o] skipping {', '.join(D3RLPY_METHODS)}: {D3RLPY_HINT}", file=sys.stderr)
        methods = [m for m in methods if m not in D3RLPY_METHODS]
    if not args.report:
        # Offline methods first: dime-finetune needs the dime-offline checkpoint of its seed.
        for method in methods:
            for seed in args.seeds:
                target = results / f"{method}-s{seed}.json"
                if target.exists() and not args.force and _same_budgets(json.loads(target.read_text())["setup"], setup, method):
                    continue
                print(f"[o2o] {method} seed {seed} ...", file=sys.stderr, flush=True)
                record = run_method(setup, method, seed)
                record["setup"] = asdict(setup)
                target.write_text(json.dumps(record, indent=1) + "\n")
                print(f"[o2o] {method} seed {seed}: {record['wall_seconds']:.0f} s", file=sys.stderr, flush=True)

    records = [
        r for r in (json.loads(p.read_text()) for p in sorted(results.glob("*.json")))
        if _same_budgets(r.get("setup", {}), setup, r["method"])
    ]
    summary = summarise(setup, records)
    report = {
        "setup": asdict(setup),
        "summary": summary,
        "records": records,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": _loadavg()},
    }
    (out / "o2o.json").write_text(json.dumps(report, indent=1) + "\n")
    print(format_table(setup, summary))
    if records:
        plot(setup, summary, records, out / "o2o.png")
        if args.plot_copy:
            shutil.copyfile(out / "o2o.png", args.plot_copy)
    print(f"\nresults: {out / 'o2o.json'}  plot: {out / 'o2o.png'}")


def _same_budgets(recorded: dict[str, Any], setup: Setup, method: str) -> bool:
    """Only results made with this setup's data and budgets (and, for ``dime-finetune``, its
    fine-tuning overrides) are summarised together."""
    keys = ("data", "env_id", "offline_steps", "online_steps", "batch_size", "eval_every", "eval_episodes",
            "final_episodes", "learning_starts", "preset", "agent", "dime_acting")
    keys += ("finetune",) if method == "dime-finetune" else ()
    current = asdict(setup)
    current["finetune"] = list(setup.finetune)  # as JSON stores it
    # results from before a field existed: DIME acted stochastically, fine-tuning ran at its defaults
    recorded = {"dime_acting": "stochastic", "finetune": [], **recorded}
    return all(recorded.get(k) == current[k] for k in keys)


if __name__ == "__main__":
    main()
