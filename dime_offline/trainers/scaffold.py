"""What every training stage does around its loop, in one place: a run's scaffolding.

A stage (:func:`~dime_offline.trainers.offline.pretrain`, :func:`~dime_offline.trainers.online.finetune`)
builds its data, environment and agent and defines one step, an evaluation and what its checkpoints
hold; everything else is a :class:`RunScaffold`'s:

1. :meth:`RunScaffold.prepare`, once every setting is checked and before anything is loaded: the
   trackers' packages, the run directory (free of an earlier run, or holding the checkpoint that
   ``--resume`` continues), the seeds and torch's threads;
2. :meth:`RunScaffold.recording`, once the stage is built: the run directory started afresh (or
   continued), the metric sinks and trackers, the progress display and the saved config; when the
   block ends, however it ends, the display, the sinks (trackers end as failed unless finished)
   and the stage's own resources close;
3. :meth:`RunScaffold.track_generators`: the RNGs a checkpoint records, put back on a resume;
4. :meth:`RunScaffold.save_checkpoint` (``checkpoint/`` or ``best/``, with the resume state where
   a run continues from), :meth:`RunScaffold.run_loop` (the shared loop, or nothing when a resumed
   run was already complete) and :meth:`RunScaffold.finish` (learning curve, ``summary.json``, the
   trackers' outputs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from dime_offline.agent.config import DETERMINISTIC_MODES, DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.allocator import keep_freed_memory
from dime_offline.checkpoints import (
    RUN_BEST_SUBDIR,
    RUN_CHAMPION_SUBDIR,
    RUN_CHECKPOINT_SUBDIR,
    keep_in_history,
    save_checkpoint,
)
from dime_offline.config import save_config, to_dict
from dime_offline.data.normalization import NormalizationStats
from dime_offline.data.spaces import SpaceSpec
from dime_offline.devices import check_device
from dime_offline.errors import ConfigError
from dime_offline.data.schema import DatasetMetadata
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.evaluation.rollout import evaluate
from dime_offline.io import atomic_write_text
from dime_offline.trackers import TrackerName, check_trackers
from dime_offline.tracking import (
    METRICS_FILE,
    ProgressDisplay,
    Tracker,
    open_sinks,
    plot_learning_curve,
)
from dime_offline.trainers.champion import CHAMPION_KEY, Champion, acting_copy, challenger_wins
from dime_offline.trainers.loop import (
    LEARNING_CURVE_FILE,
    SUMMARY_FILE,
    Cadence,
    CheckpointTag,
    LoopResult,
    LoopState,
    RunResult,
    StepReport,
    check_run_dir,
    run_dir_fields,
    run_loop,
    run_outputs,
    seed_everything,
    start_run_dir,
)
from dime_offline.trainers.resume import (
    ResumePoint,
    open_resume,
    regularizer_generators,
    restore_generators,
    resume_writer,
)

R = TypeVar("R", bound=RunResult)

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation episodes are seeded ``seed + EVAL_SEED_OFFSET + i``: the same start states at every
evaluation of a run, in every stage, and never the training episodes' seeds."""
SELECTION_SEED_OFFSET = 2_000_003
"""The selection episodes (``select_acting``, the champion) of the evaluation at step t are seeded
``selection_seed(seed, t, episodes) + i``: fresh start states at every evaluation, never the evaluation's
or the training's, so the reported score is not the one a choice was made on."""


def selection_seed(seed: int, step: int, episodes: int) -> int:
    """The first reset seed of the selection episodes of the evaluation at ``step`` (see
    :data:`SELECTION_SEED_OFFSET`): consecutive blocks of ``episodes`` seeds, one per step."""
    return seed + SELECTION_SEED_OFFSET + step * episodes


