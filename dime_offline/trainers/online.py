"""Online training in a gymnasium env: DIME from scratch, or fine-tuning a pretrained checkpoint.

Two starts, one loop (:func:`finetune`):

* **From scratch** (no checkpoint): plain online DIME as the authors run it. ``learning_starts``
  uniform-random env steps with no updates, then ``utd`` agent updates per env step. Given
  ``data``, the logged transitions sit in the replay store beside the online ones and batches mix
  them at ``offline_fraction`` from the first update (RLPD-style, no pretraining).
* **From a checkpoint**: the pretrained actor, critics, temperature, optimiser states and
  observation normaliser are loaded; an environment whose shapes or bounds differ is refused
  with one line. There is no random warm-up: the policy acts from the first step (and updates
  from the first, or after ``handover.warmup_steps`` steps of its own). Offline data,
  when given, stays in the store; batches take the configured offline fraction (50/50 by default,
  optionally annealed linearly) once enough online rows exist (``online_reuse_limit``).

Updates start once the store holds at least one batch of rows, so a pretrained agent fine-tuned
without offline data does not fit its critics to a handful of transitions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import (
    check_checkpoint_fits,
    load_checkpoint,
    read_checkpoint_meta,
)
from dime_offline.config import check_section, resolve_agent_config, to_dict
from dime_offline.data.load import load_replay_store
from dime_offline.data.normalization import NormalizationStats
from dime_offline.data.replay import ReplayConfig, ReplayStore
from dime_offline.data.returns import TRUNCATION_TAILS, TruncationTail
from dime_offline.data.schema import DatasetMetadata
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.envs.make import make_env, recorded_env_id, spaces_of
from dime_offline.errors import ConfigError
from dime_offline.evaluation.baselines import UniformRandomPolicy
from dime_offline.evaluation.metrics import (
    REFERENCES_KEY,
    reference_returns,
)
from dime_offline.regularizers import (
    REGULARIZERS_KEY,
    attach_regularizers,
    describe_regularizers,
    regularizer_weights,
)
from dime_offline.trainers.handover import (
    LOGS_COMPARISON_KEY,
    WEIGHTS_KEY,
    Handover,
    HandoverConfig,
    LogsComparison,
    RegularizerWeights,
    SupportGrowth,
)
from dime_offline.trainers.loop import (
    FINETUNE_CONFIG_FILE,
    Cadence,
    CheckpointTag,
    RunResult,
    StepReport,
    check_run_dir,
)
from dime_offline.trainers.replay_export import write_online_replay
from dime_offline.trainers.resume import RunningEpisode
from dime_offline.trainers.scaffold import RunScaffold, StageSettings

CHECKPOINT_TUNABLE_FIELDS = (
    "utd", "batch_size", "learning_starts", "buffer_size", "deterministic_act", "act_candidates", "acting_average_decay",
    "critic_lr", "actor_lr", "alpha_lr",
)
"""DIMEConfig fields that may still be overridden when the agent comes from a checkpoint; they
steer the trainer, how deterministic actions are chosen, or the optimisers' step sizes (online
learning rates: the optimisers keep their moments), whereas every other field is fixed by the
weights and optimiser state."""
_SET_BY_AGENT = ("acting_average_decay", "critic_lr", "actor_lr", "alpha_lr")
"""Tunable fields the agent applies itself (a new average starts, the optimisers change rate)."""
SUPPORT_GROWTH_KEY = "support_growth"
"""Key, in a fine-tuning checkpoint's ``meta.json`` ``extra``, of :class:`SupportGrowth`'s state."""
WARMUP_KEY = "warmup_steps"
"""Checkpoint meta key: the run's warm-up steps as it resolved them (the from-scratch default scales
with ``steps``; an extended run keeps the one it started with)."""
MAX_DEFAULT_WARMUP_SHARE = 0.2
"""From scratch, the preset's ``learning_starts`` is capped at this share of ``steps`` unless the
user set ``agent.learning_starts`` (the authors' 5,000 random steps assume runs of 10^5+ steps)."""


@dataclass(frozen=True)
class FinetuneConfig(StageSettings):
    """Everything ``dime-offline finetune`` does: its own fields below, the shared run settings in
    :class:`StageSettings`. Load with ``load_run_config(FinetuneConfig, ...)``."""

    env_id: str = ""
    """Gymnasium id of the environment to train in (any registered id with a Box action space)."""
    steps: int = 100_000
    """Online environment steps to run."""
    out_dir: str = "runs/finetune"
    """Run directory: metrics.csv, tb/, checkpoint/, best/, learning_curve.png, summary.json, finetune_config.json."""
    checkpoint: str | None = None
    """Pretrained checkpoint (or run directory) to fine-tune; None trains from scratch."""
    data: str | None = None
    """Dataset kept in the replay store as offline data (optional): a canonical Parquet file or
    folder, a D4RL-style HDF5 file or a local Minari dataset id/folder, as for pretraining."""
    agent: dict[str, Any] = field(default_factory=dict)
    """DIMEConfig overrides on top of the preset (``--set agent.utd=1``); with a checkpoint only
    the trainer fields (utd, batch_size, learning_starts, buffer_size), how deterministic actions are
    chosen (deterministic_act, act_candidates, acting_average_decay) and the online learning rates
    (critic_lr, actor_lr, alpha_lr: the optimisers keep pretraining's moments) may change."""
    MOVED_FIELDS: ClassVar[dict[str, str]] = {
        name: f"handover.{name}" for name in ("offline_fraction", "offline_fraction_final", "offline_anneal_steps", "online_reuse_limit")
    }
    """Fields that moved into the ``handover`` section; config files and saved runs that use the old names still load."""

    handover: HandoverConfig = field(default_factory=HandoverConfig)
    """The offline -> online handover of a pretrained agent: batch composition (offline share, its
    anneal, the reuse cap) and the regularisers' online weights and ramp (``--set handover.ramp_steps=1000``;
    see ``trainers/handover.py``). The offline share applies from scratch with data too."""
    return_tail: TruncationTail | None = None
    """How returns-to-go (offline rows, and online episodes once they end) count past a truncation:
    "zero", "repeat_last_reward" or "lower" (``data/returns.py``). None: the pretraining run's
    ``offline.return_tail`` recorded in the checkpoint, else "lower"."""
    normalize_obs: bool = True
    """From scratch with ``data``: normalise observations with the dataset's statistics. (From a
    checkpoint its own statistics are always used; from scratch without data observations stay
    raw, as in the authors' code.)"""
    eval_every: int = 5000
    """Evaluate every this many env steps (0: only at the end)."""
    target_return: float | None = None
    """Stop early once an evaluation's mean return reaches this; the final checkpoint is then the
    policy that reached it (the stop rule of D4RL-style "medium" datasets). Needs ``eval_every``."""
    save_replay: str | None = None
    """When the run ends, write its online transitions, in collection order, to this canonical
    Parquet file (a D4RL-style "replay" dataset; see ``trainers/replay_export.py``)."""
    acting_average_share: float | None = None
    """Stretch the acting average over at least this share of the run's updates: its decay becomes
    max(``agent.acting_average_decay``, 1 - 1 / (share x updates)), updates = (steps - warm-up) x utd.
    With 0.1 a run of 10,000 updates acts with 0.999, one of up to 1,000 keeps the agent's 0.99.
    None (default): the agent's decay as it is. Measured on three tasks, mixed: it helped on Hopper,
    where evaluations swing, and lagged on HalfCheetah (docs/algorithm.md section 9.2)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.steps < 1:
            raise ConfigError(f"field 'steps': must be >= 1, got {self.steps}")
        check_section("handover", self.handover, HandoverConfig)
        if self.return_tail is not None and self.return_tail not in TRUNCATION_TAILS:
            raise ConfigError(f"field 'return_tail': must be one of {', '.join(TRUNCATION_TAILS)}, got {self.return_tail!r}")
        if self.acting_average_share is not None and not 0 < self.acting_average_share <= 1:
            raise ConfigError(f"field 'acting_average_share': must lie in (0, 1], got {self.acting_average_share}")
        if self.target_return is not None and self.eval_every < 1:
            raise ConfigError("field 'target_return': needs periodic evaluations (eval_every >= 1)")


def finetune(cfg: FinetuneConfig, agent: DIMEAgent | None = None, offline: ReplayStore | None = None) -> RunResult:
    """Train online in ``cfg.env_id``, from scratch or from ``cfg.checkpoint``; see the module docstring.

    Args:
        cfg: the run; see :class:`FinetuneConfig`.
        agent: an agent already in memory (e.g. straight from pretraining); it counts as
            pretrained (no random warm-up) and ``cfg.checkpoint`` must then be None.
        offline: a replay store already holding the offline data, used instead of ``cfg.data``
            (its online ring receives the new transitions).

    Returns:
        The run summary; ``result.to_dict()`` is what ``--json`` prints.
    """
    if not cfg.env_id and cfg.checkpoint is not None:
        recorded = read_checkpoint_meta(cfg.checkpoint).env_id
        cfg = dataclasses.replace(cfg, env_id=recorded_env_id(recorded, f"checkpoint {cfg.checkpoint}"))
    if not cfg.env_id:
        raise ConfigError("no environment id given (e.g. --env HalfCheetah-v4)")
    if agent is not None and cfg.checkpoint is not None:
        raise ConfigError("pass either an agent or cfg.checkpoint, not both")
    # Every setting is checked before anything is written.
    cadence = Cadence.of_run(cfg)
    from_scratch = agent is None and cfg.checkpoint is None
    scratch_cfg = resolve_agent_config(DIMEConfig, DIMEConfig.preset(cfg.preset), cfg.agent) if from_scratch else None
    if cfg.resume and (agent is not None or offline is not None):
        raise ConfigError("a resumed run rebuilds itself from its config: pass neither an agent nor an offline store")
    run = RunScaffold.prepare(cfg, "finetune", config_file=FINETUNE_CONFIG_FILE, check_out_dir=_check_out_dir)
    resume = run.resume
    env = make_env(cfg.env_id, seed=cfg.seed, max_episode_steps=cfg.max_episode_steps)
    env_spaces = spaces_of(env)
    env_name = f"environment '{cfg.env_id}'"

    norm_stats: NormalizationStats | None = None
    return_tail = cfg.return_tail
    ramp_start: RegularizerWeights | None = None
    recorded_handover: dict[str, Any] | None = None
    recorded_growth: dict[str, Any] | None = None
    if resume is not None:  # the run's own last checkpoint, whichever way the first session started
        check_checkpoint_fits(resume.directory, env_spaces, cfg.env_id)
        agent, agent_cfg, meta = load_checkpoint(resume.directory, device=cfg.device)
        attach_regularizers(agent, meta.extra.get(REGULARIZERS_KEY), file=str(resume.directory))
        norm_stats, return_tail = meta.normalization, meta.extra.get("return_tail")
        recorded_handover = meta.extra.get(WEIGHTS_KEY)
        recorded_growth = meta.extra.get(SUPPORT_GROWTH_KEY)
    elif cfg.checkpoint is not None:
        check_checkpoint_fits(cfg.checkpoint, env_spaces, cfg.env_id)
        agent, saved_cfg, meta = load_checkpoint(cfg.checkpoint, device=cfg.device)
        # The regularisers with their online weights (pretraining recorded them for this boundary).
        attach_regularizers(agent, meta.extra.get(REGULARIZERS_KEY), file=str(cfg.checkpoint))
        agent_cfg = _checkpoint_agent_config(saved_cfg, cfg.agent)
        norm_stats = meta.normalization
        pretraining = meta.extra.get("offline")  # a pretraining checkpoint's OfflineConfig (a fine-tuned one has none)
        if return_tail is None and pretraining is not None:
            return_tail = pretraining.get("return_tail")
        ramp_start = _pretraining_weights(agent, pretraining)
    elif agent is not None:
        agent_cfg = _checkpoint_agent_config(agent.cfg, cfg.agent)
        if agent.obs_normalizer is not None and offline is not None:
            # An in-memory pretrained agent normalises with the statistics of its offline data.
            norm_stats = offline.normalization
    else:
        agent_cfg = scratch_cfg
    if agent is not None:  # a checkpoint's or the caller's agent takes the overridable fields (so its state records them)
        agent.cfg = dataclasses.replace(
            agent.cfg, **{name: getattr(agent_cfg, name) for name in CHECKPOINT_TUNABLE_FIELDS if name not in _SET_BY_AGENT}
        )
        agent.set_acting_average_decay(agent_cfg.acting_average_decay)  # a new average starts here
        agent.set_learning_rates(agent_cfg.critic_lr, agent_cfg.actor_lr, agent_cfg.alpha_lr)
    pretrained = not from_scratch if resume is None else bool(resume.meta.extra.get("pretrained", not from_scratch))
    if agent is not None and resume is None:  # the boundary's temperature; a resumed run keeps what it recorded
        agent_cfg = _boundary_temperature(cfg.handover, agent, agent_cfg)
    if recorded_handover is not None:  # resumed: the recorded schedule, mid-ramp or not
        handover: Handover | None = Handover.from_dict(cfg.handover, recorded_handover)
    else:
        handover = _handover(cfg, agent, ramp_start, resumed=resume is not None)

    store = offline if offline is not None else _build_store(cfg, agent_cfg, env_spaces, return_tail or ReplayConfig.truncation)
    if store.offline_size:
        dataset_spaces = SpaceSpec.from_metadata(store.metadata, store.obs_dim, store.action_dim)
        if dataset_spaces is not None:
            check_spaces_match(dataset_spaces, env_spaces, expected_from=f"dataset {cfg.data or 'given'}", actual_from=env_name)
        elif (store.obs_dim, store.action_dim) != (env_spaces.obs_dim, env_spaces.action_dim):
            raise ConfigError(
                f"dataset {cfg.data or 'given'} has obs/action widths {store.obs_dim}/{store.action_dim},"
                f" {env_name} has {env_spaces.obs_dim}/{env_spaces.action_dim}"
            )
    if agent is None:
        if cfg.normalize_obs and store.normalization is not None:
            norm_stats = store.normalization
        normalizer = None if norm_stats is None else (norm_stats.obs_mean, norm_stats.obs_std)
        agent = DIMEAgent(
            env_spaces.obs_dim, env_spaces.action_dim, agent_cfg, obs_normalizer=normalizer, device=cfg.device, seed=cfg.seed
        )

    if resume is not None and store.offline_size != resume.meta.extra.get("offline_rows", store.offline_size):
        raise ConfigError(
            f"cannot resume: the run in {run.out} kept {resume.meta.extra['offline_rows']} offline rows in its replay store,"
            f" its data now gives {store.offline_size} (a run started from a store in memory resumes only with the same data)"
        )
    if resume is not None and "replay" in resume.state.tensors:  # runs finished before extensions existed kept no ring
        store.load_online_state(resume.state.tensors["replay"])
    elif resume is not None and resume.state.loop.step > 0 and not resume.state.loop.finished:
        raise ConfigError(
            f"cannot extend the run in {run.out}: its final checkpoint keeps no replay ring (written by an older"
            " dime-offline); start a new fine-tuning run from it with --checkpoint"
        )
    with run.recording(description=f"finetune {cfg.env_id}", resources=[env]):
        warmup_steps = cfg.handover.warmup_steps if pretrained else agent_cfg.learning_starts
        # The run's own length sets the default warm-up: an extended run keeps the one it started with
        # (recorded; in checkpoints from before extensions, the length its checkpoint recorded).
        planned_steps = cfg.steps if resume is None else int((resume.meta.extra.get("run_config") or {}).get("steps", cfg.steps))
        if resume is not None and WARMUP_KEY in resume.meta.extra:
            warmup_steps = int(resume.meta.extra[WARMUP_KEY])
        elif not pretrained and "learning_starts" not in cfg.agent and warmup_steps > planned_steps * MAX_DEFAULT_WARMUP_SHARE:
            # The presets' 5,000 random steps are sized for runs of 10^5-10^6 steps; in a short run they
            # would leave little or no learning (a user-set value is kept as it is).
            warmup_steps = int(planned_steps * MAX_DEFAULT_WARMUP_SHARE)
            run.progress.notice(
                f"note: {warmup_steps} uniform-random warm-up steps ({MAX_DEFAULT_WARMUP_SHARE:.0%} of --steps) instead of"
                f" the preset's {agent_cfg.learning_starts}; set agent.learning_starts to choose"
            )
        elif warmup_steps >= cfg.steps:
            setting = "handover.warmup_steps" if pretrained else "agent.learning_starts"
            run.progress.notice(f"note: {setting}={warmup_steps} >= --steps {cfg.steps}: the run only collects steps, no update")
        decay = run_length_decay(agent_cfg.acting_average_decay, cfg.acting_average_share, (cfg.steps - warmup_steps) * agent_cfg.utd)
        if decay != agent_cfg.acting_average_decay:  # recorded with the agent's config in every checkpoint
            agent_cfg = dataclasses.replace(agent_cfg, acting_average_decay=decay)
            agent.set_acting_average_decay(decay)
            run.progress.notice(f"note: acting average decay {decay:.5g} ({cfg.acting_average_share:g} of the run's updates)")
        warmup_policy = UniformRandomPolicy(env_spaces.action_dim, seed=cfg.seed)
        sample_generator = torch.Generator(store.device).manual_seed(cfg.seed + 3)
        episode = RunningEpisode.start(env)
        if resume is not None and not run.state.finished:
            episode = RunningEpisode.replay(env, resume.state, notice=run.progress.notice)
        run.track_generators(agent, {"sampler": sample_generator, "warmup": warmup_policy.rng})
        grows = pretrained if cfg.handover.grow_value_support is None else cfg.handover.grow_value_support
        growth = SupportGrowth(**(recorded_growth or {})) if grows else None

        def grew(current: int, extended: tuple[float, float] | None, cause: str) -> None:
            nonlocal agent_cfg  # a grown value support changes it, and checkpoints record it
            if extended is None:
                return
            agent_cfg = dataclasses.replace(agent_cfg, n_atoms=agent.cfg.n_atoms, v_max=agent.cfg.v_max)
            run.progress.notice(
                f"step {current}: {cause} the top of the critics' support (v_max {extended[0]:.1f}):"
                f" extended to v_max {extended[1]:.1f}, {agent.cfg.n_atoms} atoms"
            )

        def step(current: int) -> StepReport:
            policy = warmup_policy if current <= warmup_steps and not pretrained else agent
            obs = episode.obs
            action = policy.act(np.asarray(obs, np.float32)[None])[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            store.add(obs, action, reward, next_obs, terminated, truncated)
            finished = episode.advance(env, action, next_obs, float(reward), terminated or truncated)
            if growth is not None and finished:
                grew(current, growth.observe_return(agent, store.last_episode_top_return), "an episode's returns reached")
            if current <= warmup_steps or len(store) < agent_cfg.batch_size:
                return StepReport(episodes=finished)
            if pretrained:
                fraction = cfg.handover.batch_offline_fraction(current, cfg.steps, store.online_size, store.offline_size)
            else:
                fraction = cfg.handover.offline_fraction_at(current, cfg.steps)
            if handover is not None:
                handover.apply(agent, current)
            metrics: dict[str, float] = {"online/offline_fraction": fraction if store.offline_size else 0.0}
            metrics.update(regularizer_weights(agent, "online/"))
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            for _ in range(agent_cfg.utd):
                for key, value in agent.update(store.sample(agent_cfg.batch_size, fraction, generator=sample_generator)).items():
                    sums[key] = sums.get(key, 0.0) + value
                    counts[key] = counts.get(key, 0) + 1
            metrics.update({f"train/{k}": sums[k] / counts[k] for k in sums})
            if growth is not None:
                grew(current, growth.observe(agent, metrics["train/critic/top_atom_mass"]), "the critics' values reached")
            metrics["online/v_max"] = agent.cfg.v_max
            return StepReport(updates=agent_cfg.utd, metrics=metrics, episodes=finished)

        eval_metadata = store.metadata if store.offline_size else None  # the logged data's reference returns, if any
        logs_comparison = None if resume is None else resume.meta.extra.get(LOGS_COMPARISON_KEY)
        dropped = handover.without_regularizers() if handover is not None else None  # compared only if it changes something
        if resume is None and pretrained and cfg.handover.surpassed_logs == "drop" and dropped is not None and dropped.end != handover.end:
            compared = _compare_with_logs(run, agent, cfg.env_id, store, eval_metadata, getattr(env.spec, "max_episode_steps", None))
            if compared is not None:
                logs_comparison = compared.to_dict()
                if compared.surpassed:
                    handover = dropped
                run.progress.notice(_logs_notice(compared, handover))
                run.tracker.log(0, compared.to_metrics())

        def resume_stage_state() -> tuple[dict[str, Any], dict[str, Any]]:
            """The running episode and the online replay ring (a finished run's too: ``--resume --steps``
            extends it)."""
            return episode.facts(), {**episode.tensors(), "replay": store.online_state()}

        def write_checkpoint(current: int, tag: CheckpointTag) -> None:
            extra = {
                "stage": "finetune",
                "pretrained": pretrained,
                "offline_rows": store.offline_size,
                "env_steps": current,
                "source_checkpoint": cfg.checkpoint,
                "return_tail": store.config.truncation,
                "data": cfg.data,
                "run_config": to_dict(cfg),
                REGULARIZERS_KEY: describe_regularizers(agent),
                WEIGHTS_KEY: None if handover is None else handover.to_dict(),
                LOGS_COMPARISON_KEY: logs_comparison,
                SUPPORT_GROWTH_KEY: None if growth is None else dataclasses.asdict(growth),
                WARMUP_KEY: warmup_steps,
                REFERENCES_KEY: reference_returns(None, eval_metadata),
            }
            run.save_checkpoint(
                current, tag, agent, agent_cfg, norm_stats, extra, spaces=env_spaces, env_id=cfg.env_id,
                stage_state=resume_stage_state,
            )

        run_evaluation = run.evaluation(agent, cfg.env_id, metadata=eval_metadata, checkpoint=write_checkpoint)
        loop = run.run_loop(
            cadence, step, evaluate=run_evaluation, checkpoint=write_checkpoint, eval_generators=[agent.act_generator]
        )
        if cfg.save_replay is not None:
            write_online_replay(
                store, env_spaces, cfg.save_replay, env_id=cfg.env_id,
                source=f"dime-offline finetune: online replay of run {run.out}",
                extra={"finetune": to_dict(cfg), "env_steps": loop.steps},
            )
        return run.finish(
            loop, lambda run_dir: RunResult(command="finetune", env=cfg.env_id, loop=loop, agent=agent, **run_dir),
            curve_title=f"DIME fine-tuning on {cfg.env_id}",
        )


def _compare_with_logs(
    run: RunScaffold, agent: DIMEAgent, env_id: str, store: ReplayStore, metadata: DatasetMetadata | None, time_limit: int | None
) -> LogsComparison | None:
    """The boundary policy's evaluation against the logged episodes (``handover.surpassed_logs``), over
    the env's ``time_limit`` or, for an env that truncates its own episodes, the length its truncated
    evaluation episodes ran; None without logged episodes or such a length to compare over."""
    if store.logged_episodes is None or not len(store.logged_episodes.returns):
        return None
    stats = run.evaluate_as_is(agent, env_id, metadata=metadata)
    truncated = [length for length, ended in zip(stats.lengths, stats.terminated) if not ended]
    horizon = time_limit or (max(truncated) if truncated else None)
    if horizon is None:
        return None
    reward = store.reward[: store.offline_size].cpu().numpy()
    return LogsComparison.of(stats, store.logged_episodes, reward, horizon)


def _logs_notice(compared: LogsComparison, handover: Handover) -> str:
    """One line on what the comparison at the boundary decided."""
    measured = f"boundary policy {compared.boundary_return:.1f} ± {compared.boundary_error:.1f} (s.e.)"
    if compared.logs_best is None:
        return f"note: {measured}; no logged episode ran as long as the evaluation's may or terminated: regularisers kept online"
    if not compared.surpassed:
        return f"note: {measured}, best comparable logged episode {compared.logs_best:.1f}: regularisers kept online"
    return (
        f"note: {measured} above the best comparable logged episode ({compared.logs_best:.1f}): online weights"
        f" conservative {handover.end.conservative}, behaviour {handover.end.behaviour} (handover.surpassed_logs=keep keeps them)"
    )


def _pretraining_weights(agent: DIMEAgent, pretraining: dict[str, Any] | None) -> RegularizerWeights | None:
    """The regularisers' weights during pretraining, from a pretraining checkpoint's ``extra.offline``
    (None for any other checkpoint); a regulariser the agent does not have stays None."""
    if pretraining is None:
        return None
    online = RegularizerWeights.of(agent)
    return RegularizerWeights(
        None if online.conservative is None else float(pretraining.get("conservative_weight", online.conservative)),
        None if online.behaviour is None else float(pretraining.get("behaviour_weight", online.behaviour)),
    )


def run_length_decay(decay: float, share: float | None, updates: int) -> float:
    """The acting average's decay for a run of ``updates`` updates: ``decay``, or slower where that
    makes the average's horizon 1 / (1 - decay) at least ``share`` of the updates. An average switched
    off (``decay`` 0) stays off."""
    if share is None or decay == 0 or share * updates <= 1:
        return decay
    return max(decay, 1.0 - 1.0 / (share * updates))


def _handover(cfg: FinetuneConfig, agent: DIMEAgent | None, ramp_start: RegularizerWeights | None, *, resumed: bool) -> Handover | None:
    """The weight schedule of a fine-tuned agent: its regularisers' online weights (the checkpoint's,
    or ``cfg.handover``'s overrides) reached along the ramp from ``ramp_start``. None when the agent
    has no regulariser and nothing asks for one."""
    settings = cfg.handover
    has = RegularizerWeights.of(agent) if agent is not None else RegularizerWeights(None, None)
    for name, value, present in (("conservative_weight", settings.conservative_weight, has.conservative),
                                 ("conservative_calibration", settings.conservative_calibration, has.conservative),
                                 ("conservative_candidates", settings.conservative_candidates, has.conservative),
                                 ("behaviour_weight", settings.behaviour_weight, has.behaviour),
                                 ("behaviour_advantage_filter", settings.behaviour_advantage_filter, has.behaviour)):
        if value is not None and present is None:
            raise ConfigError(f"field 'handover.{name}': this agent has no such regulariser (it needs a pretraining checkpoint)")
    for name, scratch_field in (("alpha_mode", "agent.alpha_mode"), ("alpha_start", "agent.alpha_init")):
        if getattr(settings, name) is not None and agent is None:
            raise ConfigError(f"field 'handover.{name}': applies to a pretrained agent; from scratch set {scratch_field}")
    if settings.ramp_steps > 0 and ramp_start is None and not resumed:
        raise ConfigError("field 'handover.ramp_steps': a ramp starts from pretraining's weights, which only a pretraining checkpoint records")
    if has == RegularizerWeights(None, None):
        return None
    if resumed:  # a checkpoint from before the handover was recorded: its weights are the online ones
        return Handover(settings, None, has)
    end = RegularizerWeights(
        has.conservative if settings.conservative_weight is None else settings.conservative_weight,
        has.behaviour if settings.behaviour_weight is None else settings.behaviour_weight,
    )
    return Handover(settings, ramp_start, end)


def _boundary_temperature(settings: HandoverConfig, agent: DIMEAgent, agent_cfg: DIMEConfig) -> DIMEConfig:
    """Apply the handover's temperature settings to a pretrained agent at the first online step:
    alpha's start value and its mode (recorded in the agent's configuration, so checkpoints and a
    resumed run keep the mode). Returns the configuration the run saves."""
    if settings.alpha_start is not None:
        agent.set_temperature(settings.alpha_start)
    if settings.alpha_mode is not None:
        agent.cfg = dataclasses.replace(agent.cfg, alpha_mode=settings.alpha_mode)
        agent_cfg = dataclasses.replace(agent_cfg, alpha_mode=settings.alpha_mode)
    return agent_cfg


def _check_out_dir(cfg: FinetuneConfig) -> Path:
    """The checked run directory; it may not hold the checkpoint being fine-tuned, which
    ``overwrite`` would otherwise delete (its ``checkpoint/`` or ``best/``)."""
    out = check_run_dir(cfg.out_dir, overwrite=cfg.overwrite)
    if cfg.checkpoint is not None:
        source, target = Path(cfg.checkpoint).resolve(), out.resolve()
        if source == target or target in source.parents:
            raise ConfigError(f"the output directory {out} must differ from the checkpoint being fine-tuned (and not contain it)")
    return out


def _checkpoint_agent_config(saved: DIMEConfig, overrides: dict[str, Any]) -> DIMEConfig:
    """The saved config with trainer-field overrides; overrides that would change anything else
    are refused (overrides equal to the saved values, e.g. from a reused config file, are fine)."""
    resolved = resolve_agent_config(DIMEConfig, saved, overrides)
    saved_values, resolved_values = to_dict(saved), to_dict(resolved)
    for name in sorted(overrides):
        if name not in CHECKPOINT_TUNABLE_FIELDS and resolved_values[name] != saved_values[name]:
            raise ConfigError(
                f"agent.{name} is fixed by the pretrained weights ({saved_values[name]!r}); with a checkpoint only"
                f" {', '.join('agent.' + f for f in CHECKPOINT_TUNABLE_FIELDS)} may be changed"
            )
    return resolved


def _build_store(cfg: FinetuneConfig, agent_cfg: DIMEConfig, env_spaces: SpaceSpec, return_tail: TruncationTail) -> ReplayStore:
    replay_cfg = ReplayConfig(
        online_capacity=min(agent_cfg.buffer_size, cfg.steps),
        gamma=agent_cfg.gamma,
        truncation=return_tail,
    )
    if cfg.data is not None:
        return load_replay_store(cfg.data, replay_cfg, device=cfg.device)
    return ReplayStore.empty(env_spaces.obs_dim, env_spaces.action_dim, replay_cfg, device=cfg.device)
