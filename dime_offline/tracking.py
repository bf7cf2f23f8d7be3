"""Metric sinks, the progress display and the learning-curve plot.

Metric keys are namespaced ``<namespace>/<name>`` with the namespace one of :data:`NAMESPACES`:
``train/`` (agent updates and training episodes), ``eval/`` (evaluation rollouts), ``offline/``
(the offline-pretraining stage), ``online/`` (online-phase bookkeeping such as the offline
fraction in the batch). Every run writes a CSV; TensorBoard is used when it is installed.

The CSV is in long ("tidy") form, one row per (step, key): keys may appear at different cadences
(the actor updates every third critic step, evaluations every N env steps) without empty cells
or a header that has to change mid-run. ``pandas.read_csv(...).pivot_table(index="step",
columns="key", values="value")`` gives the wide table.
"""

from __future__ import annotations

import contextlib
import contextvars
import csv
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import numpy as np

from dime_offline.io import atomic_path, naming_path

NAMESPACES = ("train", "eval", "offline", "online")
"""Allowed first components of a metric key."""

CSV_HEADER = ("step", "wall_seconds", "key", "value")
METRICS_FILE = "metrics.csv"
"""The metrics CSV of a run directory."""
TENSORBOARD_SUBDIR = "tb"
"""The TensorBoard event folder of a run directory."""
TENSORBOARD_HINT = (
    "TensorBoard is not installed, so metrics go to the CSV only; "
    "install the extra with: pip install 'dime-offline[tensorboard]'"
)


