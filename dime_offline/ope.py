"""Off-policy evaluation: what a policy would earn, estimated from logged data alone.

The question a plant without a simulator asks before deploying a policy is "is it better than what
runs now?". :func:`evaluate_offline` answers it with fitted Q evaluation (FQE; Le, Voloshin & Yue,
ICML 2019), the estimator d3rlpy ships and one of the strongest in the DOPE benchmark (Fu et al.,
ICLR 2021):

    Q_{k+1} = argmin_Q  E_(s, a, r, s') in data  loss( Q(s, a),  r + gamma (1 - terminated) Q_k(s', pi(s')) )

By default Q is an ensemble of scalar MLPs with layer normalisation (:class:`ScalarCritic`) regressing
the target by mean squared error, as d3rlpy's FQE does, its values held to the range any policy's
value has while its rewards stay in the logged range; with
``critic="distributional"`` it is the project's C51 critic (:class:`~dime_offline.nets.critic.DistributionalCritic`)
trained on the projected Bellman target (:func:`~dime_offline.agent.losses.c51_projection`) with
cross-entropy. The scalar critic ranked the Pendulum validation policies far better (docs/benchmarks.md).
Neither has DIME's entropy terms: the estimand is the plain discounted return in the data's reward
units. Q_k is a target copy refreshed every ``target_update_interval`` steps. The
policy is fixed, so its actions at every logged state are computed once before training, and each
FQE step costs one small critic update. A policy with memory (an
:class:`~dime_offline.types.EpisodicPolicy`, as the CSTR twin's PI loop, which remembers its previous
temperature) is replayed along the logged episodes, its memory fed by the logged history. The value is then

    V(pi) = mean over the data's initial states s_0 of E[Q(s_0, pi(s_0))]

and, as a second figure, the mean of E[Q(s, pi(s))] over every logged state. Bootstrapping through
truncated episode ends (only ``terminated`` stops it) makes both infinite-horizon values.

The point estimate is the mean of ``fits`` critics fitted to the whole data from different
initialisations: on sparse data one fit's estimate moves with its initialisation (by up to 40 % on
the Pendulum sample). Confidence interval: the episodes are resampled with replacement ``bootstrap``
times and FQE is refitted on each resample (the bootstrapped FQE of Hao et al., ICML 2021). All fits
run at once as one critic ensemble: the first ``fits`` members see every episode once, each further
member weights each row by how often its episode was drawn in its resample, and estimates with its
own resample's initial states. The interval is the percentile interval of the replicates; it covers the sampling
of episodes and FQE's own fitting noise, not the bias FQE has when the policy acts where the data
never went (docs/algorithm.md, "Off-policy evaluation").

The logged behaviour's discounted Monte-Carlo return from the same initial states (and its
bootstrap interval on the same resamples, so the difference has a paired interval) is reported
beside it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dime_offline.agent.losses import c51_projection, critic_loss
from dime_offline.checkpoints import read_checkpoint_meta, resolve_checkpoint_dir
from dime_offline.config import to_dict
from dime_offline.data.load import load_dataset
from dime_offline.data.replay import ReplayConfig, ReplayStore
from dime_offline.data.returns import TRUNCATION_TAILS, TruncationTail, value_support
from dime_offline.data.schema import TransitionData
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.devices import check_device
from dime_offline.errors import ConfigError
from dime_offline.io import atomic_path
from dime_offline.nets.critic import DistributionalCritic, EnsembleDense
from dime_offline.types import EpisodicPolicy, Policy

PolicyMode = Literal["best_of_k", "noise_free", "stochastic"]
POLICY_MODES: tuple[str, ...] = ("best_of_k", "noise_free", "stochastic")
CriticKind = Literal["scalar", "distributional"]
CRITIC_KINDS: tuple[str, ...] = ("scalar", "distributional")
SUMMARY_FILE = "ope.json"
CONFIG_FILE = "ope_config.json"
RANKING_FILE = "ranking.json"
_ACT_CHUNK_ROWS = 4096
"""Observations per policy call while precomputing actions (bounds the chains' memory)."""


@dataclass(frozen=True)
class OPEConfig:
    """What ``dime-offline ope`` runs: the policy, the logged data and the FQE settings."""

    checkpoint: str = ""
    """Checkpoint directory, or a run directory (its ``checkpoint/`` is used), whose policy is evaluated."""
    data: str = ""
    """Logged transitions: a Parquet file/folder, a D4RL-style HDF5 file or a local Minari id."""
    out_dir: str | None = None
    """Folder for ``ope.json`` (the summary) and ``ope_config.json``, both written atomically; None writes nothing."""
    policy_mode: PolicyMode | None = None
    """How the policy acts: "best_of_k" or "noise_free" (deterministic modes, see ``load_policy``),
    "stochastic" (samples of the chain); None: the checkpoint's deterministic mode, as deployed."""
    policy_samples: int | None = None
    """Actions drawn per state for the targets; each FQE step uses one of them at random (a
    stochastic policy's expectation). None: 1 for a deterministic mode, 8 for "stochastic"."""
    gamma: float | None = None
    """Discount of the estimated return, in [0, 1); None: the checkpoint's ``gamma``."""
    steps: int = 4000
    """FQE gradient steps (each ensemble member takes every one)."""
    batch_size: int = 256
    """Transitions per FQE step."""
    lr: float = 1e-3
    """Adam learning rate of the FQE critic (at the start, see ``lr_schedule``)."""
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    """"cosine": the learning rate decays to 0 over the steps, so the fit ends settled instead of at a
    point of its step noise; "constant": it stays at ``lr``."""
    target_update_interval: int = 10
    """Copy the critic into the target Q_k every this many steps. Each copy is one Bellman backup and a
    value needs about 3 / (1 - gamma) of them to reach its horizon (300 at gamma 0.99), so a short
    interval: d3rlpy's 100 left a Pendulum policy's estimate at its initial value after 2000 steps
    (docs/benchmarks.md)."""
    fits: int = 4
    """Critics fitted to the whole data from different initialisations; the estimate is their mean."""
    bootstrap: int = 10
    """Bootstrap replicates (episode resamples) for the interval; 0: estimate only, no interval."""
    confidence: float = 0.9
    """Coverage of the percentile interval, in (0, 1)."""
    critic: CriticKind = "scalar"
    """"scalar": an ensemble MLP with layer normalisation regressing the Bellman target by mean squared
    error (as d3rlpy's FQE), its values held to the logged rewards' range; "distributional": the agent's
    C51 critic with the projected target and cross-entropy. Scalar ranked the Pendulum validation
    policies far better (docs/benchmarks.md, "Off-policy evaluation")."""
    hidden: tuple[int, ...] = (128, 128)
    """Hidden widths of the FQE critic."""
    n_atoms: int = 101
    """Atoms of the categorical value distribution (``critic="distributional"`` only)."""
    support_margin: float = 0.25
    """Room around the data's values for the critic's support, as a share of their range
    (``data/returns.py`` ``value_support``); a scalar critic's outputs are in units of a twentieth of it."""
    return_tail: TruncationTail = "lower"
    """Tail of the behaviour's Monte-Carlo returns after a truncated episode: "zero", "repeat_last_reward"
    or "lower" (``data/returns.py``); FQE itself bootstraps through truncations."""
    nonfinite: Literal["error", "drop"] = "error"
    """NaN/inf in the data: "error" stops with the first bad row; "drop" cuts the affected episodes."""
    seed: int = 0
    """Seeds the critics' initialisation, the batches, the resamples and a stochastic policy's noise."""
    device: str = "cpu"
    """Torch device for the policy and the FQE critic."""
    torch_threads: int | None = None
    """Intra-op CPU threads for torch (process-wide); None keeps torch's default."""

    def __post_init__(self) -> None:
        checks = (
            ("steps", self.steps >= 1, ">= 1"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0, "> 0"),
            ("target_update_interval", self.target_update_interval >= 1, ">= 1"),
            ("fits", self.fits >= 1, ">= 1"),
            ("bootstrap", self.bootstrap >= 0, ">= 0"),
            ("confidence", 0.0 < self.confidence < 1.0, "in (0, 1)"),
            ("gamma", self.gamma is None or 0.0 <= self.gamma < 1.0, "in [0, 1)"),
            ("policy_samples", self.policy_samples is None or self.policy_samples >= 1, ">= 1"),
            ("hidden", len(self.hidden) >= 1 and all(h >= 1 for h in self.hidden), "one or more positive widths"),
            ("n_atoms", self.n_atoms >= 2, ">= 2"),
            ("support_margin", self.support_margin >= 0, ">= 0"),
            ("torch_threads", self.torch_threads is None or self.torch_threads >= 1, ">= 1"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise ConfigError(f"field '{name}': must be {expected}, got {getattr(self, name)!r}")
        if self.policy_mode is not None and self.policy_mode not in POLICY_MODES:
            raise ConfigError(f"field 'policy_mode': expected one of {list(POLICY_MODES)}, got {self.policy_mode!r}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ConfigError(f"field 'lr_schedule': expected 'cosine' or 'constant', got {self.lr_schedule!r}")
        if self.critic not in CRITIC_KINDS:
            raise ConfigError(f"field 'critic': expected one of {list(CRITIC_KINDS)}, got {self.critic!r}")
        if self.return_tail not in TRUNCATION_TAILS:
            raise ConfigError(f"field 'return_tail': expected one of {list(TRUNCATION_TAILS)}, got {self.return_tail!r}")
        check_device(self.device)


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval (``lo``/``hi`` None without replicates)."""

    estimate: float
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def from_replicates(cls, estimate: float, replicates: np.ndarray, confidence: float) -> Interval:
        if replicates.size == 0:
            return cls(float(estimate))
        tail = (1.0 - confidence) / 2.0
        lo, hi = np.quantile(replicates, [tail, 1.0 - tail])
        return cls(float(estimate), float(lo), float(hi))

    def to_dict(self) -> dict[str, float | None]:
        return dataclasses.asdict(self)


@dataclass
class OPEResult:
    """Estimated value of a policy from logged data (see the module docstring for each figure)."""

    value: Interval
    """The policy's expected discounted return from the data's initial states."""
    mean_state_value: Interval
    """The policy's value averaged over every logged state."""
    behaviour_value: Interval
    """The logged behaviour's discounted Monte-Carlo return from the same initial states."""
    behaviour_mean_state_value: Interval
    """The behaviour's Monte-Carlo return-to-go averaged over every logged state."""
    improvement: Interval
    """``value - behaviour_value``, with the interval of the paired differences."""
    gamma: float
    acting: str
    """How the policy acted: "best_of_k", "noise_free", "stochastic" or the caller's description."""
    transitions: int
    episodes: int
    support: tuple[float, float]
    """The FQE critic's value support [v_min, v_max]."""
    action_gap: float
    """Root mean square distance, in the [-1, 1] action box, between the policy's and the logged actions at
    the logged states: how far the policy leaves the behaviour (FQE's bias grows with it)."""
    fit_spread: float
    """Standard deviation of the whole-data fits' estimates (initialisation noise; 0 with one fit)."""
    last_quarter_change: float
    """How much the point estimate moved over the last quarter of the FQE steps (a settled fit moves
    little; a note says when it moved more than 5 %)."""
    config: OPEConfig
    checkpoint: str | None = None
    data: str | None = None
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "command": "ope",
            "checkpoint": self.checkpoint,
            "data": self.data,
            "acting": self.acting,
            "critic": cfg.critic,
            "gamma": self.gamma,
            "value": self.value.to_dict(),
            "mean_state_value": self.mean_state_value.to_dict(),
            "behaviour": {
                "value": self.behaviour_value.to_dict(),
                "mean_state_value": self.behaviour_mean_state_value.to_dict(),
                "return_tail": cfg.return_tail,
            },
            "improvement": self.improvement.to_dict(),
            "interval": {
                "confidence": cfg.confidence,
                "replicates": cfg.bootstrap,
                "resampling": "episodes, with replacement; FQE refitted per resample; percentile interval",
            },
            "transitions": self.transitions,
            "episodes": self.episodes,
            "support": list(self.support),
            "action_gap": self.action_gap,
            "fits": cfg.fits,
            "fit_spread": self.fit_spread,
            "last_quarter_change": self.last_quarter_change,
            "steps": cfg.steps,
            "seed": cfg.seed,
            "notes": self.notes,
            "wall_seconds": round(self.wall_seconds, 3),
        }


def evaluate_offline(cfg: OPEConfig) -> OPEResult:
    """Estimate the value of ``cfg.checkpoint``'s policy on ``cfg.data`` by FQE; write the summary
    to ``cfg.out_dir`` when set.

    Raises:
        CheckpointError: no readable checkpoint at ``cfg.checkpoint``.
        DataError: the data cannot be read or breaks the schema.
        EnvironmentMismatchError: the data's observation/action widths or bounds differ from the checkpoint's.
    """
    from dime_offline.policy import load_policy

    started = time.monotonic()
    if not cfg.checkpoint:
        raise ConfigError("field 'checkpoint': a checkpoint or run directory is required")
    if not cfg.data:
        raise ConfigError("field 'data': a logged dataset is required")
    if cfg.out_dir is not None:  # a folder that cannot be made fails now, not after the fit
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads is not None:
        torch.set_num_threads(cfg.torch_threads)
    directory = resolve_checkpoint_dir(cfg.checkpoint)
    meta = read_checkpoint_meta(directory)
    data = _data_for(cfg, meta.spaces, directory)
    stochastic = cfg.policy_mode == "stochastic"
    policy = load_policy(
        directory, deterministic=not stochastic, seed=cfg.seed, device=cfg.device,
        mode=None if stochastic else cfg.policy_mode,
    )
    gamma = policy.agent.cfg.gamma if cfg.gamma is None else cfg.gamma
    if gamma >= 1.0:
        raise ConfigError(f"checkpoint {directory} has gamma {gamma}; OPE needs a discount below 1 (--set gamma=0.99)")
    acting = "stochastic" if stochastic else policy.agent.cfg.deterministic_act
    result = fitted_q_evaluation(policy, data, cfg, gamma=gamma, deterministic=not stochastic, acting=acting)
    result.checkpoint, result.data = str(directory), cfg.data
    result.wall_seconds = time.monotonic() - started
    if cfg.out_dir is not None:
        write_summary(result, cfg.out_dir)
    return result


def ranking_basis(cfg: OPEConfig) -> str:
    """What :func:`rank_offline` orders the policies by under ``cfg``, in words."""
    return "estimate" if cfg.bootstrap == 0 else f"lower end of the {100 * cfg.confidence:g} % interval"


def rank_offline(checkpoints: Sequence[str], cfg: OPEConfig) -> list[OPEResult]:
    """Estimate every checkpoint's policy on ``cfg.data`` with the same FQE settings and seed, and
    return the results best first by their interval's lower end (by the estimate when ``bootstrap``
    is 0): the pessimistic choice, which ranked simulated policies best (docs/algorithm.md §10).

    With ``cfg.out_dir`` set, checkpoint ``i`` writes its summary into ``out_dir/<i>-<folder name>/``
    as it finishes, and ``ranking.json`` (the order, with each one's estimate and interval) is
    written atomically at the end. Raises as :func:`evaluate_offline`, before any fit for a
    checkpoint that cannot be found.
    """
    if not checkpoints:
        raise ConfigError("field 'checkpoint': give one or more checkpoints to rank")
    directories = [resolve_checkpoint_dir(c) for c in checkpoints]  # every path checked before the first fit
    results = []
    for i, (checkpoint, directory) in enumerate(zip(checkpoints, directories, strict=True)):
        out_dir = None if cfg.out_dir is None else str(Path(cfg.out_dir) / f"{i}-{Path(checkpoint).name}")
        results.append(evaluate_offline(dataclasses.replace(cfg, checkpoint=str(directory), out_dir=out_dir)))
    ranked = sorted(results, key=lambda r: -(r.value.estimate if r.value.lo is None else r.value.lo))
    if cfg.out_dir is not None:
        ranking = {
            "command": "ope", "data": cfg.data, "ranked_by": ranking_basis(cfg),
            "policies": [{"checkpoint": r.checkpoint, **r.value.to_dict()} for r in ranked],
        }
        with atomic_path(Path(cfg.out_dir) / RANKING_FILE) as tmp:
            tmp.write_text(json.dumps(ranking, indent=2) + "\n")
    return ranked


def _data_for(cfg: OPEConfig, spaces: SpaceSpec, checkpoint: Path) -> TransitionData:
    """The logged data, checked against the checkpoint's widths and action bounds. Data that declares no
    action bounds is read in the checkpoint's (its actions must lie inside them)."""
    data = load_dataset(cfg.data, nonfinite=cfg.nonfinite, check_continuity=False)
    declared = SpaceSpec.from_metadata(data.metadata, data.obs_dim, data.action_dim)
    check_spaces_match(
        spaces,
        declared or dataclasses.replace(spaces, obs_dim=data.obs_dim, action_dim=data.action_dim),
        expected_from=f"checkpoint {checkpoint}",
        actual_from=f"dataset {cfg.data}",
    )
    if declared is None:
        metadata = dataclasses.replace(data.metadata, action_low=list(spaces.action_low), action_high=list(spaces.action_high))
        data = dataclasses.replace(data, metadata=metadata)
    return data


def write_summary(result: OPEResult, out_dir: str | Path) -> Path:
    """Write ``ope.json`` and ``ope_config.json`` into ``out_dir``, each atomically; returns the summary's path."""
    out = Path(out_dir)
    for name, content in ((CONFIG_FILE, to_dict(result.config)), (SUMMARY_FILE, result.to_dict())):
        with atomic_path(out / name) as tmp:
            tmp.write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return out / SUMMARY_FILE


def fitted_q_evaluation(
    policy: Policy, data: TransitionData, cfg: OPEConfig, *, gamma: float, deterministic: bool = True, acting: str = "policy"
) -> OPEResult:
    """FQE of ``policy`` (``act(obs, deterministic)`` -> [-1, 1] actions) on validated ``data`` whose
    action bounds say how its actions map to [-1, 1]. ``cfg`` supplies the FQE settings; its
    checkpoint and data fields are not used."""
    started = time.monotonic()
    store = ReplayStore.from_transitions(
        data, ReplayConfig(online_capacity=0, gamma=gamma, truncation=cfg.return_tail), file=cfg.data or None
    )
    assert store.normalization is not None  # a store with offline rows always has statistics
    n_rows = store.offline_size
    lengths = data.episode_lengths()
    starts = data.episode_starts()
    episode_of_row = torch.as_tensor(np.repeat(np.arange(len(starts)), lengths))
    samples = cfg.policy_samples or (1 if deterministic else 8)

    state_actions, next_actions = _policy_actions(policy, store, data, samples, deterministic)
    rng = np.random.default_rng(cfg.seed)
    # (M, episodes): the first `fits` members count every episode once, the others their resample's draws.
    episode_weights = np.vstack(
        [np.ones((cfg.fits, len(starts)))] + [rng.multinomial(len(starts), np.full(len(starts), 1.0 / len(starts))) for _ in range(cfg.bootstrap)]
    ).astype(np.float32)
    row_weights = torch.as_tensor(episode_weights)[:, episode_of_row].to(store.device)

    reward = store.reward[:n_rows]
    returns_np, reward_np = store.mc_return[:n_rows].double().cpu().numpy(), reward.double().cpu().numpy()
    # A terminal step's reward (an interlock trip's penalty) enters the bounds once, as it is earned.
    terminated_np = store.terminated[:n_rows].cpu().numpy().astype(bool)
    v_min, v_max = value_support(returns_np, reward_np, gamma, margin=cfg.support_margin, terminated=terminated_np)
    # Any policy's value while its rewards stay in the logged range (the support without margin).
    value_range = value_support(returns_np, reward_np, gamma, margin=0.0, terminated=terminated_np)
    # A scalar critic regresses values in units of a twentieth of the support (about 120 on Pendulum;
    # 100 to 300 measured alike, docs/benchmarks.md): targets of order one whatever the reward units.
    value_scale = (v_max - v_min) / 20.0
    obs = store.normalization.normalize_obs(store.obs[:n_rows])
    next_obs = store.normalization.normalize_obs(store.next_obs[:n_rows])
    starts_t = torch.as_tensor(starts, device=store.device)

    def point_estimate(critic: FQECritic) -> float:
        """The whole-data fits' value of the policy at the initial states (the estimate)."""
        with torch.no_grad():
            return float(torch.stack([critic.expected_q(obs[starts_t], a[starts_t])[: cfg.fits] for a in state_actions]).mean())

    critic, earlier = _fit(
        obs, store.action[:n_rows], reward, next_obs, store.terminated[:n_rows].float(), next_actions, row_weights,
        cfg, gamma=gamma, support=(v_min, v_max), value_scale=value_scale, value_range=value_range, device=store.device,
        probe=point_estimate,
    )

    # (samples, M, N) -> (M, N): each member's value of the policy at every logged state.
    with torch.no_grad():
        state_values = torch.stack([_expected_q(critic, obs, actions) for actions in state_actions]).mean(0)
    values = state_values.double().cpu().numpy()
    behaviour_initial = store.mc_return[:n_rows][starts_t].double().cpu().numpy()
    behaviour_rows = store.mc_return[:n_rows].double().cpu().numpy()
    weights = episode_weights.astype(np.float64)
    per_row_weights = row_weights.double().cpu().numpy()

    initial = (weights * values[:, starts]).sum(1) / weights.sum(1)
    all_states = (per_row_weights * values).sum(1) / per_row_weights.sum(1)
    behaviour = weights @ behaviour_initial / weights.sum(1)
    behaviour_all = per_row_weights @ behaviour_rows / per_row_weights.sum(1)

    def interval(per_member: np.ndarray) -> Interval:
        return Interval.from_replicates(float(per_member[: cfg.fits].mean()), per_member[cfg.fits :], cfg.confidence)

    logged = store.action[:n_rows]
    gap = torch.stack([(a - logged).square().mean() for a in state_actions]).mean().sqrt()
    notes = []
    estimate = float(initial[: cfg.fits].mean())
    last_quarter_change = estimate - earlier
    if abs(last_quarter_change) > 0.05 * max(abs(estimate), 0.01 * (v_max - v_min)):
        notes.append(
            f"the estimate still moved by {last_quarter_change:+.4g} over the last quarter of the {cfg.steps} steps:"
            " it has not settled, give more steps (--steps)"
        )
    backups, needed = cfg.steps // cfg.target_update_interval, math.ceil(3.0 / (1.0 - gamma) - 1e-9)
    if backups < needed:
        notes.append(
            f"{backups} target refreshes, fewer than the ~3 / (1 - gamma) = {needed} a value needs to reach its"
            " horizon: the estimate may still sit near the critic's starting value; give more steps (--steps)"
        )
    if len(starts) < 10 and cfg.bootstrap:
        notes.append(f"only {len(starts)} episode(s): the bootstrap interval is coarse")
    return OPEResult(
        value=interval(initial),
        mean_state_value=interval(all_states),
        behaviour_value=interval(behaviour),
        behaviour_mean_state_value=interval(behaviour_all),
        improvement=interval(initial - behaviour),
        gamma=gamma,
        acting=acting,
        transitions=n_rows,
        episodes=len(starts),
        support=(round(v_min, 3), round(v_max, 3)),
        action_gap=float(gap),
        last_quarter_change=last_quarter_change,
        fit_spread=float(initial[: cfg.fits].std()),
        config=cfg,
        data=cfg.data or None,
        wall_seconds=time.monotonic() - started,
        notes=notes,
    )


def _policy_actions(
    policy: Policy, store: ReplayStore, data: TransitionData, samples: int, deterministic: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The policy's actions at every logged state and successor state, ``samples`` draws each: two
    (samples, N, A) tensors. A successor state equal to the next row's state reuses that row's action,
    so only episode ends (and gaps) cost an extra policy call. A policy with memory
    (:class:`~dime_offline.types.EpisodicPolicy`) is replayed along the logged episodes instead."""
    if isinstance(policy, EpisodicPolicy):
        replays = [_replayed_actions(policy, data, deterministic) for _ in range(samples)]
        return (
            torch.as_tensor(np.stack([at_states for at_states, _ in replays]), device=store.device),
            torch.as_tensor(np.stack([at_next for _, at_next in replays]), device=store.device),
        )
    same_episode = np.append(data.episode_id[1:] == data.episode_id[:-1], False)
    continues = same_episode.copy()
    continues[:-1] &= np.all(data.next_obs[:-1] == data.obs[1:], axis=1)
    extra_rows = np.flatnonzero(~continues)
    extra_obs = data.next_obs[extra_rows]
    state_actions, next_actions = [], []
    for _ in range(samples):
        at_states = _act(policy, data.obs, deterministic)
        at_next = np.empty_like(at_states)
        at_next[:-1] = at_states[1:]
        at_next[extra_rows] = _act(policy, extra_obs, deterministic)
        state_actions.append(at_states)
        next_actions.append(at_next)
    return (
        torch.as_tensor(np.stack(state_actions), device=store.device),
        torch.as_tensor(np.stack(next_actions), device=store.device),
    )


def _replayed_actions(policy: EpisodicPolicy, data: TransitionData, deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) actions of a policy with memory at every logged state and successor state, its memory
    fed by the logged history: the episodes run side by side as the rows of one batch (row e is
    episode e in every call, as in a rollout), step t showing each episode's t-th observation and,
    after its last, its last successor state. Q(s, a) stays a function of the logged (s, a) when the
    memory is the policy's recent observations (the PI loop's previous temperature): what the next
    step remembers is in s. An episode starts from a reset memory, as a rollout does."""
    starts, lengths = data.episode_starts(), data.episode_lengths()
    last = starts + lengths - 1
    at_states = np.empty(data.action.shape, np.float32)
    at_next = np.empty(data.action.shape, np.float32)
    policy.reset()
    for t in range(int(lengths.max(initial=0)) + 1):
        rows = np.minimum(starts + t, last)
        # An ended episode shows its last successor state again; that row's actions are not kept.
        obs = np.where((t < lengths)[:, None], data.obs[rows], data.next_obs[rows])
        actions = _act(policy, obs, deterministic, chunk_rows=max(len(obs), 1))  # one call: a batch row is an episode
        inside, ending = t < lengths, t == lengths
        at_states[rows[inside]] = actions[inside]
        at_next[last[ending]] = actions[ending]
    continuing = np.ones(len(data), bool)
    continuing[last] = False
    at_next[continuing] = at_states[np.flatnonzero(continuing) + 1]
    return at_states, at_next


def _act(policy: Policy, obs: np.ndarray, deterministic: bool, chunk_rows: int = _ACT_CHUNK_ROWS) -> np.ndarray:
    chunks = [
        np.asarray(policy.act(np.ascontiguousarray(obs[i : i + chunk_rows], dtype=np.float32), deterministic=deterministic))
        for i in range(0, len(obs), chunk_rows)
    ]
    actions = np.concatenate(chunks).astype(np.float32, copy=False) if chunks else np.zeros((0, 0), np.float32)
    return np.clip(actions, -1.0, 1.0)


class ScalarCritic(nn.Module):
    """E independent MLPs Q(s, a) -> one value each, with layer normalisation after every hidden layer.

    The layers output the value in units of ``value_scale`` (the regression then sees targets of order
    one whatever the reward units). Layer normalisation bounds what the network can extrapolate to at
    actions the data lacks; without it a policy pushing one action to the bound (full torque) drove
    the estimate to -7000 and on. Values are read clipped to ``value_range``, the values a policy can
    have while its rewards stay in the logged range: the Bellman target built from them stays in it
    too, so a critic that extrapolates cannot feed on itself, and a policy that leaves the data is not
    reported better than the best logged reward held for ever (an uncovered swing-up controller read
    +56 to +107 on Pendulum, where every reward is below 0).
    """

    def __init__(
        self, obs_dim: int, act_dim: int, hidden: tuple[int, ...], n_critics: int, value_scale: float,
        value_range: tuple[float, float],
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim + act_dim
        for h in hidden:
            layers += [EnsembleDense(n_critics, width, h), nn.LayerNorm(h, elementwise_affine=False), nn.ReLU()]
            width = h
        layers.append(EnsembleDense(n_critics, width, 1))
        self.net = nn.Sequential(*layers)
        self.n_critics = n_critics
        self.value_scale = value_scale
        self.value_range = value_range

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Values in units of ``value_scale``, (E, B), for obs (B, O) and action (B, d)."""
        x = torch.cat([obs, action], dim=-1)
        return self.net(x.unsqueeze(0).expand(self.n_critics, *x.shape)).squeeze(-1)

    def expected_q(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Values in reward units, clipped to ``value_range``, (E, B)."""
        return (self.forward(obs, action) * self.value_scale).clamp(*self.value_range)


FQECritic = ScalarCritic | DistributionalCritic


def _fit(
    obs: torch.Tensor,
    action: torch.Tensor,
    reward: torch.Tensor,
    next_obs: torch.Tensor,
    terminated: torch.Tensor,
    next_actions: torch.Tensor,
    row_weights: torch.Tensor,
    cfg: OPEConfig,
    *,
    gamma: float,
    support: tuple[float, float],
    value_scale: float,
    value_range: tuple[float, float],
    device: torch.device,
    probe: Callable[[FQECritic], float],
) -> tuple[FQECritic, float]:
    """Train the (fits + bootstrap)-member critic by FQE; returns it in eval mode, and what ``probe``
    said of it (in eval mode) after three quarters of the steps."""
    members = row_weights.shape[0]
    critic: FQECritic
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        if cfg.critic == "scalar":
            critic = ScalarCritic(obs.shape[1], action.shape[1], cfg.hidden, members, value_scale, value_range).to(device)
        else:
            critic = DistributionalCritic(
                obs.shape[1], action.shape[1], hidden=cfg.hidden, n_atoms=cfg.n_atoms, v_min=support[0], v_max=support[1],
                n_critics=members,
            ).to(device)
    target = copy.deepcopy(critic).eval()
    optimizer = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.steps) if cfg.lr_schedule == "cosine" else None
    generator = torch.Generator().manual_seed(cfg.seed)
    samples, n_rows = next_actions.shape[0], obs.shape[0]
    probe_step, probed = cfg.steps - cfg.steps // 4, float("nan")
    critic.train()
    for step in range(1, cfg.steps + 1):
        rows = torch.randint(n_rows, (cfg.batch_size,), generator=generator).to(device)
        draw = torch.randint(samples, (cfg.batch_size,), generator=generator).to(device)
        weights = row_weights[:, rows]
        with torch.no_grad():
            discount = gamma * (1.0 - terminated[rows])
            if isinstance(critic, ScalarCritic):
                # In value_range, as the clipped Q_k is (r_min + gamma r_min / (1 - gamma) = r_min / (1 - gamma)).
                bootstrapped = reward[rows] + discount * target.expected_q(next_obs[rows], next_actions[draw, rows])
                target_values = bootstrapped / value_scale
            else:
                atoms = critic.support
                next_probs = target(next_obs[rows], next_actions[draw, rows]).softmax(-1)  # (M, B, K)
                shifted = reward[rows, None] + discount[:, None] * atoms[None, :]
                target_probs = c51_projection(next_probs, shifted.unsqueeze(0), atoms)
        if isinstance(critic, ScalarCritic):
            loss = ((critic(obs[rows], action[rows]) - target_values).square() * weights).mean(-1).sum()
        else:
            loss, _ = critic_loss(critic(obs[rows], action[rows]), target_probs, 0.0, sample_weight=weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule is not None:
            schedule.step()
        if step % cfg.target_update_interval == 0:
            target.load_state_dict(critic.state_dict())
        if step == probe_step:  # eval mode reads the running statistics and changes nothing
            probed = probe(critic.eval())
            critic.train()
    return critic.eval(), probed


def _expected_q(critic: FQECritic, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(M, N) expected values of every member at (obs, actions), in chunks."""
    return torch.cat(
        [critic.expected_q(obs[i : i + 65536], actions[i : i + 65536]) for i in range(0, obs.shape[0], 65536)], dim=1
    )