@dataclass(frozen=True)
class RunSettings:
    """The settings every training command shares (``pretrain``, ``finetune`` and ``run``, which hands
    them to both its stages), written once here so that their meaning, default and check cannot drift
    apart between the commands. A command's config derives from this class (or :class:`StageSettings`)
    and calls ``super().__post_init__()``."""

    seed: int = 0
    """Seeds every random draw of the run: the agent's initialisation and noise, the regularisers and
    the batch sampling, and online also the env and the warm-up actions (``run``: of both stages)."""
    preset: str = "cpu"
    """DIME hyperparameter preset: "paper" (authors') or "cpu" (small networks); fine-tuning a
    checkpoint keeps the checkpoint's agent instead."""
    device: str = "cpu"
    """Torch device of the agent and the replay store (``run``: of both stages and their evaluations)."""
    torch_threads: int | None = None
    """Intra-op CPU threads for torch (process-wide); None keeps torch's default. One thread is
    often faster for the small "cpu" preset on a busy machine."""
    keep_freed_memory: bool = True
    """Keep memory torch frees between updates mapped for reuse instead of returning it to the
    operating system (glibc's malloc thresholds, process-wide; ``dime_offline/allocator.py``): no
    page faults per update, faster updates on CPU, the process's peak heap stays resident. A
    ``GLIBC_TUNABLES`` malloc setting of the user's wins."""
    eval_episodes: int = 5
    """Episodes per evaluation (authors: 5)."""
    overwrite: bool = False
    """Allow writing into an ``out_dir`` that already holds a run: the files and folders the earlier run
    wrote are removed when the new run starts (other files in the folder stay)."""
    resume: bool = False
    """Continue the stopped run in ``out_dir`` from its last checkpoint (periodic, or written when the run
    was stopped): agent, replay ring, running episode and every RNG come back (see ``trainers/resume.py``).
    ``pretrain`` and ``finetune`` continue with the run's own saved settings unless ``--config`` is
    given; ``run`` needs the first command's settings again, takes a finished stage as it is and
    starts a stage that saved nothing yet."""
    trackers: list[TrackerName] = field(default_factory=list)
    """Experiment trackers to log to as well: "mlflow", "wandb" (``--set 'trackers=[mlflow]'``; extras
    dime-offline[mlflow], [wandb]). They log the config, the metrics and the output paths to where
    their environment points them (docs/experiments.md, "MLflow and Weights & Biases"); ``run``
    logs one tracker run per stage."""
    quiet: bool = False
    """No progress bar (set by ``--json``)."""

    def __post_init__(self) -> None:
        if self.eval_episodes < 1:
            raise ConfigError(f"field 'eval_episodes': must be >= 1, got {self.eval_episodes}")
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"field 'torch_threads': must be >= 1, got {self.torch_threads}")
        check_device(self.device)


