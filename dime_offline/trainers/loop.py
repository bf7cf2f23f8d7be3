"""The cadence every training stage shares: seeding, logging, evaluation, checkpoints, budgets.

A stage (online fine-tuning, offline pretraining) supplies one function that advances training by
one step (an env step with its updates, or one gradient step) and, optionally, an evaluation and a
checkpoint function. :func:`run_loop` calls them on schedule, averages the step metrics between
log points, tracks the best evaluation, stops at the step or wall-clock budget and always ends
with a final evaluation and a final checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np
import torch

from dime_offline.checkpoints import (
    RUN_BEST_SUBDIR,
    RUN_CHAMPION_SUBDIR,
    RUN_CHECKPOINT_SUBDIR,
    RUN_HISTORY_SUBDIR,
    run_checkpoint_entries,
)
from dime_offline.errors import ConfigError, RunInterruptedError, TrainingDivergedError
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.io import broken_link_reason, remove_path
from dime_offline.trackers import TRACKER_RUNS_FILE, WANDB_SUBDIR
from dime_offline.tracking import (
    METRICS_FILE,
    TENSORBOARD_SUBDIR,
    ProgressDisplay,
    Tracker,
)

C = TypeVar("C")
CheckpointTag = Literal["periodic", "best", "final", "champion"]

PROGRESS_ALPHA_KEY = "train/alpha/value"
"""Metric shown as the temperature in the progress bar."""
PROGRESS_ENTROPY_KEY = "train/actor/entropy_bound"
"""Metric shown as the entropy lower bound in the progress bar."""
LEARNING_CURVE_FILE = "learning_curve.png"
"""The learning-curve plot of a run directory."""
SUMMARY_FILE = "summary.json"
"""The JSON summary of a run directory (what ``--json`` prints)."""
PRETRAIN_CONFIG_FILE = "pretrain_config.json"
"""The resolved config of a pretraining run."""
FINETUNE_CONFIG_FILE = "finetune_config.json"
"""The resolved config of a fine-tuning run."""
RUN_ARTEFACTS = (
    METRICS_FILE, TENSORBOARD_SUBDIR, RUN_CHECKPOINT_SUBDIR, RUN_BEST_SUBDIR, RUN_CHAMPION_SUBDIR, RUN_HISTORY_SUBDIR, LEARNING_CURVE_FILE,
    SUMMARY_FILE, PRETRAIN_CONFIG_FILE, FINETUNE_CONFIG_FILE, TRACKER_RUNS_FILE,
)
"""Everything a training stage writes into its run directory: any of them marks the directory as
holding a run, and ``overwrite`` removes exactly these and :data:`TRACKER_FOLDERS` (a user's other
files stay)."""
TRACKER_FOLDERS = (WANDB_SUBDIR,)
"""Trackers' own folders in a run directory: removed with an earlier run, but alone they do not make
a run (W&B may have written one for a run that stopped when another tracker refused to open)."""


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's RNGs (components also take explicit seeds)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Cadence:
    """When a loop logs, evaluates, checkpoints and stops. Steps count from 1."""

    total_steps: int
    """Number of steps to run (env steps online, gradient steps offline)."""
    eval_every: int = 0
    """Evaluate every this many steps (0: only at the end)."""
    checkpoint_every: int = 0
    """Write a periodic checkpoint every this many steps (0: only the final one)."""
    log_every: int = 1000
    """Average step metrics over this many steps before writing them."""
    max_wall_seconds: float | None = None
    """Stop (with a final evaluation and checkpoint) once this much wall time has passed."""
    target_return: float | None = None
    """Stop (with the final checkpoint) after the first evaluation whose mean return reaches this;
    that evaluation is the run's final one."""

    def __post_init__(self) -> None:
        for name in ("total_steps", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"field '{name}': must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"field '{name}': must be >= 0, got {getattr(self, name)}")
        if self.max_wall_seconds is not None and self.max_wall_seconds <= 0:
            raise ConfigError(f"field 'max_wall_seconds': must be positive, got {self.max_wall_seconds}")

    @classmethod
    def of_run(cls, cfg: Any) -> Cadence:
        """The cadence a stage's run config sets (``steps``, ``eval_every``, ``checkpoint_every``,
        ``log_every``, ``max_wall_seconds`` and, where the stage has it, ``target_return``)."""
        return cls(
            total_steps=cfg.steps, eval_every=cfg.eval_every, checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every,
            max_wall_seconds=cfg.max_wall_seconds, target_return=getattr(cfg, "target_return", None),
        )


@dataclass
class StepReport:
    """What one step of a stage did."""

    updates: int = 0
    """Gradient updates performed in this step."""
    metrics: Mapping[str, float] = field(default_factory=dict)
    """Namespaced metrics of this step (averaged over the log interval by the loop)."""
    episodes: list[tuple[float, int]] = field(default_factory=list)
    """(return, length) of each training episode that ended in this step."""


@dataclass(frozen=True)
class EvalRecord:
    """One evaluation: the step it ran at and its statistics."""

    step: int
    stats: EpisodeStats


@dataclass
class LoopResult:
    """What :func:`run_loop` did."""

    steps: int
    """Steps completed."""
    updates: int
    """Gradient updates performed."""
    wall_seconds: float
    """Wall time of the whole loop, evaluations included."""
    eval_seconds: float
    """Wall time spent in evaluations."""
    evaluations: list[EvalRecord]
    """Every evaluation, in order; the last one is the final policy's."""
    stopped_by_time: bool
    """True when the wall-clock budget ended the run before ``total_steps``."""
    stopped_by_target: bool = False
    """True when an evaluation reached ``Cadence.target_return`` before ``total_steps``."""

    @property
    def final(self) -> EvalRecord | None:
        return self.evaluations[-1] if self.evaluations else None

    @property
    def best(self) -> EvalRecord | None:
        """The evaluation with the highest mean return (the earliest on ties)."""
        if not self.evaluations:
            return None
        return max(self.evaluations, key=lambda r: (r.stats.return_mean, -r.step))

    @property
    def updates_per_second(self) -> float:
        """Gradient updates per second of training time (evaluation time excluded)."""
        train_seconds = self.wall_seconds - self.eval_seconds
        return self.updates / train_seconds if train_seconds > 0 else 0.0


class _MeanAccumulator:
    """Running means of metric dicts between two log points."""

    def __init__(self, sums: Mapping[str, float] | None = None, counts: Mapping[str, int] | None = None) -> None:
        self.sums: dict[str, float] = dict(sums or {})
        self.counts: dict[str, int] = dict(counts or {})

    def add(self, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
            self.counts[key] = self.counts.get(key, 0) + 1

    def pop_means(self) -> dict[str, float]:
        means = {k: self.sums[k] / self.counts[k] for k in self.sums}
        self.sums.clear()
        self.counts.clear()
        return means


@dataclass
class LoopState:
    """Where a loop stands after its completed steps: what a checkpoint records so that
    ``--resume`` continues exactly (the step metrics not yet logged included)."""

    step: int = 0
    """Steps completed."""
    updates: int = 0
    """Gradient updates performed."""
    evaluations: list[EvalRecord] = field(default_factory=list)
    """Every evaluation so far (the best one is judged against all of them)."""
    last_periodic: int | None = None
    """Step of the newest periodic checkpoint."""
    wall_seconds: float = 0.0
    """Wall time of the loop so far, earlier sessions of a resumed run included."""
    eval_seconds: float = 0.0
    """Of which in evaluations."""
    finished: bool = False
    """The run is complete (all steps, or the target return reached): nothing left to resume."""
    stopped_by_time: bool = False
    stopped_by_target: bool = False
    evaluation_owed: bool = False
    """Step ``step``'s evaluation is under way; in a checkpoint: a stop interrupted it, and a resume
    runs it and the rest of that step's iteration (best checkpoint, target-return stop, periodic
    checkpoint) before the next step."""
    accumulator: _MeanAccumulator = field(default_factory=_MeanAccumulator, repr=False)
    """Step metrics since the last log point."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (floats round-trip exactly through JSON)."""
        return {
            "step": self.step, "updates": self.updates, "last_periodic": self.last_periodic,
            "wall_seconds": self.wall_seconds, "eval_seconds": self.eval_seconds, "finished": self.finished,
            "stopped_by_time": self.stopped_by_time, "stopped_by_target": self.stopped_by_target,
            "evaluation_owed": self.evaluation_owed,
            "evaluations": [{"step": r.step, "stats": dataclasses.asdict(r.stats)} for r in self.evaluations],
            "metric_sums": self.accumulator.sums, "metric_counts": self.accumulator.counts,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LoopState:
        """Inverse of :meth:`to_dict`; raises KeyError/TypeError/ValueError on a malformed dict."""

        def stats(d: Mapping[str, Any]) -> EpisodeStats:
            optional = {k: None if d[k] is None else tuple(d[k]) for k in ("references", "at_bounds")}
            return EpisodeStats(returns=tuple(d["returns"]), lengths=tuple(d["lengths"]), terminated=tuple(d["terminated"]), **optional)

        return cls(
            step=int(data["step"]), updates=int(data["updates"]), last_periodic=data["last_periodic"],
            wall_seconds=float(data["wall_seconds"]), eval_seconds=float(data["eval_seconds"]), finished=bool(data["finished"]),
            stopped_by_time=bool(data["stopped_by_time"]), stopped_by_target=bool(data["stopped_by_target"]),
            evaluation_owed=bool(data.get("evaluation_owed", False)),  # absent before dime-offline recorded it
            evaluations=[EvalRecord(int(r["step"]), stats(r["stats"])) for r in data["evaluations"]],
            accumulator=_MeanAccumulator(data["metric_sums"], data["metric_counts"]),
        )

    def result(self) -> LoopResult:
        """The :class:`LoopResult` of the steps so far."""
        return LoopResult(
            steps=self.step, updates=self.updates, wall_seconds=self.wall_seconds, eval_seconds=self.eval_seconds,
            evaluations=list(self.evaluations), stopped_by_time=self.stopped_by_time, stopped_by_target=self.stopped_by_target,
        )


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM while the loop runs: a signal that arrives during a step or its
    bookkeeping is held until the step's iteration ends, so the checkpoint written on the way out
    holds whole steps; during an evaluation (which may take long) the loop stops at once, and the
    checkpoint holds the state before the evaluation, which a resume then runs; during the final
    checkpoint it waits for it. A second signal stops the loop at once wherever it is (``forced``):
    the state may then be half a step, and is not saved. Outside the main thread signals stay as
    they are."""

    def __init__(self) -> None:
        self.pending = False
        self.immediate = False
        self.forced = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle both signals within this block (the previous handlers come back after it)."""
        previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.immediate:
            raise KeyboardInterrupt
        if self.pending:
            self.forced = True
            raise KeyboardInterrupt
        self.pending = True

    @contextlib.contextmanager
    def at_once(self) -> Iterator[None]:
        """Within this block a signal stops the loop at once (a held one too)."""
        if self.pending:
            raise KeyboardInterrupt
        self.immediate = True
        try:
            yield
        finally:
            self.immediate = False


def run_loop(
    cadence: Cadence,
    step: Callable[[int], StepReport],
    *,
    tracker: Tracker,
    progress: ProgressDisplay,
    evaluate: Callable[[int], EpisodeStats] | None = None,
    checkpoint: Callable[[int, CheckpointTag], None] | None = None,
    state: LoopState | None = None,
    eval_generators: Sequence[torch.Generator] = (),
) -> LoopResult:
    """Call ``step(1..total_steps)`` with logging, evaluation and checkpoints on schedule.

    Args:
        cadence: the schedule and budgets.
        step: advances training by one step and reports what it did.
        tracker: receives ``train/...`` step metrics (means over the log interval, plus
            ``train/updates_per_second``), ``train/episode_return``/``_length`` per finished
            training episode and ``eval/...`` per evaluation.
        progress: the progress display (may be disabled).
        evaluate: returns evaluation statistics for the current policy; None skips evaluation.
        checkpoint: saves the current state, told why (``"periodic"``, ``"best"`` after an
            evaluation that beat every earlier one, ``"final"`` once at the end, also when
            SIGINT/SIGTERM stops the run, which then raises :class:`RunInterruptedError`; the
            fourth tag, ``"champion"``, is the evaluation's own: see ``trainers/champion.py``).
        state: the loop's state, updated in place as steps complete (a checkpoint function
            records it for a resume); one restored from a checkpoint continues after its step,
            after the evaluation a stop interrupted (``state.evaluation_owed``) and the rest of its
            iteration.
        eval_generators: the generators ``evaluate`` draws from besides the global RNGs (a
            stochastic policy's); a stop during an evaluation puts them and the global RNGs back
            where they stood before it, so the checkpoint written then is the state a resume
            repeats the evaluation from.
    """
    state = LoopState() if state is None else state
    start = time.monotonic()
    wall_before, eval_before = state.wall_seconds, state.eval_seconds
    eval_seconds = 0.0
    updates_at_last_log, time_at_last_log = state.updates, start
    accumulator = state.accumulator
    latest: dict[str, float] = {}
    last_eval_return = state.evaluations[-1].stats.return_mean if state.evaluations else None
    first = state.step + 1
    evaluation_owed_at_start = state.evaluation_owed
    signals = _StopSignals()

    def log_train(at: int) -> None:
        nonlocal updates_at_last_log, time_at_last_log, latest
        now = time.monotonic()
        means = accumulator.pop_means()
        means["train/updates_per_second"] = (state.updates - updates_at_last_log) / max(now - time_at_last_log, 1e-9)
        updates_at_last_log, time_at_last_log = state.updates, now
        latest = means
        tracker.log(at, means)

    def clock() -> None:
        state.wall_seconds = wall_before + time.monotonic() - start
        state.eval_seconds = eval_before + eval_seconds

    def progressed() -> bool:
        """Whether this session changed the state its run's last checkpoint holds."""
        return state.step >= first or (evaluation_owed_at_start and not state.evaluation_owed)

    def saved_step() -> int:
        """The step the run's resumable checkpoint holds (0: none): this session's last periodic one,
        else the one a resumed session started from."""
        return max(first - 1, state.last_periodic or 0)

    def end_iteration(current: int, is_last: bool) -> bool:
        """What follows step ``current``'s training log: its evaluation (with the best checkpoint and
        the target-return stop), the periodic checkpoint and the progress display; returns whether the
        run ends with this step."""
        nonlocal eval_seconds, last_eval_return
        if evaluate is not None and ((cadence.eval_every and current % cadence.eval_every == 0) or is_last):
            state.evaluation_owed = True
            eval_start = time.monotonic()
            with _rewound_if_interrupted(eval_generators), signals.at_once():
                stats = evaluate(current)
            state.evaluation_owed = False
            eval_seconds += time.monotonic() - eval_start
            is_best = all(stats.return_mean > r.stats.return_mean for r in state.evaluations)
            state.evaluations.append(EvalRecord(current, stats))
            tracker.log(current, stats.to_metrics("eval"))
            last_eval_return = stats.return_mean
            if is_best and checkpoint is not None:
                clock()
                checkpoint(current, "best")
            if not is_last and cadence.target_return is not None and stats.return_mean >= cadence.target_return:
                state.stopped_by_target = is_last = True
                if current % cadence.log_every:
                    log_train(current)
        if checkpoint is not None and cadence.checkpoint_every and current % cadence.checkpoint_every == 0 and not is_last:
            state.last_periodic = current
            clock()
            checkpoint(current, "periodic")
        progress.update(
            current,
            updates_per_second=latest.get("train/updates_per_second"),
            eval_return=last_eval_return,
            alpha=latest.get(PROGRESS_ALPHA_KEY),
            entropy_bound=latest.get(PROGRESS_ENTROPY_KEY),
        )
        return is_last

    try:
        with signals.installed():
            # A stop during the last session's evaluation: that iteration ends first, as it would have.
            ended = state.evaluation_owed and end_iteration(
                state.step, state.step == cadence.total_steps or state.stopped_by_time
            )
            for current in range(first, cadence.total_steps + 1):
                if ended:
                    break
                if signals.pending:
                    raise KeyboardInterrupt
                report = step(current)
                state.step = current
                state.updates += report.updates
                accumulator.add(report.metrics)
                for episode_return, episode_length in report.episodes:
                    tracker.log(current, {"train/episode_return": episode_return, "train/episode_length": float(episode_length)})

                out_of_time = cadence.max_wall_seconds is not None and time.monotonic() - start >= cadence.max_wall_seconds
                is_last = current == cadence.total_steps or out_of_time
                state.stopped_by_time = out_of_time and current < cadence.total_steps
                if current % cadence.log_every == 0 or is_last:
                    log_train(current)
                ended = end_iteration(current, is_last)
            # Still under the handlers: a signal now waits for the final checkpoint (nothing is left to stop).
            state.finished = state.step == cadence.total_steps or state.stopped_by_target
            clock()
            if checkpoint is not None and progressed():
                checkpoint(state.step, "final")
    except KeyboardInterrupt:
        saved = saved_step()
        kept = f"the run's checkpoint holds steps 1-{saved}; continue with --resume" if saved else None
        if checkpoint is None:
            raise RunInterruptedError(f"interrupted after {state.step} steps; nothing to save") from None
        if signals.forced:
            raise RunInterruptedError(
                f"stopped at once by a second signal (possibly mid-step), without a checkpoint; {kept or 'none had been written'}"
            ) from None
        if not progressed():
            raise RunInterruptedError(f"interrupted before step {first} completed; {kept or 'nothing to save'}") from None
        clock()
        checkpoint(state.step, "final")  # before the partial log below, which a resume drops again
        if accumulator.counts:
            log_train(state.step)
        owed = f" (its evaluation at step {state.step} runs first)" if state.evaluation_owed else ""
        raise RunInterruptedError(
            f"interrupted: steps 1-{state.step} are saved in the run's checkpoint; continue with --resume{owed}"
        ) from None
    except TrainingDivergedError as err:
        saved = saved_step()
        kept = f"the last good checkpoint is from step {saved}" if saved else "no checkpoint had been written"
        raise TrainingDivergedError(f"{err.message} at step {state.step + 1}; {kept}") from None

    return state.result()


@contextlib.contextmanager
def _rewound_if_interrupted(generators: Sequence[torch.Generator]) -> Iterator[None]:
    """Put ``generators`` and Python's, numpy's and torch's global RNGs back where they stood when
    the block began if a KeyboardInterrupt leaves it."""
    saved = [generator.get_state() for generator in generators]
    global_rngs = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    except KeyboardInterrupt:
        for generator, generator_state in zip(generators, saved):
            generator.set_state(generator_state)
        random.setstate(global_rngs[0])
        np.random.set_state(global_rngs[1])
        torch.set_rng_state(global_rngs[2])
        raise


def run_dir_fields(out: Path, loop: LoopResult, learning_curve: Path | None) -> dict[str, Any]:
    """The :class:`RunResult` fields of a stage's run directory ``out``: its checkpoints, metrics and plot,
    where every stage writes them."""
    return {
        "out_dir": str(out), "checkpoint": str(out / RUN_CHECKPOINT_SUBDIR),
        "best_checkpoint": str(out / RUN_BEST_SUBDIR) if loop.best is not None else None,
        "champion_checkpoint": str(out / RUN_CHAMPION_SUBDIR) if (out / RUN_CHAMPION_SUBDIR).exists() else None,
        "metrics_csv": str(out / METRICS_FILE), "learning_curve": None if learning_curve is None else str(learning_curve),
    }


def run_outputs(out: Path) -> dict[str, str]:
    """What a finished stage's tracker runs record of it: its summary and final checkpoint (absolute paths)."""
    folder = out.resolve()
    return {"summary_file": str(folder / SUMMARY_FILE), "checkpoint_dir": str(folder / RUN_CHECKPOINT_SUBDIR)}


def check_run_dir(out_dir: str, *, overwrite: bool) -> Path:
    """The run directory ``out_dir``, checked before anything is loaded or written: not a file, no
    symbolic link on its way that leads nowhere, and free of an earlier run unless ``overwrite``.

    Nothing is created here; :func:`start_run_dir` does that once the run is about to write, so a
    run refused later (bad data, a mismatched environment) leaves no folder and keeps an old run.
    """
    out = Path(out_dir)
    for path in (out, *out.parents):
        reason = broken_link_reason(path)
        if reason is not None:
            raise ConfigError(f"output path {path} {reason}; remove it or choose another output directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output path {out} exists and is not a directory")
    if not overwrite and (any((out / name).exists() for name in RUN_ARTEFACTS) or run_checkpoint_entries(out)):
        raise ConfigError(f"{out} already holds a run; choose another output directory or set overwrite")
    return out


def start_run_dir(out: Path) -> None:
    """Create ``out`` and remove what an earlier run wrote there (:data:`RUN_ARTEFACTS`,
    :data:`TRACKER_FOLDERS` and the checkpoints' versions and temporaries only), so no stale ``best/``
    checkpoint, TensorBoard events, tracker run ids, plot or summary mix with the new run's."""
    out.mkdir(parents=True, exist_ok=True)
    for path in [out / name for name in (*RUN_ARTEFACTS, *TRACKER_FOLDERS)] + run_checkpoint_entries(out):
        remove_path(path)


@dataclass
class RunResult:
    """The summary a training stage returns (and ``--json`` prints): same keys for every stage."""

    command: str
    """Stage name: "finetune", "pretrain"."""
    env: str | None
    """Environment id (None for an offline stage without one)."""
    loop: LoopResult
    """Steps, updates, timings and evaluations of the loop."""
    out_dir: str
    """Run directory."""
    checkpoint: str
    """Latest (final) checkpoint directory."""
    best_checkpoint: str | None
    """Checkpoint of the best evaluation, when evaluations ran."""
    champion_checkpoint: str | None
    """The policy the run deploys, when it kept a champion (``trainers/champion.py``)."""
    metrics_csv: str
    """Path of the metrics CSV."""
    learning_curve: str | None
    """Path of the learning-curve PNG (None when there was nothing to plot)."""
    agent: Any = field(default=None, repr=False)
    """The trained agent, as saved in ``checkpoint`` (not part of the JSON summary)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary; evaluation blocks use :meth:`EpisodeStats.to_dict` keys."""

        def block(record: EvalRecord | None) -> dict[str, Any] | None:
            if record is None:
                return None
            return {"step": record.step, **record.stats.to_dict()}

        return {
            "command": self.command,
            "env": self.env,
            "steps": self.loop.steps,
            "updates": self.loop.updates,
            "wall_seconds": round(self.loop.wall_seconds, 3),
            "updates_per_second": round(self.loop.updates_per_second, 3),
            "stopped_by_time": self.loop.stopped_by_time,
            "stopped_by_target": self.loop.stopped_by_target,
            "final": block(self.loop.final),
            "best": block(self.loop.best),
            "out_dir": self.out_dir,
            "checkpoint": self.checkpoint,
            "best_checkpoint": self.best_checkpoint,
            "champion_checkpoint": self.champion_checkpoint,
            "metrics_csv": self.metrics_csv,
            "learning_curve": self.learning_curve,
        }