class MetricSink(Protocol):
    """Receives namespaced scalar metrics at integer steps."""

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` (key -> value) at ``step``."""
        ...

    def close(self) -> None:
        """Flush and release resources."""
        ...


@runtime_checkable
class RunRecordSink(MetricSink, Protocol):
    """A sink that keeps a run record of its own (an MLflow or W&B run), which the run ends
    explicitly: :meth:`finish` when it completes; :meth:`close` alone marks it failed or interrupted."""

    name: str
    """The tracker's name ("mlflow", "wandb")."""

    @property
    def record(self) -> dict[str, str]:
        """What identifies the tracker run (kept in the run directory for a resume)."""
        ...

    def finish(self, outputs: Mapping[str, str]) -> None:
        """Record the run's outputs (name -> path) and end the tracker run as finished."""
        ...


@dataclass(frozen=True)
class MetricsPosition:
    """How far a run's metrics had been written when a checkpoint was taken (what a resume continues from)."""

    step: int
    """The checkpoint's step: TensorBoard drops the events written after it."""
    csv_bytes: int
    """Length of ``metrics.csv`` then: the rows written after the checkpoint are cut off."""
    wall_seconds: float
    """The CSV's wall clock then, which the resumed rows continue."""


class CSVSink:
    """Appends rows ``step, wall_seconds, key, value`` to a CSV file, flushing after each write.

    With ``resume_at`` the file is kept up to that position (later rows are cut) and appended to.
    A write that fails (a full disk) raises an ``OSError`` naming the file.
    """

    def __init__(self, path: str | Path, *, resume_at: MetricsPosition | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start = time.monotonic() - (0.0 if resume_at is None else resume_at.wall_seconds)
        with naming_path(self.path):
            self._file: IO[str] = self.path.open("w" if resume_at is None else "r+", newline="")
            self._writer = csv.writer(self._file)
            try:
                if resume_at is None:
                    self._writer.writerow(CSV_HEADER)
                else:
                    self._file.truncate(resume_at.csv_bytes)
                    self._file.seek(resume_at.csv_bytes)
                self._file.flush()
            except OSError:
                with contextlib.suppress(OSError):  # the header that did not fit fails again here
                    self._file.close()
                raise

    def position(self, step: int) -> MetricsPosition:
        """Where the file stands now, recorded by a checkpoint at ``step``."""
        return MetricsPosition(step, self._file.tell(), round(time.monotonic() - self._start, 3))

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        elapsed = round(time.monotonic() - self._start, 3)
        with naming_path(self.path):
            for key in sorted(metrics):
                self._writer.writerow((int(step), elapsed, key, repr(float(metrics[key]))))
            self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            with naming_path(self.path):
                self._file.close()


class TensorBoardSink:
    """Writes scalars with ``torch.utils.tensorboard`` (needs the ``tensorboard`` package)."""

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        """``purge_step``: a resumed run's first step; TensorBoard hides events of earlier sessions from it on."""
        from torch.utils.tensorboard import SummaryWriter  # lazy: optional extra

        self._writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, step: int, metrics: Mapping[str, float]) -> None:
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), global_step=int(step))

    def close(self) -> None:
        self._writer.close()


SinkFactory = Callable[[Path], MetricSink]
"""Makes a sink for a run directory."""
_EXTRA_SINKS: contextvars.ContextVar[tuple[SinkFactory, ...]] = contextvars.ContextVar("extra_sinks", default=())


@contextlib.contextmanager
def extra_sinks(*factories: SinkFactory) -> Iterator[None]:
    """Every run started inside this block also writes to a sink from each factory (called with the
    run directory): how a sweep trial reports its evaluations to Ray Tune without the training
    stages knowing about it."""
    token = _EXTRA_SINKS.set(_EXTRA_SINKS.get() + factories)
    try:
        yield
    finally:
        _EXTRA_SINKS.reset(token)


def open_sinks(
    out_dir: str | Path,
    *,
    tensorboard: bool = True,
    resume_at: MetricsPosition | None = None,
    trackers: Sequence[str] = (),
    run_config: Mapping[str, Any] | None = None,
    stage: str = "",
) -> tuple[list[MetricSink], list[str]]:
    """The sinks for a run directory: those of ``trackers`` (MLflow, W&B), ``metrics.csv`` always,
    ``tb/`` when requested and installed, and those of the enclosing :func:`extra_sinks` blocks.

    Returns the sinks and a list of one-line notices for the user (the TensorBoard install hint, a
    tracker run that could not be continued). ``resume_at`` continues a run's metrics from a
    checkpoint (see :class:`CSVSink`, :class:`TensorBoardSink`) and its tracker runs; otherwise the
    trackers start new runs with ``run_config`` (the resolved config) as parameters, tagged with
    ``stage``. The trackers open first: one that refuses (a one-line :class:`TrackerError`) stops
    the run before its metrics are written.
    """
    out = Path(out_dir)
    sinks: list[MetricSink] = []
    notices: list[str] = []
    if trackers:
        from dime_offline.trackers import open_tracker_sinks  # it builds on this module

        record_sinks, notices = open_tracker_sinks(out, trackers, run_config=run_config or {}, stage=stage,
                                                   resume=resume_at is not None)
        sinks.extend(record_sinks)
    try:
        sinks.append(CSVSink(out / METRICS_FILE, resume_at=resume_at))
        if tensorboard:
            try:
                purge_step = None if resume_at is None else resume_at.step + 1
                sinks.append(TensorBoardSink(out / TENSORBOARD_SUBDIR, purge_step=purge_step))
            except ImportError:
                notices.append(TENSORBOARD_HINT)
        sinks.extend(factory(out) for factory in _EXTRA_SINKS.get())
    except BaseException:
        Tracker(sinks).close()
        raise
    return sinks, notices


class Tracker:
    """Fans namespaced metrics out to every sink; checks the namespace of each key."""

    def __init__(self, sinks: list[MetricSink]) -> None:
        self.sinks = sinks

    def position(self, step: int) -> MetricsPosition | None:
        """The metrics CSV's position for a checkpoint at ``step`` (None without a CSV sink)."""
        csv_sinks = [sink for sink in self.sinks if isinstance(sink, CSVSink)]
        return csv_sinks[0].position(step) if csv_sinks else None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Record ``metrics`` at ``step``; keys must be ``<namespace>/<name>``."""
        for key in metrics:
            namespace, sep, name = key.partition("/")
            if not sep or not name or namespace not in NAMESPACES:
                raise ValueError(f"metric key {key!r} must look like '<{'|'.join(NAMESPACES)}>/<name>'")
        for sink in self.sinks:
            sink.write(step, metrics)

    def finish(self, outputs: Mapping[str, str]) -> None:
        """The run completed: its tracker records (:class:`RunRecordSink`) get ``outputs`` (name ->
        path) and end as finished; then every sink closes."""
        for sink in self.sinks:
            if isinstance(sink, RunRecordSink):
                sink.finish(outputs)
        self.close()

    def close(self) -> None:
        """Close every sink (a tracker record not finished ends as failed or interrupted); again: nothing."""
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            sink.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics_csv(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read a metrics CSV back as ``key -> (steps (K,) int64, values (K,) float64)``."""
    columns: dict[str, tuple[list[int], list[float]]] = {}
    with Path(path).open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if tuple(header or ()) != CSV_HEADER:
            raise ValueError(f"{path}: not a dime-offline metrics CSV (header {header})")
        for step, _, key, value in reader:
            steps, values = columns.setdefault(key, ([], []))
            steps.append(int(step))
            values.append(float(value))
    return {k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for k, (s, v) in columns.items()}


class ProgressDisplay:
    """A rich progress bar on stderr with a status line under it: steps, elapsed and remaining
    time on the bar; updates/s, last evaluation return, alpha and the entropy bound below.

    Disabled (every method a no-op) when ``enabled`` is False (``--json``) or stderr is not a
    terminal, so logs and pipes stay clean.
    """

    def __init__(self, total: int, *, description: str, enabled: bool = True, unit: str = "env steps") -> None:
        from rich.console import Console

        console = Console(stderr=True)
        self.enabled = enabled and console.is_terminal
        self._progress: Any = None
        self._task: Any = None
        if not self.enabled:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.text import Text

        class ProgressWithStatus(Progress):
            """The task table, then one status line (kept off the bar so narrow terminals fit both)."""

            status = ""

            def get_renderables(self) -> Any:
                yield self.make_tasks_table(self.tasks)
                if self.status:
                    yield Text(self.status, no_wrap=True, overflow="ellipsis")

        self._progress = ProgressWithStatus(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn(unit),
            TimeElapsedColumn(),
            TimeRemainingColumn(compact=True),
            console=console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def update(
        self,
        completed: int,
        *,
        updates_per_second: float | None = None,
        eval_return: float | None = None,
        alpha: float | None = None,
        entropy_bound: float | None = None,
    ) -> None:
        """Move the bar to ``completed`` steps and refresh the status fields that are known."""
        if not self.enabled:
            return
        parts = []
        if updates_per_second is not None:
            parts.append(f"{updates_per_second:.1f} updates/s")
        if eval_return is not None:
            parts.append(f"last eval return {eval_return:.1f}")
        if alpha is not None and math.isfinite(alpha):
            parts.append(f"alpha {alpha:.3g}")
        if entropy_bound is not None and math.isfinite(entropy_bound):
            parts.append(f"entropy bound {entropy_bound:.2f}")
        self._progress.status = "  ".join(parts)
        self._progress.update(self._task, completed=completed)

    def notice(self, message: str) -> None:
        """Print one line on stderr above the bar (always shown, even when the bar is off)."""
        if self.enabled:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self.enabled and self._progress is not None:
            self._progress.stop()
            self.enabled = False


def plot_learning_curve(
    metrics_csv: str | Path,
    png_path: str | Path,
    *,
    title: str,
    x_label: str = "env steps",
) -> Path | None:
    """Draw evaluation return (mean ± std) and training-episode returns against steps.

    Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch). Returns the PNG
    path, or None when the CSV holds no return to plot.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = read_metrics_csv(metrics_csv)
    eval_mean = metrics.get("eval/return_mean")
    train_return = metrics.get("train/episode_return")
    if eval_mean is None and train_return is None:
        return None
    figure = Figure(figsize=(7.0, 4.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    if train_return is not None:
        axes.plot(train_return[0], train_return[1], color="0.7", linewidth=0.8, label="training episodes")
    if eval_mean is not None:
        steps, mean = eval_mean
        axes.plot(steps, mean, marker="o", markersize=3, color="C0", label="evaluation (mean)")
        eval_std = metrics.get("eval/return_std")
        if eval_std is not None and len(eval_std[1]) == len(mean):
            axes.fill_between(steps, mean - eval_std[1], mean + eval_std[1], color="C0", alpha=0.2, label="± std")
    axes.set_xlabel(x_label)
    axes.set_ylabel("return")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    return png_path


BOUNDARY_PANELS: tuple[tuple[str, tuple[tuple[str, str | None, str | None], ...]], ...] = (
    ("Q on data vs return-to-go", (("Q(s, a_data)", "train/critic/q_data", "train/critic/q_data"),
                                   ("Monte-Carlo return", "train/critic/mc_return", "train/critic/mc_return"))),
    ("conservative gap", (("gap", "train/conservative/gap", "train/conservative/gap"),)),
    ("temperature alpha", (("alpha", "train/alpha/value", "train/alpha/value"),)),
    ("entropy bound", (("entropy bound", "train/actor/entropy_bound", "train/actor/entropy_bound"),)),
    ("regulariser weights", (("conservative penalty", "offline/conservative_weight", "online/conservative_weight"),
                             ("behaviour term", "offline/behaviour_weight", "online/behaviour_weight"),
                             ("penalty calibrated (1/0)", "offline/calibration", "online/calibration"))),
    ("logged rows' share of a batch", (("offline share", None, "online/offline_fraction"),)),
)
"""The boundary diagnostics and the handover schedule :func:`plot_offline_to_online` draws under the
returns: (title, ((label, pretraining's metric, fine-tuning's metric), ...)); None: the stage has no
such series (pretraining's batches are all logged rows)."""


def boundary_series(
    offline: dict[str, tuple[np.ndarray, np.ndarray]], online: dict[str, tuple[np.ndarray, np.ndarray]], boundary: int
) -> dict[str, list[tuple[str, str, np.ndarray, np.ndarray]]]:
    """Per panel of :data:`BOUNDARY_PANELS`, the series found in the two stages' metrics as (label,
    stage, steps, values), online steps shifted past ``boundary`` (the last offline step)."""
    panels: dict[str, list[tuple[str, str, np.ndarray, np.ndarray]]] = {}
    for title, series in BOUNDARY_PANELS:
        drawn = panels.setdefault(title, [])
        for label, offline_key, online_key in series:
            for stage, metrics, key, offset in (("offline", offline, offline_key, 0), ("online", online, online_key, boundary)):
                if key is not None and key in metrics:
                    steps, values = metrics[key]
                    drawn.append((label, stage, steps + offset, values))
    return panels


def best_logged_line(online: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[float, str] | None:
    """(return, legend label) of the best comparable logged episode that fine-tuning compared the boundary
    policy with (``online/logs_best_return``, ``handover.surpassed_logs``), or None when it made no comparison."""
    if "online/logs_best_return" not in online:
        return None
    above = online.get("online/boundary_above_logs")
    dropped = above is not None and bool(above[1][-1])
    label = "best logged episode" + (": the boundary beat it, regularisers off online" if dropped else "")
    return float(online["online/logs_best_return"][1][-1]), label


def plot_offline_to_online(
    pretrain_csv: str | Path,
    finetune_csv: str | Path,
    png_path: str | Path,
    *,
    title: str,
    data_return: float | None = None,
) -> Path | None:
    """Offline and online evaluations on one axis with the boundary marked, and the boundary diagnostics.

    The x axis runs over the offline gradient steps, then over the online env steps after them (a
    dashed line marks the switch). The online curve starts at the last offline evaluation (the
    boundary policy); with a champion (``eval/selection_learner`` logged) the learner's returns on
    its selection episodes are drawn beside it. ``data_return``: the logged behaviour's mean episode return, drawn as a
    dotted line; the best logged episode fine-tuning compared the boundary policy with, when it did
    (:func:`best_logged_line`), dash-dotted. Below: the panels of :data:`BOUNDARY_PANELS` over the same axis (solid: pretraining,
    dashed: fine-tuning). Returns the PNG path, or None when neither stage evaluated.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    offline, online = read_metrics_csv(pretrain_csv), read_metrics_csv(finetune_csv)
    if "eval/return_mean" not in offline and "eval/return_mean" not in online:
        return None
    boundary = int(max((steps.max() for steps, _ in offline.values() if steps.size), default=0))
    columns = 3
    rows = -(-len(BOUNDARY_PANELS) // columns)
    figure = Figure(figsize=(10.0, 5.0 + 2.6 * rows), dpi=110)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(1 + rows, columns, height_ratios=(1.8,) + (1.0,) * rows)
    axes = figure.add_subplot(grid[0, :])
    offline_eval = offline.get("eval/return_mean")
    if offline_eval is not None:
        axes.plot(*offline_eval, marker="o", markersize=4, color="C0", label="offline (pretraining)")
    online_eval = online.get("eval/return_mean")
    if online_eval is not None:
        steps, mean = online_eval[0] + boundary, online_eval[1]
        if offline_eval is not None:  # start the online curve at the boundary policy's score
            steps, mean = np.concatenate([[boundary], steps]), np.concatenate([[offline_eval[1][-1]], mean])
        learner = online.get("eval/selection_learner")
        axes.plot(steps, mean, marker="o", markersize=4, color="C1",
                  label="online (fine-tuning)" if learner is None else "online (deployed: the champion)")
        if learner is not None:  # with a champion, the learner's own course on its selection episodes
            axes.plot(learner[0] + boundary, learner[1], color="C1", linestyle=":", linewidth=1.2, marker="x", markersize=3,
                      label="learner (selection episodes)")
    if data_return is not None:
        axes.axhline(data_return, color="0.4", linestyle=":", label="logged data (mean episode return)")
    logs_best = best_logged_line(online)
    if logs_best is not None:
        axes.axhline(logs_best[0], color="0.4", linestyle="-.", label=logs_best[1])
    axes.axvline(boundary, color="k", linestyle="--", linewidth=1.0, label="offline -> online")
    axes.set_ylabel("evaluation return (mean)")
    axes.set_xlim(left=0)
    axes.set_xlabel("offline gradient steps, then online env steps")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    labels = {title: [label for label, _, _ in series] for title, series in BOUNDARY_PANELS}
    for number, (panel_title, drawn) in enumerate(boundary_series(offline, online, boundary).items()):
        ax = figure.add_subplot(grid[1 + number // columns, number % columns])
        named: set[str] = set()
        for label, stage, steps, values in drawn:
            ax.plot(steps, values, color=f"C{labels[panel_title].index(label)}", linewidth=1.0,
                    linestyle="-" if stage == "offline" else "--", label=None if label in named else label)
            named.add(label)
        ax.axvline(boundary, color="k", linestyle="--", linewidth=0.8)
        ax.set_xlim(*axes.get_xlim())
        ax.set_title(panel_title, fontsize="small")
        ax.tick_params(labelsize="x-small")
        ax.grid(alpha=0.3)
        if len(named) > 1:
            ax.legend(fontsize="x-small")
    figure.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    return png_path
