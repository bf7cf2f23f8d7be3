"""Sweeps on Ray Tune: a grid or random search over config fields x seeds of pretrain, finetune or run.

:func:`sweep` expands a :class:`SweepConfig` into trials (one per setting and seed), runs each trial
through the library's own entry point (:func:`~dime_offline.trainers.offline.pretrain`,
:func:`~dime_offline.trainers.online.finetune` or :func:`~dime_offline.trainers.pipeline.run_pipeline`)
in a Ray Tune trial, and compares the finished runs (:func:`~dime_offline.compare.compare`). Each
trial writes a normal run directory, ``<out>/trials/<name>/``, so every other command reads it.

Locally Ray starts with one CPU per core and each trial claims ``cpus_per_trial`` of them with
``torch_threads`` intra-op threads: on 2 cores two one-thread trials run side by side. ``address``
attaches to a running Ray cluster instead (``ray start --head``); the output folder must then be
on a filesystem every node writes to.

Evaluations are reported to Tune as they happen (``score``: the mean evaluation return, in order
over both stages of ``run``), so an ASHA scheduler can stop trials whose score lags at a rung; a
stopped trial's folder is marked ``stopped.json``. Resuming (``resume``) skips the trials whose run
is finished or was stopped; a trial whose run saved a checkpoint continues from it through the run's
own ``resume``, the others start again.

Trials that log to MLflow or W&B (``trackers`` in the base config) are grouped there under the
sweep's ``name``: MLflow nests their runs under a run of the sweep's own (opened here, continued on
resume, finished when every trial has finished), W&B gives them the sweep as their group; both tag
each trial's runs with its setting and seed (:class:`~dime_offline.trackers.TrackerGroup`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dime_offline.compare import (
    EVAL_RETURN_KEY,
    STOPPED_FILE,
    TRIAL_FILE,
    CompareConfig,
    CompareResult,
    compare,
)
from dime_offline.config import dotted_items, from_dict, setting_text, to_dict
from dime_offline.errors import ConfigError, DimeOfflineError
from dime_offline.io import atomic_write_text
from dime_offline.trackers import (
    TrackerGroup,
    check_trackers,
    open_tracker_sinks,
    tracker_group,
)
from dime_offline.tracking import METRICS_FILE, Tracker, extra_sinks, read_metrics_csv
from dime_offline.trainers.loop import SUMMARY_FILE
from dime_offline.trainers.resume import holds_checkpoint

RAY_HINT = "Ray Tune is not installed; install the extra with: pip install 'dime-offline[ray]'"
PLAN_FILE = "sweep.json"
"""The sweep's trials as planned, in its output folder: a resumed sweep must plan the same trials."""
TRIALS_SUBDIR = "trials"
RAY_SUBDIR = "ray"
COMPARE_SUBDIR = "compare"
ERROR_FILE = "error.txt"
"""A trial that failed on bad input leaves its one-line error here (and no traceback)."""
DISTRIBUTIONS = ("uniform", "loguniform", "randint")
"""Random-search distributions: ``{uniform: [low, high]}``, ``{loguniform: [low, high]}``,
``{randint: [low, high]}`` (both ends included)."""
INPUT_PATH_FIELDS = ("data", "checkpoint")
"""Config fields naming inputs: a relative path that exists here is made absolute, since a trial
runs in another working directory (and, on a cluster, on another machine)."""
SCORE_METRIC = "score"
"""What a trial reports to Tune at each evaluation: the mean evaluation return."""
EVALUATIONS_METRIC = "evaluations"
"""Reported with the score: the evaluation's number in the trial (a resumed trial's count on)."""


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping on the evaluation score."""

    kind: Literal["none", "asha"] = "none"
    """"asha": asynchronous successive halving (Li et al., 2020) on the mean evaluation return;
    "none": every trial runs to its end."""
    grace_period: int = 2
    """Evaluations every trial gets before ASHA may stop it."""
    reduction_factor: int = 2
    """ASHA keeps the best 1/reduction_factor of the trials at each rung."""

    def __post_init__(self) -> None:
        if self.grace_period < 1:
            raise ConfigError(f"field 'scheduler.grace_period': must be >= 1, got {self.grace_period}")
        if self.reduction_factor < 2:
            raise ConfigError(f"field 'scheduler.reduction_factor': must be >= 2, got {self.reduction_factor}")


@dataclass(frozen=True)
class SweepConfig:
    """A sweep file (docs/experiments.md) plus where and how it runs."""

    command: Literal["pretrain", "finetune", "run"] = "run"
    """The library entry point every trial calls: pretrain, finetune or run (both stages)."""
    base: dict[str, Any] = field(default_factory=dict)
    """That command's config fields shared by every trial (as in its ``--config`` file)."""
    parameters: dict[str, Any] = field(default_factory=dict)
    """Dotted field (``agent.utd``, ``offline.conservative_weight``, ``pretrain_steps``, ``data``) ->
    a list of values (grid: all of them; random: one drawn per setting) or, for random search only,
    a distribution ``{uniform|loguniform|randint: [low, high]}``."""
    search: Literal["grid", "random"] = "grid"
    """"grid": every combination of the parameters' lists; "random": ``samples`` settings drawn."""
    samples: int = 1
    """Random search: how many settings to draw."""
    search_seed: int = 0
    """Random search: seed of the draws (the same file always plans the same trials)."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Training seeds; every setting runs once per seed."""
    cpus_per_trial: float = 1.0
    """CPUs Ray reserves for each trial (locally Ray has one per core)."""
    torch_threads: int = 1
    """Intra-op torch threads of each trial (sized to ``cpus_per_trial``)."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Optional early stopping (ASHA)."""
    out_dir: str = "runs/sweep"
    """Output folder: ``trials/<name>/`` run directories, ``compare/``, ``sweep.json`` and Tune's ``ray/``."""
    name: str | None = None
    """The sweep's name in the experiment trackers (the MLflow run its trials' runs nest under, the W&B
    group); None: the output folder's name."""
    address: str | None = None
    """Ray cluster to attach to (``host:port``, or "auto"); None starts Ray on this machine."""
    resume: bool = False
    """Continue the sweep already in ``out_dir``: finished and stopped trials are kept, an interrupted one
    continues from its run's last checkpoint (the run's own resume), one that saved none starts again."""
    quiet: bool = False
    """No Ray Tune progress output (set by ``--json``)."""

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ConfigError("field 'seeds': at least one seed is needed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"field 'seeds': repeated seeds {self.seeds}")
        if self.samples < 1:
            raise ConfigError(f"field 'samples': must be >= 1, got {self.samples}")
        if self.cpus_per_trial <= 0:
            raise ConfigError(f"field 'cpus_per_trial': must be positive, got {self.cpus_per_trial}")
        if self.torch_threads < 1:
            raise ConfigError(f"field 'torch_threads': must be >= 1, got {self.torch_threads}")


@dataclass(frozen=True)
class Trial:
    """One setting at one seed: the command's whole config and the run directory it writes."""

    name: str
    """``s<setting>-seed<seed>``: the run directory's name under ``trials/``."""
    setting: dict[str, Any]
    """The parameters' values of this trial's setting."""
    seed: int
    command: str
    config: dict[str, Any]
    """The command's resolved config (``out_dir`` is the trial's run directory)."""

    @property
    def run_dir(self) -> Path:
        return Path(self.config["out_dir"])

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def entry_points() -> dict[str, tuple[type, Callable[[Any], Any]]]:
    """command -> (config class, library function)."""
    from dime_offline.trainers.offline import PretrainConfig, pretrain
    from dime_offline.trainers.online import FinetuneConfig, finetune
    from dime_offline.trainers.pipeline import PipelineConfig, run_pipeline

    return {"pretrain": (PretrainConfig, pretrain), "finetune": (FinetuneConfig, finetune), "run": (PipelineConfig, run_pipeline)}


def plan_trials(cfg: SweepConfig) -> list[Trial]:
    """Every (setting, seed) trial of the sweep, each config built and checked (a bad field or value
    fails here, before anything runs)."""
    from dime_offline.agent.config import DIMEConfig
    from dime_offline.config import resolve_agent_config

    cls, _ = entry_points()[cfg.command]
    trials_dir = Path(cfg.out_dir).resolve() / TRIALS_SUBDIR
    trials = []
    for index, setting in enumerate(_settings(cfg)):
        for seed in cfg.seeds:
            name = f"s{index:03d}-seed{seed}"
            data = to_dict(cls())
            for key, value in [*dotted_items(cfg.base), *setting.items()]:
                _set_dotted(data, key, value)
            data.update(seed=seed, out_dir=str(trials_dir / name), torch_threads=cfg.torch_threads, quiet=True, overwrite=True)
            for key in INPUT_PATH_FIELDS:
                if isinstance(data.get(key), str) and data[key] and Path(data[key]).exists():
                    data[key] = str(Path(data[key]).resolve())
            where = setting_text(setting.items()) or "base"
            try:
                config = from_dict(cls, data)
                if getattr(config, "checkpoint", None) is None:  # from a checkpoint the trainer checks the agent fields
                    resolve_agent_config(DIMEConfig, DIMEConfig.preset(config.preset), config.agent)
            except ConfigError as exc:
                raise ConfigError(f"sweep setting {where}: {exc.message}") from None
            trials.append(Trial(name, dict(setting), seed, cfg.command, to_dict(config)))
    return trials


def _settings(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The parameter settings: the grid's combinations in file order, or ``samples`` random draws."""
    names = list(cfg.parameters)
    for name, spec in cfg.parameters.items():
        if isinstance(spec, dict):
            kind = next(iter(spec), None)
            bounds = spec.get(kind) if kind else None
            if len(spec) != 1 or kind not in DISTRIBUTIONS or not (isinstance(bounds, list) and len(bounds) == 2):
                raise ConfigError(f"parameter '{name}': expected a list of values or one of "
                                  f"{', '.join(f'{{{d}: [low, high]}}' for d in DISTRIBUTIONS)}, got {spec!r}")
            if cfg.search == "grid":
                raise ConfigError(f"parameter '{name}': a distribution needs search: random (a grid takes a list of values)")
            low, high = bounds
            numbers = all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            if not numbers or low > high or (kind == "loguniform" and low <= 0):
                raise ConfigError(f"parameter '{name}': {kind} needs numbers low <= high{' above 0' if kind == 'loguniform' else ''}, "
                                  f"got {bounds!r}")
        elif not isinstance(spec, list) or not spec:
            raise ConfigError(f"parameter '{name}': expected a non-empty list of values, got {spec!r}")
    if cfg.search == "grid":
        return [dict(zip(names, values, strict=True)) for values in itertools.product(*cfg.parameters.values())]
    rng = np.random.default_rng(cfg.search_seed)
    return [{name: _draw(rng, spec) for name, spec in cfg.parameters.items()} for _ in range(cfg.samples)]


def _draw(rng: np.random.Generator, spec: Any) -> Any:
    if isinstance(spec, list):
        return spec[int(rng.integers(len(spec)))]
    (kind, (low, high)), = spec.items()
    if kind == "randint":
        return int(rng.integers(int(low), int(high) + 1))
    if kind == "loguniform":
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
    else:
        value = rng.uniform(low, high)
    return float(f"{value:.4g}")  # readable settings; four digits are finer than any tuning resolves


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts; a missing section is created (the typed config rejects unknown fields)."""
    *sections, last = key.split(".")
    node = data
    for part in sections:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"parameter '{key}': '{part}' is not a config section")
        node = child
    node[last] = value


# ---------------------------------------------------------------------------------------------------
# Running


@dataclass
class TrialOutcome:
    """What became of one trial."""

    name: str
    run_dir: str
    status: Literal["finished", "kept", "stopped", "failed"]
    """"finished" in this call, "kept" (finished or stopped before, on resume), "stopped" early by
    the scheduler, "failed"."""
    error: str | None = None


@dataclass
class SweepResult:
    """The trials' outcomes and the comparison of the finished runs."""

    out_dir: str
    trials: list[TrialOutcome]
    wall_seconds: float
    comparison: CompareResult | None

    @property
    def failed(self) -> list[TrialOutcome]:
        return [t for t in self.trials if t.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "sweep", "out_dir": self.out_dir, "wall_seconds": round(self.wall_seconds, 3),
            "trials": [dataclasses.asdict(t) for t in self.trials],
            "comparison": None if self.comparison is None else self.comparison.to_dict(),
        }


def sweep(cfg: SweepConfig) -> SweepResult:
    """Plan the trials, run those not done yet on Ray Tune, and compare every finished run."""
    start = time.perf_counter()
    trials = plan_trials(cfg)
    check_trackers(name for trial in trials for name in trial.config.get("trackers", ()))
    out = Path(cfg.out_dir).resolve()
    _check_plan(out, trials, resume=cfg.resume)
    group: dict[str, Any] = {"sweep": cfg.name or out.name, "mlflow_parent": None}
    sweep_run = Tracker([])
    if any("mlflow" in trial.config.get("trackers", ()) for trial in trials):
        sweep_run, group["mlflow_parent"] = _open_mlflow_sweep_run(cfg, out, group["sweep"])
    with sweep_run:  # left unfinished (an error, a failed trial, Ctrl-C), the sweep's run ends failed or killed
        atomic_write_text(out / PLAN_FILE, json.dumps({"sweep": to_dict(cfg), "trials": [t.to_dict() for t in trials]},
                                                       indent=2, sort_keys=True) + "\n")
        outcomes = _run_pending(trials, cfg, out, group)
        comparison = None
        if any((Path(t.run_dir) / SUMMARY_FILE).is_file() for t in outcomes):
            comparison = compare(CompareConfig(paths=(str(out / TRIALS_SUBDIR),), out_dir=str(out / COMPARE_SUBDIR)))
        if not any(t.status == "failed" for t in outcomes):
            outputs = {} if comparison is None else {"compare_json": comparison.json_path, "compare_figure": comparison.figure}
            sweep_run.finish({key: path for key, path in outputs.items() if path is not None})
    return SweepResult(str(out), outcomes, time.perf_counter() - start, comparison)


def _run_pending(trials: list[Trial], cfg: SweepConfig, out: Path, group: dict[str, Any]) -> list[TrialOutcome]:
    """Run the trials not finished or stopped yet on Ray Tune; returns every trial's outcome."""
    kept = {t.name for t in trials if _is_done(t.run_dir)}
    pending = [t for t in trials if t.name not in kept]
    errors = _run_on_tune(pending, cfg, out, group) if pending else {}
    outcomes = []
    for trial in trials:
        if trial.name in kept:
            outcomes.append(TrialOutcome(trial.name, str(trial.run_dir), "kept"))
        elif (trial.run_dir / SUMMARY_FILE).is_file():
            outcomes.append(TrialOutcome(trial.name, str(trial.run_dir), "finished"))
        elif (trial.run_dir / STOPPED_FILE).is_file():
            outcomes.append(TrialOutcome(trial.name, str(trial.run_dir), "stopped"))
        else:
            error = errors.get(trial.name) or "the trial ended without a summary (interrupted); continue it with resume"
            outcomes.append(TrialOutcome(trial.name, str(trial.run_dir), "failed", error))
    return outcomes


def _open_mlflow_sweep_run(cfg: SweepConfig, out: Path, name: str) -> tuple[Tracker, dict[str, str]]:
    """The sweep's own MLflow run (continued on resume, through ``out/trackers.json``), with the sweep
    config as parameters; returns it and what the trials' runs need to nest under it."""
    sinks, notices = open_tracker_sinks(out, ["mlflow"], run_config=to_dict(cfg), stage="sweep", resume=cfg.resume, run_name=name)
    for notice in notices:
        print(notice, file=sys.stderr)
    return Tracker(list(sinks)), sinks[0].record


def _check_plan(out: Path, trials: list[Trial], *, resume: bool) -> None:
    plan = out / PLAN_FILE
    if not resume:
        if plan.exists():
            raise ConfigError(f"{out} already holds a sweep; pass resume (--resume) to continue it or choose another output folder")
        return
    if not plan.is_file():
        raise ConfigError(f"{out} holds no sweep to resume (no {PLAN_FILE})")
    try:
        saved = json.loads(plan.read_text(encoding="utf-8"))["trials"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"unreadable sweep plan ({exc})", file=str(plan)) from None
    planned = [json.loads(json.dumps(t.to_dict())) for t in trials]
    if planned != saved:
        changed = next((p["name"] for p, s in zip(planned, saved, strict=False) if p != s), None) or "the number of trials"
        raise ConfigError(f"the sweep changed since it started in {out} ({changed} differs); resume it with the same sweep "
                          "file, or choose another output folder")


def _is_done(run_dir: Path) -> bool:
    return (run_dir / SUMMARY_FILE).is_file() or (run_dir / STOPPED_FILE).is_file()


def _run_on_tune(trials: list[Trial], cfg: SweepConfig, out: Path, group: dict[str, Any]) -> dict[str, str]:
    """Run ``trials`` as Ray Tune trials, their tracker runs grouped by ``group`` (see :func:`run_trial`);
    returns the failed trials' one-line errors by name."""
    try:
        import ray
        from ray import tune
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    if cfg.address is None:
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=not cfg.quiet, configure_logging=False)
    else:
        try:
            ray.init(address=cfg.address, log_to_driver=not cfg.quiet, configure_logging=False)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            hint = "" if os.environ.get("RAY_AUTH_MODE") else (
                "; a cluster started by `ray start` with token authentication (the default since Ray 2.59) needs "
                "RAY_AUTH_MODE=token here too")
            raise ConfigError(f"cannot attach to the Ray cluster at {cfg.address!r}: {' '.join(str(exc).split())}{hint}") from None
    # A trial that fails on bad input reports no score; Tune would take that for a bug in the trainable.
    strict_checking = os.environ.get("TUNE_DISABLE_STRICT_METRIC_CHECKING")
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    try:
        scheduler = None
        if cfg.scheduler.kind == "asha":
            scheduler = _asha(cfg.scheduler, {t.name: t.run_dir for t in trials})
        by_name = {t.name: t for t in trials}
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(run_trial, trials={t.name: t.to_dict() for t in trials}, resume=cfg.resume,
                                                     group=group),
                                {"cpu": cfg.cpus_per_trial}),
            param_space={"trial": tune.grid_search(list(by_name))},
            tune_config=tune.TuneConfig(metric=SCORE_METRIC, mode="max", scheduler=scheduler, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name="tune", storage_path=str(out / RAY_SUBDIR), verbose=0 if cfg.quiet else 1,
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        # Tune prints its experiment table on stdout even when silent; stdout belongs to --json.
        with contextlib.redirect_stdout(sys.stderr) if cfg.quiet else contextlib.nullcontext():
            grid = tuner.fit()
        errors: dict[str, str] = {}
        for result in grid:
            name = result.config["trial"]
            error_file = by_name[name].run_dir / ERROR_FILE
            if error_file.is_file():
                errors[name] = error_file.read_text(encoding="utf-8").strip()
            elif result.error is not None:
                lines = [line for line in str(result.error).splitlines() if line.strip()]
                errors[name] = lines[-1].strip() if lines else type(result.error).__name__
        return errors
    finally:
        ray.shutdown()
        if strict_checking is None:
            del os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"]
        else:
            os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = strict_checking


def _trial_name(tune_trial: Any) -> str:
    """Tune's own folder for a trial is named like the trial's run directory."""
    return str(tune_trial.config["trial"])


def _asha(scheduler: SchedulerConfig, run_dirs: dict[str, Path]) -> Any:
    """ASHA on the evaluation score that marks each trial it stops (``stopped.json``), so a resumed
    sweep keeps the decision. Its horizon lies beyond any trial's evaluations: a trial that reaches
    its last evaluation is never stopped before it writes its summary."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class MarkingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP:
                atomic_write_text(run_dirs[trial.config["trial"]] / STOPPED_FILE, json.dumps({
                    "scheduler": "asha", EVALUATIONS_METRIC: result.get(EVALUATIONS_METRIC), SCORE_METRIC: result.get(SCORE_METRIC),
                }) + "\n")
            return decision

    return MarkingASHA(time_attr=EVALUATIONS_METRIC, max_t=10**6, grace_period=scheduler.grace_period,
                       reduction_factor=scheduler.reduction_factor)


class TuneScoreSink:
    """A metric sink that reports each evaluation's mean return to Ray Tune (inside a trial), numbered
    among the trial's evaluations (ASHA's time axis): over both stages of ``run`` in order, and on
    after the evaluations a resumed stage had recorded before its checkpoint."""

    def __init__(self, out_dir: Path, *, earlier: int = 0) -> None:
        """``earlier``: evaluations of the trial's earlier stages; the stage's own ``metrics.csv`` (cut
        back to its checkpoint when resumed, empty when new) holds those it had made already."""
        recorded = read_metrics_csv(out_dir / METRICS_FILE).get(EVAL_RETURN_KEY)
        self.evaluations = earlier + (0 if recorded is None else len(recorded[0]))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        if EVAL_RETURN_KEY in metrics:
            from ray import tune

            self.evaluations += 1
            tune.report({SCORE_METRIC: float(metrics[EVAL_RETURN_KEY]), EVALUATIONS_METRIC: self.evaluations, "step": int(step)})

    def close(self) -> None:
        pass


def run_trial(
    param: dict[str, Any], trials: dict[str, dict[str, Any]], resume: bool = False, group: Mapping[str, Any] | None = None,
) -> None:
    """The Ray Tune trainable: the trial named ``param["trial"]`` (one of ``trials``, as :meth:`Trial.to_dict`)
    through its library entry point, evaluations reported to Tune.

    With ``resume`` (a resumed sweep) a trial whose run saved a checkpoint continues from it through
    the run's own ``resume`` (a ``run`` trial resumes stage by stage); otherwise, and for a trial that
    saved nothing, the run starts afresh. Bad input (a :class:`DimeOfflineError`) ends the trial with
    its one line in ``error.txt``; any other exception is a bug and reaches Tune with its traceback.
    ``group`` (``sweep``: the sweep's name, ``mlflow_parent``: its MLflow run or None) groups the
    trial's tracker runs (:class:`~dime_offline.trackers.TrackerGroup`); None leaves them ungrouped.
    """
    trial = Trial(**trials[param["trial"]])
    cls, entry_point = entry_points()[trial.command]
    config = trial.config
    if resume and (trial.command == "run" or holds_checkpoint(trial.run_dir)):
        config = {**config, "resume": True, "overwrite": False}
    trial.run_dir.mkdir(parents=True, exist_ok=True)
    (trial.run_dir / ERROR_FILE).unlink(missing_ok=True)
    atomic_write_text(trial.run_dir / TRIAL_FILE, json.dumps(trial.to_dict(), indent=2, sort_keys=True) + "\n")
    stages: list[TuneScoreSink] = []

    def score_sink(out_dir: Path) -> TuneScoreSink:
        stages.append(TuneScoreSink(out_dir, earlier=stages[-1].evaluations if stages else 0))
        return stages[-1]

    grouped = (contextlib.nullcontext() if group is None
               else tracker_group(TrackerGroup(trial=trial.name, setting=trial.setting, seed=trial.seed, **group)))
    try:
        with extra_sinks(score_sink), grouped:
            entry_point(from_dict(cls, config))
    except DimeOfflineError as err:
        atomic_write_text(trial.run_dir / ERROR_FILE, err.one_line() + "\n")