@dataclass(frozen=True)
class StageSettings(RunSettings):
    """:class:`RunSettings` plus what one training stage (``pretrain``, ``finetune``) sets for its own
    loop: how it evaluates, when it logs, checkpoints and stops, and where its metrics go. A step is a
    gradient step offline and an env step online."""

    eval_deterministic: bool = True
    """Evaluate deterministic actions (``agent.deterministic_act``, best of K chains by the critics by
    default: docs/algorithm.md section 9); false samples the chain, the authors' protocol."""
    select_acting: bool = False
    """Before each deterministic evaluation, score every deterministic mode (best of K, the noise-free
    mean path) on ``eval_episodes`` selection episodes (fresh at each evaluation: seeds ``seed + 2000003 +
    step x eval_episodes + i``) and act in the better
    one from then on: in the reported evaluation, in ``best/`` and ``checkpoint/`` (their
    ``deterministic_act``), hence in ``load_policy`` and ``export``. Costs two more evaluations each time.
    Which mode acts better changes between checkpoints, up to 2x (docs/algorithm.md section 9)."""
    champion: bool | None = None
    """Deploy a champion (docs/algorithm.md section 8.9, ``trainers/champion.py``): evaluations, ``best/``,
    ``champion/`` and the run directory's policy (``load_policy``, ``export``, ``evaluate``) hold the
    deployed policy, which the learner replaces only when it does better by ``champion_margin`` on the
    evaluation's selection episodes (fresh each time, the two policies on the same ones: one more
    evaluation each time, two when the champion changes); training is unchanged. None: on where the stage
    interacts online (``finetune``), off offline (``pretrain``: choosing among offline policies by
    environment episodes is not offline RL)."""
    champion_margin: float = 1.0
    """How much better the learner must do to replace the champion: its mean return on the selection
    episodes at least the champion's plus this many standard errors of the paired difference (0: at
    least as well). 1 by default: on the CSTR twin it halved the deepest fall of the deployed policy
    against 0 (docs/algorithm.md section 8.9)."""
    max_episode_steps: int | None = None
    """Override the environment's registered time limit (offline in evaluation, online in training and
    evaluation)."""
    checkpoint_every: int = 50_000
    """Overwrite ``checkpoint/`` every this many steps (gradient steps offline, env steps online; 0: only
    at the end); ``best/`` follows evaluations."""
    checkpoint_history: bool = False
    """Also keep each of those checkpoints' policy (weights, config, meta; not the resume state) in
    ``history/step-000001000/``, loadable wherever a checkpoint is (evaluate, export, finetune): a way
    back to any point of the run, e.g. the policy deployed before a fall (~the size of the agent each)."""
    log_every: int = 1000
    """Average and write training metrics every this many steps (gradient steps offline, env steps online)."""
    max_wall_seconds: float | None = None
    """Stop early, with a final evaluation and checkpoint, after this much wall time."""
    tensorboard: bool = True
    """Also write TensorBoard event files (when the tensorboard package is installed)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (math.isfinite(self.champion_margin) and self.champion_margin >= 0):
            raise ConfigError(f"field 'champion_margin': must be a finite number >= 0, got {self.champion_margin}")


class Closeable(Protocol):
    """A stage's resource that ends with its run (an environment)."""

    def close(self) -> None: ...


