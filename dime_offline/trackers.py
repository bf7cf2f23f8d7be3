"""Optional experiment trackers: MLflow and Weights & Biases sinks next to the CSV and TensorBoard.

A run config's ``trackers`` field (``--set 'trackers=[mlflow, wandb]'``) names the trackers a run
also logs to; none by default. Each keeps a run record of its own, one per run directory (each
stage of ``run`` is one):

* at the start, the run's resolved config as parameters (flattened to dotted keys for MLflow,
  nested for W&B);
* every metric at its step (W&B: against the ``step`` axis, so a resumed run may log a step again);
* at the end, the paths of the summary and the final checkpoint (MLflow tags, W&B summary), and the
  run marked finished; a run that stops on an error is marked failed, one stopped by Ctrl-C/SIGTERM
  killed (MLflow) or exit code 130 (W&B).

The runs of a sweep's trials are grouped (:class:`TrackerGroup`, set by the sweep around each trial):
MLflow nests them under the sweep's own run, W&B puts them in a group named after the sweep; both
tag each with its setting and seed.

The tracker run ids are kept in the run directory's ``trackers.json``, so ``--resume`` continues the
same MLflow run and W&B run (a resumed session re-logs the metrics logged after the checkpoint it
continues from, which CSV and TensorBoard drop; MLflow and W&B keep both).

Where they log is their own settings: MLflow's ``MLFLOW_TRACKING_URI`` (a server, or ``sqlite:///``
with the full ``mlflow`` package) and ``MLFLOW_EXPERIMENT_NAME``; W&B's ``WANDB_PROJECT``,
``WANDB_ENTITY``, ``WANDB_MODE=offline``, ``WANDB_DIR`` (default: the run directory). The packages are
imported only when a run names them; a missing one stops the run before it writes anything, with
one line naming the extra to install.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from dime_offline.config import dotted_items, setting_text, setting_value_text
from dime_offline.errors import RunInterruptedError, TrackerError
from dime_offline.io import atomic_write_text
from dime_offline.tracking import NAMESPACES, RunRecordSink

TrackerName = Literal["mlflow", "wandb"]
"""An experiment tracker a run can log to (the values of a run config's ``trackers``)."""
TRACKER_LABELS: dict[str, str] = {"mlflow": "MLflow", "wandb": "Weights & Biases"}
TRACKER_RUNS_FILE = "trackers.json"
"""The run directory's tracker run ids (``{"mlflow": {...}, "wandb": {...}}``), which a resume continues."""
WANDB_SUBDIR = "wandb"
"""W&B's own folder in the run directory (unless ``WANDB_DIR`` is set)."""
DEFAULT_EXPERIMENT = "dime-offline"
"""MLflow experiment and W&B project when ``MLFLOW_EXPERIMENT_NAME`` / ``WANDB_PROJECT`` are unset."""
WANDB_STEP_KEY = "step"
"""The W&B x axis every metric is logged against."""
INTERRUPTED_EXIT_CODE = RunInterruptedError.exit_code
MLFLOW_PARENT_TAG = "mlflow.parentRunId"
"""The tag by which MLflow shows a run nested under another (``mlflow.utils.mlflow_tags``)."""
WANDB_TAG_LIMIT = 64
"""W&B refuses longer tags."""


@dataclass(frozen=True)
class TrackerGroup:
    """The sweep a run is a trial of, as its tracker runs record it (docs/experiments.md)."""

    sweep: str
    """The sweep's name: the W&B group and the name of the MLflow run the trial's runs nest under."""
    trial: str
    """The trial's name (``s000-seed0``)."""
    setting: Mapping[str, Any]
    """The swept fields' values of the trial (dotted field -> value)."""
    seed: int
    """The trial's seed."""
    mlflow_parent: Mapping[str, str] | None = None
    """The sweep's MLflow run (``run_id``, ``tracking_uri``, ``experiment_id``) that the trial's MLflow
    runs nest under, in its experiment and at its tracking URI; None when the sweep has none."""

    @property
    def setting_label(self) -> str:
        """``field=value, ...`` of the swept fields; "base" for a sweep over seeds only."""
        return setting_text(self.setting.items()) or "base"

    def mlflow_tags(self) -> dict[str, str]:
        tags = {"dime_offline.sweep": self.sweep, "dime_offline.trial": self.trial,
                "dime_offline.setting": self.setting_label, "dime_offline.seed": str(self.seed)}
        if self.mlflow_parent is not None:
            tags[MLFLOW_PARENT_TAG] = self.mlflow_parent["run_id"]
        return tags

    def wandb_tags(self) -> list[str]:
        """``field=value`` for each swept field and the seed; a path value is shortened to its file name
        and a tag cut at W&B's limit (the run's config keeps every full value)."""
        def short(value: Any) -> str:
            text = setting_value_text(value)
            return Path(text).name if isinstance(value, str) and os.sep in text else text

        return [f"{key}={short(value)}"[:WANDB_TAG_LIMIT] for key, value in [*self.setting.items(), ("seed", self.seed)]]


_GROUP: contextvars.ContextVar[TrackerGroup | None] = contextvars.ContextVar("tracker_group", default=None)


@contextlib.contextmanager
def tracker_group(group: TrackerGroup) -> Iterator[None]:
    """Every tracker run opened inside this block records ``group``: how a sweep groups its trials'
    runs without the training stages knowing about it."""
    token = _GROUP.set(group)
    try:
        yield
    finally:
        _GROUP.reset(token)


def tracker_hint(name: str) -> str:
    """The one line for a tracker whose package is not installed."""
    return (f"{TRACKER_LABELS[name]} is not installed (field 'trackers' names {name}); "
            f"install the extra with: pip install 'dime-offline[{name}]'")


def check_trackers(trackers: Iterable[str]) -> None:
    """Import each named tracker's package now, so that a missing one stops the run with one line
    naming its extra before anything is written."""
    for name in dict.fromkeys(trackers):
        try:
            if name == "mlflow":
                import mlflow.tracking  # noqa: F401
            else:
                import wandb  # noqa: F401
        except ImportError:
            raise TrackerError(tracker_hint(name)) from None


def open_tracker_sinks(
    out: Path, trackers: Sequence[str], *, run_config: Mapping[str, Any], stage: str, resume: bool, run_name: str | None = None,
) -> tuple[list[RunRecordSink], list[str]]:
    """A sink for each tracker, logging to a new tracker run (named ``run_name``, by default
    ``<parent>/<folder>`` of ``out``), or continuing the one recorded in ``out/trackers.json`` when
    ``resume``; the ids are saved there. Returns the sinks and one-line notices (a recorded run that
    could not be continued)."""
    saved = _read_tracker_runs(out) if resume else {}
    sinks: list[RunRecordSink] = []
    notices: list[str] = []
    run_name = run_name or f"{out.resolve().parent.name}/{out.resolve().name}"
    try:
        for tracker in dict.fromkeys(trackers):
            kind = MLflowSink if tracker == "mlflow" else WandbSink
            sinks.append(kind(out, run_name=run_name, stage=stage, run_config=run_config, saved=saved.get(tracker), notices=notices))
        atomic_write_text(out / TRACKER_RUNS_FILE, json.dumps({**saved, **{s.name: s.record for s in sinks}}, indent=2,
                                                               sort_keys=True) + "\n")
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks, notices


def _read_tracker_runs(out: Path) -> dict[str, dict[str, str]]:
    path = out / TRACKER_RUNS_FILE
    if not path.is_file():
        return {}
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(runs, dict) or not all(isinstance(run, dict) and isinstance(run.get("run_id"), str) for run in runs.values()):
            raise ValueError('expected {"<tracker>": {"run_id": ...}, ...}')
    except (OSError, ValueError) as exc:
        raise TrackerError(f"unreadable tracker run ids ({exc}); delete the file to log the rest of the run to new tracker runs",
                           file=str(path)) from None
    return runs


def _ending_status() -> Literal["interrupted", "failed"]:
    """How an unfinished tracker run ends: called while the exception that stops the run propagates."""
    error = sys.exc_info()[1]
    return "interrupted" if isinstance(error, (KeyboardInterrupt, RunInterruptedError)) else "failed"


class MLflowSink:
    """Logs to an MLflow run through ``MlflowClient`` (no global active run, so runs of one process
    never mix): parameters when the run is created, metrics in batches, outputs as tags. A run
    opened inside :func:`tracker_group` is tagged with the trial and nested under the sweep's run."""

    name = "mlflow"
    MAX_BATCH = 100
    """Entries per ``log_batch`` call (MLflow's limit for parameters; metrics allow 1000)."""

    def __init__(
        self, out: Path, *, run_name: str, stage: str, run_config: Mapping[str, Any], saved: Mapping[str, str] | None,
        notices: list[str],
    ) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._error_type = MlflowException
        self._finished = False
        with self._errors("cannot open a run"):
            if saved is not None:
                self._client = MlflowClient(tracking_uri=saved.get("tracking_uri"))
                try:
                    self.experiment_id = self._client.get_run(saved["run_id"]).info.experiment_id
                    self._client.update_run(saved["run_id"], status="RUNNING")
                    self.run_id = saved["run_id"]
                    return
                except MlflowException as exc:
                    notices.append(f"MLflow run {saved['run_id']} at {self._client.tracking_uri} cannot be continued "
                                   f"({' '.join(exc.message.split())}); logging to a new run")
            group = _GROUP.get()
            parent = None if group is None else group.mlflow_parent
            self._client = MlflowClient(tracking_uri=None if parent is None else parent["tracking_uri"])
            self.experiment_id = (parent["experiment_id"] if parent is not None
                                  else self._experiment_id(os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT))
            tags = {"dime_offline.stage": stage, "dime_offline.run_dir": str(out.resolve()), **({} if group is None else group.mlflow_tags())}
            self.run_id = self._client.create_run(self.experiment_id, run_name=run_name, tags=tags).info.run_id
            params = [Param(key, setting_value_text(value)) for key, value in dotted_items(run_config)]
            for start in range(0, len(params), self.MAX_BATCH):
                self._client.log_batch(self.run_id, params=params[start:start + self.MAX_BATCH])

    def _experiment_id(self, name: str) -> str:
        experiment = self._client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self._client.create_experiment(name)
        except self._error_type:  # another run (a parallel sweep trial) created it meanwhile
            experiment = self._client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    @property
    def record(self) -> dict[str, str]:
        return {"run_id": self.run_id, "tracking_uri": self._client.tracking_uri, "experiment_id": self.experiment_id}

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """MLflow's errors within this block become one-line :class:`TrackerError`\\ s."""
        try:
            yield
        except self._error_type as error:
            client = getattr(self, "_client", None)
            uri = client.tracking_uri if client is not None else os.environ.get("MLFLOW_TRACKING_URI", "default tracking URI")
            raise TrackerError(f"MLflow ({uri}) {doing}: {error.message}") from None

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        entries = [Metric(key, float(value), now, int(step)) for key, value in metrics.items()]
        with self._errors(f"refused the metrics of step {step}"):
            for start in range(0, len(entries), self.MAX_BATCH):
                self._client.log_batch(self.run_id, metrics=entries[start:start + self.MAX_BATCH])

    def finish(self, outputs: Mapping[str, str]) -> None:
        with self._errors("could not end the run"):
            for key, path in outputs.items():
                self._client.set_tag(self.run_id, f"dime_offline.{key}", path)
            self._client.set_terminated(self.run_id, "FINISHED")
        self._finished = True

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            status = "KILLED" if _ending_status() == "interrupted" else "FAILED"
            # Best effort: the error that stops the run is the one to report, not a tracker's on top.
            with contextlib.suppress(self._error_type):
                self._client.set_terminated(self.run_id, status)


class WandbSink:
    """Logs to a W&B run (``wandb.init`` with the recorded id and ``resume="allow"`` when continuing);
    every metric against the ``step`` axis, console capture off (stdout belongs to ``--json``). A run
    opened inside :func:`tracker_group` joins the sweep's group, tagged with its setting and seed."""

    name = "wandb"

    def __init__(
        self, out: Path, *, run_name: str, stage: str, run_config: Mapping[str, Any], saved: Mapping[str, str] | None,
        notices: list[str],
    ) -> None:
        del notices  # W&B continues or creates the run with the recorded id
        import wandb

        self._finished = False
        project = (saved or {}).get("project") or os.environ.get("WANDB_PROJECT") or DEFAULT_EXPERIMENT
        group = _GROUP.get()
        try:
            self._run = wandb.init(
                project=project, id=saved["run_id"] if saved else None, resume="allow" if saved else None,
                name=run_name, job_type=stage, config=None if saved else dict(run_config),
                group=None if group is None else group.sweep, tags=None if group is None else group.wandb_tags(),
                dir=os.environ.get("WANDB_DIR") or str(out), settings=wandb.Settings(console="off"),
            )
        except wandb.errors.Error as exc:
            raise TrackerError(f"Weights & Biases cannot open a run (project {project}): {exc}") from None
        self._run.define_metric(WANDB_STEP_KEY)
        for namespace in NAMESPACES:
            self._run.define_metric(f"{namespace}/*", step_metric=WANDB_STEP_KEY)
        self.project = project

    @property
    def record(self) -> dict[str, str]:
        return {"run_id": self._run.id, "project": self.project}

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        self._run.log({**{key: float(value) for key, value in metrics.items()}, WANDB_STEP_KEY: int(step)})

    def finish(self, outputs: Mapping[str, str]) -> None:
        self._run.summary.update(dict(outputs))
        self._run.finish(exit_code=0)
        self._finished = True

    def close(self) -> None:
        if not self._finished:
            self._finished = True
            self._run.finish(exit_code=INTERRUPTED_EXIT_CODE if _ending_status() == "interrupted" else 1)