class RunScaffold:
    """One run of a stage: its directory, resume point, seeds, sinks, display, checkpoints and summary.

    Attributes:
        cfg: the stage's run config: a :class:`StageSettings` with ``out_dir`` and ``steps``.
        stage: the stage's name ("pretrain", "finetune"): tracker tag, checkpoint stage, summary command.
        out: the run directory.
        resume: the checkpoint a resumed run continues from (None for a new run).
        state: the loop's state: a new one, or the resumed checkpoint's.
    """

    def __init__(self, cfg: Any, stage: str, config_file: str, out: Path, resume: ResumePoint | None) -> None:
        self.cfg = cfg
        self.stage = stage
        self.out = out
        self.resume = resume
        self.state = LoopState() if resume is None else resume.state.loop
        self._config_file = config_file
        self._generators: dict[str, Any] = {}
        self._tracker: Tracker | None = None
        self._progress: ProgressDisplay | None = None
        self._champion: Champion | None = None

    @classmethod
    def prepare(
        cls, cfg: Any, stage: str, *, config_file: str, check_out_dir: Callable[[Any], Path] | None = None
    ) -> RunScaffold:
        """Check the trackers and the run directory (``check_out_dir(cfg)``, by default
        :func:`check_run_dir`; a resumed run's is the checkpoint's), then seed the process and set
        torch's threads. Nothing is written. ``config_file``: the name ``cfg`` is saved under."""
        check_trackers(cfg.trackers)
        resume = open_resume(cfg, stage)
        if resume is not None:
            out = Path(cfg.out_dir)
        elif check_out_dir is not None:
            out = check_out_dir(cfg)
        else:
            out = check_run_dir(cfg.out_dir, overwrite=cfg.overwrite)
        seed_everything(cfg.seed)
        if cfg.torch_threads is not None:
            torch.set_num_threads(cfg.torch_threads)
        if cfg.keep_freed_memory:
            keep_freed_memory()
        return cls(cfg, stage, config_file, out, resume)

    @property
    def tracker(self) -> Tracker:
        """The run's metric sinks (within :meth:`recording`)."""
        assert self._tracker is not None, "only within recording()"
        return self._tracker

    @property
    def progress(self) -> ProgressDisplay:
        """The run's progress display, for the stage's notices (within :meth:`recording`)."""
        assert self._progress is not None, "only within recording()"
        return self._progress

    @contextlib.contextmanager
    def recording(self, *, description: str, unit: str = "env steps", resources: Sequence[Closeable] = ()) -> Iterator[None]:
        """Within this block the run writes: a new run starts its directory afresh (an earlier run's
        outputs removed) and saves its config; the metric sinks continue a resumed run's metrics.
        When the block ends the progress display, the sinks and ``resources`` (the stage's
        environment) close, in that order."""
        cfg = self.cfg
        try:
            if self.resume is None:
                start_run_dir(self.out)
            sinks, notices = open_sinks(
                self.out, tensorboard=cfg.tensorboard, resume_at=None if self.resume is None else self.resume.state.metrics,
                trackers=cfg.trackers, run_config=to_dict(cfg), stage=self.stage,
            )
            self._tracker = Tracker(sinks)
            self._progress = ProgressDisplay(cfg.steps, description=description, enabled=not cfg.quiet, unit=unit)
            for notice in notices:
                self._progress.notice(notice)
            if self.resume is None:
                save_config(cfg, self.out / self._config_file)
            yield
        finally:  # the trackers' runs end as failed or interrupted unless finish() ended them
            if self._progress is not None:
                self._progress.close()
            if self._tracker is not None:
                self._tracker.close()
            for resource in resources:
                resource.close()

    def track_generators(self, agent: DIMEAgent, generators: Mapping[str, Any]) -> None:
        """The generators every resumable checkpoint records: the stage's (torch or numpy, by name) and
        ``agent``'s regularisers'; on a resume they, and the global RNGs, are put back where the
        checkpoint left them."""
        self._generators = {**generators, **regularizer_generators(agent)}
        if self.resume is not None:
            restore_generators(self._generators, self.resume.state)

    def save_checkpoint(
        self,
        step: int,
        tag: CheckpointTag,
        agent: DIMEAgent,
        agent_cfg: DIMEConfig,
        normalization: NormalizationStats | None,
        extra: Mapping[str, Any],
        *,
        spaces: SpaceSpec,
        env_id: str | None,
        stage_state: Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]] | None = None,
    ) -> None:
        """Write the checkpoint ``tag`` asks for at ``step``: ``checkpoint/`` with the resume state (the
        loop, the metrics' position, the tracked generators and ``stage_state()``'s JSON facts and
        tensors, taken now), or ``best/`` or ``champion/``: the evaluated policy, which is the
        champion's, not ``agent``, when the run keeps one."""
        if tag == "champion" or (tag == "best" and self._champion is not None):
            assert self._champion is not None, "a champion checkpoint needs a champion"
            target = self.out / (RUN_CHAMPION_SUBDIR if tag == "champion" else RUN_BEST_SUBDIR)
            agent, extra = self._champion.agent, {**extra, CHAMPION_KEY: self._champion.facts()}
        else:
            target = self.out / (RUN_BEST_SUBDIR if tag == "best" else RUN_CHECKPOINT_SUBDIR)
        # What the saved agent decided itself: select_acting's choice, and its value support, which online
        # growth widens (a champion taken earlier keeps the narrower one).
        agent_cfg = dataclasses.replace(
            agent_cfg, deterministic_act=agent.cfg.deterministic_act, n_atoms=agent.cfg.n_atoms, v_max=agent.cfg.v_max
        )
        writer = None
        if tag in ("periodic", "final"):
            facts, tensors = stage_state() if stage_state is not None else ({}, {})
            if self._champion is not None:  # the champion of this moment, so a resume contests the same one
                facts = {**facts, CHAMPION_KEY: self._champion.facts()}
                tensors = {**tensors, CHAMPION_KEY: self._champion.agent.state_dict()}
            writer = resume_writer(self.state, self.tracker, step, generators=self._generators, stage=facts, tensors=tensors)
        save_checkpoint(target, agent, agent_cfg, normalization, dict(extra), spaces=spaces, env_id=env_id, resume_writer=writer)
        if tag in ("periodic", "final") and self.cfg.checkpoint_history:
            keep_in_history(target, self.out, step)

    def evaluate_as_is(self, agent: DIMEAgent, env_id: str, *, metadata: DatasetMetadata | None) -> EpisodeStats:
        """An acting copy of ``agent`` as it is now on the run's evaluation episodes (no champion, no
        selection), e.g. the boundary policy before fine-tuning updates it. The copy acts from its own
        seeded stream, so the learner's acting draws are the ones a run without this evaluation makes."""
        cfg = self.cfg
        policy = acting_copy(agent)
        policy.act_generator.manual_seed(cfg.seed + EVAL_SEED_OFFSET)
        return evaluate(
            policy, env_id, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET, deterministic=cfg.eval_deterministic,
            max_episode_steps=cfg.max_episode_steps, metadata=metadata,
        )

    def keeps_champion(self) -> bool:
        """Whether this run deploys a champion (``champion``; None: in the online stage only)."""
        return self.cfg.champion if self.cfg.champion is not None else self.stage == "finetune"

    def evaluation(
        self,
        agent: DIMEAgent,
        env_id: str,
        *,
        metadata: DatasetMetadata | None,
        checkpoint: Callable[[int, CheckpointTag], None],
    ) -> Callable[[int], EpisodeStats]:
        """The stage's evaluation at a step: ``eval_episodes`` episodes from the run's evaluation seeds,
        acting as ``eval_deterministic`` says; with ``select_acting``, in the deterministic mode that did
        better on the selection episodes just before (both modes' means are logged as
        ``eval/selection_<mode>``). With a champion (:meth:`keeps_champion`) the evaluated policy is the
        champion, which the learner replaces when it does better by ``champion_margin`` on the selection
        episodes (``trainers/champion.py``; ``checkpoint(step, "champion")`` saves it). Call it before the loop
        starts: a new run's first champion is ``agent`` as it is then, a resumed run's the one its
        checkpoint recorded."""
        cfg = self.cfg
        episodes = {"max_episode_steps": cfg.max_episode_steps, "metadata": metadata}
        if self.keeps_champion():
            self._champion = self._resumed_champion(agent)
            if self._champion is None:  # deployable from the start
                self._champion = Champion(acting_copy(agent), self.state.step)
                checkpoint(self.state.step, "champion")

        def selection_returns(policy: DIMEAgent, step: int) -> tuple[float, ...]:
            first = selection_seed(cfg.seed, step, cfg.eval_episodes)
            if policy is not agent:  # the champion's stream starts afresh, so a resumed run acts the same
                policy.act_generator.manual_seed(first)
            return evaluate(policy, env_id, cfg.eval_episodes, seed=first, deterministic=cfg.eval_deterministic, **episodes).returns

        def run_evaluation(step: int) -> EpisodeStats:
            learner: tuple[float, ...] | None = None
            selection: dict[str, float] = {}  # logged once the evaluation is done (a stopped one is repeated whole)
            if cfg.select_acting and cfg.eval_deterministic:
                returns = {}
                for mode in DETERMINISTIC_MODES:
                    with agent.acting_as(mode):
                        returns[mode] = selection_returns(agent, step)
                scores = {mode: float(np.mean(values)) for mode, values in returns.items()}
                chosen = max(scores, key=lambda mode: scores[mode])
                agent.set_deterministic_act(chosen)
                learner = returns[chosen]
                selection.update({f"eval/selection_{mode}": value for mode, value in scores.items()})
                self.progress.notice(
                    f"step {step}: acting {chosen} (selection episodes: "
                    + ", ".join(f"{mode} {value:.1f}" for mode, value in scores.items()) + ")"
                )
            policy, deployed = agent, self._champion
            if deployed is not None:
                if learner is None:
                    learner = selection_returns(agent, step)
                deployed = self._contest(step, agent, learner, selection_returns(deployed.agent, step), selection)
                policy = deployed.agent
                policy.act_generator.manual_seed(cfg.seed + EVAL_SEED_OFFSET + step)
            if deployed is not None and deployed.reported is not None and cfg.eval_deterministic:
                stats = deployed.reported
            else:
                stats = evaluate(policy, env_id, cfg.eval_episodes, seed=cfg.seed + EVAL_SEED_OFFSET, deterministic=cfg.eval_deterministic, **episodes)
                if deployed is not None:
                    deployed.reported = stats
            if deployed is not self._champion:  # taken over once the evaluation is done: a stopped one is repeated whole
                self._champion = deployed
                checkpoint(step, "champion")
            if selection:
                self.tracker.log(step, selection)
            return stats

        return run_evaluation

    def _contest(
        self,
        step: int,
        agent: DIMEAgent,
        learner: tuple[float, ...],
        champion_returns: tuple[float, ...],
        metrics: dict[str, float],
    ) -> Champion:
        """The learner against the champion on this evaluation's selection episodes (their returns there,
        paired): the champion from now on, a new one (an acting copy of the learner) when the learner
        wins. Adds the contest's figures to ``metrics``."""
        champion = self._champion
        assert champion is not None
        learner_mean, champion_mean = float(np.mean(learner)), float(np.mean(champion_returns))
        if challenger_wins(learner, champion_returns, self.cfg.champion_margin):
            if champion.step != step:
                self.progress.notice(
                    f"step {step}: the learner replaces the champion of step {champion.step} "
                    f"(selection episodes: {learner_mean:.1f} against {champion_mean:.1f})"
                )
            champion = Champion(acting_copy(agent), step, learner)
        else:
            champion.selection_returns = champion_returns
        metrics.update({
            "eval/selection_learner": learner_mean, "eval/selection_champion": champion_mean, "eval/champion_step": float(champion.step),
        })
        return champion

    def _resumed_champion(self, agent: DIMEAgent) -> Champion | None:
        """The champion a resumed run's checkpoint recorded (None for a new run, or a checkpoint without
        one), acting as it did, on ``agent``'s device."""
        if self.resume is None or CHAMPION_KEY not in self.resume.state.tensors:
            return None
        facts = self.resume.state.stage[CHAMPION_KEY]
        champion = acting_copy(agent, self.resume.state.tensors[CHAMPION_KEY], facts.get("value_support"))
        return Champion.from_facts(champion, facts)

    def run_loop(
        self,
        cadence: Cadence,
        step: Callable[[int], StepReport],
        *,
        evaluate: Callable[[int], EpisodeStats] | None,
        checkpoint: Callable[[int, CheckpointTag], None],
        eval_generators: Sequence[torch.Generator] = (),
    ) -> LoopResult:
        """:func:`~dime_offline.trainers.loop.run_loop` on this run's state, sinks and display (a resumed
        run that was already complete runs nothing, with a notice); the display closes after it."""
        if self.state.finished:
            self.progress.notice(f"the run in {self.out} is already complete ({self.state.step} steps): nothing to resume")
            loop = self.state.result()
        else:
            loop = run_loop(
                cadence, step, tracker=self.tracker, progress=self.progress, evaluate=evaluate, checkpoint=checkpoint,
                state=self.state, eval_generators=eval_generators,
            )
        self.progress.close()
        return loop

    def finish(
        self, loop: LoopResult, result: Callable[[dict[str, Any]], R], *, curve_title: str, x_label: str = "env steps"
    ) -> R:
        """Plot the learning curve, build the stage's result from the run directory's fields
        (:func:`run_dir_fields`), write it to ``summary.json`` and end the trackers' runs as finished."""
        curve = plot_learning_curve(self.out / METRICS_FILE, self.out / LEARNING_CURVE_FILE, title=curve_title, x_label=x_label)
        summary = result(run_dir_fields(self.out, loop, curve))
        atomic_write_text(self.out / SUMMARY_FILE, json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
        self.tracker.finish(run_outputs(self.out))
        return summary
