"""Compare runs over seeds: interquartile means and stratified-bootstrap confidence intervals.

:func:`compare` reads run directories (what ``pretrain``, ``finetune`` and ``run`` write, alone or as
the trials of a ``sweep``), groups them by training stage, dataset and *setting* (the config fields
that differ between the runs, the seed and where things are written aside), and summarises each
group's final evaluation score and learning curve over its runs.

The statistics follow Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical
Precipice" (NeurIPS 2021): the interquartile mean (IQM: the mean of the middle half of the scores,
robust to one outlying seed yet far less noisy than the median with a handful of runs) with a
percentile confidence interval from a *stratified* bootstrap, which resamples runs with replacement
within each dataset so every dataset keeps its number of runs. Scores are aggregated over datasets
only when they are normalised (``100 * (R - R_random) / (R_expert - R_random)``, the D4RL convention,
in every summary whose dataset or environment has reference returns); raw returns of different
tasks have no common scale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dime_offline.config import setting_text
from dime_offline.errors import ConfigError, DataError
from dime_offline.io import atomic_path, atomic_write_text
from dime_offline.tracking import METRICS_FILE, read_metrics_csv
from dime_offline.trainers.loop import (
    FINETUNE_CONFIG_FILE,
    PRETRAIN_CONFIG_FILE,
    SUMMARY_FILE,
)

TRIAL_FILE = "trial.json"
"""Written by ``sweep`` into each trial's run directory when the trial starts: a trial directory
without a summary is one that has not finished (interrupted, failed or stopped early)."""
STOPPED_FILE = "stopped.json"
"""Written by ``sweep`` into the run directory of a trial its scheduler stopped early."""
COMPARE_JSON = "compare.json"
COMPARE_FIGURE = "compare.png"
STAGES = ("pretrain", "finetune")
"""The training stages a run holds, in the order they run (``run`` holds both)."""
STAGE_UNITS = {"pretrain": "gradient steps", "finetune": "env steps"}
NOT_A_SETTING = frozenset({
    "seed", "out_dir", "overwrite", "quiet", "device", "torch_threads", "tensorboard", "trackers", "data", "env_id",
})
"""Config fields that never make two runs different settings: the seed (the runs of a setting differ
in it), where and how they ran, and the dataset (its own grouping axis)."""
UNSET = "(unset)"
"""A setting's value for a field its run's config does not have (another command, or an agent
override given to only some runs)."""
EVAL_RETURN_KEY = "eval/return_mean"
EVAL_NORMALIZED_KEY = "eval/normalized_score"


@dataclass(frozen=True)
class CompareConfig:
    """Everything ``dime-offline compare`` does."""

    paths: tuple[str, ...] = ()
    """Run directories, or folders holding them at any depth (a sweep's output)."""
    out_dir: str | None = "runs/compare"
    """Where ``compare.json`` and ``compare.png`` go (replaced if present); None writes nothing."""
    score: Literal["auto", "normalized", "return"] = "auto"
    """The score compared: "normalized" (D4RL-style, x100), "return" (mean evaluation return), or
    "auto": normalised when every run has a normalised score, else the return."""
    confidence: float = 0.95
    """Coverage of the confidence intervals."""
    bootstrap_samples: int = 2000
    """Stratified bootstrap resamples per interval."""
    seed: int = 0
    """Seed of the bootstrap's random generator (the intervals are reproducible)."""

    def __post_init__(self) -> None:
        if not self.paths:
            raise ConfigError("no run directories given (e.g. dime-offline compare runs/sweep)")
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError(f"field 'confidence': must lie strictly between 0 and 1, got {self.confidence}")
        if self.bootstrap_samples < 1:
            raise ConfigError(f"field 'bootstrap_samples': must be >= 1, got {self.bootstrap_samples}")


# ---------------------------------------------------------------------------------------------------
# Statistics


def interquartile_mean(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    """The mean of the middle half of ``scores`` along ``axis``: the floor(n/4) lowest and highest are
    dropped (``scipy.stats.trim_mean(scores, 0.25)``, as rliable computes the IQM)."""
    scores = np.sort(np.asarray(scores, dtype=np.float64), axis=axis)
    n = scores.shape[axis]
    cut = n // 4
    return np.take(scores, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def stratified_bootstrap_interval(
    tasks: Sequence[np.ndarray],
    *,
    statistic: Callable[[np.ndarray, int], np.ndarray] = interquartile_mean,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile confidence interval of ``statistic`` over the pooled runs of every task.

    ``tasks``: one (runs_t, ...) array per task (dataset); trailing axes (evaluation points of a
    learning curve) are carried along. Each resample draws ``runs_t`` runs with replacement within
    every task (stratified), pools them and applies ``statistic`` over the pooled runs (axis 1 of the
    (samples, runs, ...) stack). Returns (low, high), each of the trailing shape.
    """
    rng = np.random.default_rng(seed)
    resampled = [task[rng.integers(0, len(task), size=(samples, len(task)))] for task in map(np.asarray, tasks)]
    estimates = statistic(np.concatenate(resampled, axis=1), 1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(estimates, [tail, 1.0 - tail], axis=0)
    return low, high


@dataclass(frozen=True)
class Estimate:
    """IQM, mean and confidence interval of a score over runs (arrays: one entry per evaluation point)."""

    iqm: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, tasks: Sequence[np.ndarray], cfg: CompareConfig) -> Estimate:
        pooled = np.concatenate([np.asarray(t, dtype=np.float64) for t in tasks], axis=0)
        low, high = stratified_bootstrap_interval(
            tasks, samples=cfg.bootstrap_samples, confidence=cfg.confidence, seed=cfg.seed
        )
        return cls(interquartile_mean(pooled), pooled.mean(axis=0), low, high)

    def to_dict(self) -> dict[str, Any]:
        return {"iqm": self.iqm.tolist(), "mean": self.mean.tolist(), "ci": [self.low.tolist(), self.high.tolist()]}


# ---------------------------------------------------------------------------------------------------
# Reading runs


@dataclass(frozen=True)
class StageScores:
    """One stage of one run: its final evaluation and its evaluation curve, as returns and normalised."""

    final_return: float
    final_normalized: float | None
    steps: np.ndarray
    """(T,) steps of the evaluations (gradient steps offline, env steps online)."""
    curve_return: np.ndarray
    """(T,) mean evaluation return at each of ``steps``; the last is the final score."""
    curve_normalized: np.ndarray | None
    """(T,) normalised scores at each of ``steps``, None when the run has no references."""

    def final(self, score: str) -> float:
        return self.final_normalized if score == "normalized" else self.final_return  # type: ignore[return-value]

    def curve(self, score: str) -> np.ndarray:
        return self.curve_normalized if score == "normalized" else self.curve_return  # type: ignore[return-value]


@dataclass(frozen=True)
class RunRecord:
    """A finished run directory: what it ran (its config), on what and how it scored, per stage."""

    path: str
    command: str
    """"pretrain", "finetune" or "run" (both stages)."""
    config: dict[str, Any]
    """The run's resolved config, flattened to dotted keys (``agent.utd``, ``offline.conservative_weight``)."""
    dataset: str
    """The dataset's file name, or the environment id for an online run without data."""
    seed: int | None
    stages: dict[str, StageScores]


def find_runs(paths: Iterable[str]) -> tuple[list[RunRecord], list[str]]:
    """Every finished run under ``paths`` (each a run directory or a folder holding some), in path order,
    and one notice per run directory that has not finished (skipped)."""
    runs: dict[Path, RunRecord] = {}
    unfinished: list[str] = []
    for given in paths:
        root = Path(given)
        if not root.is_dir():
            raise ConfigError("no such run directory" if not root.exists() else "is not a directory, expected a run directory", file=given)
        before = len(runs) + len(unfinished)
        _walk(root, runs, unfinished)
        if len(runs) + len(unfinished) == before:
            raise ConfigError(f"holds no run directory (no {SUMMARY_FILE} of pretrain, finetune, run or sweep)", file=given)
    if not runs:
        raise ConfigError(f"no finished run among {', '.join(paths)} ({len(unfinished)} unfinished)")
    notices = [f"skipped {path}: " + ("stopped early by the sweep's scheduler" if (Path(path) / STOPPED_FILE).is_file() else
                                     f"the run has not finished (no {SUMMARY_FILE})") for path in unfinished]
    return list(runs.values()), notices


def _walk(folder: Path, runs: dict[Path, RunRecord], unfinished: list[str]) -> None:
    summary_file = folder / SUMMARY_FILE
    if summary_file.is_file():
        record = read_run(folder)
        runs.setdefault(folder.resolve(), record)
        return
    if any((folder / name).is_file() for name in (TRIAL_FILE, PRETRAIN_CONFIG_FILE, FINETUNE_CONFIG_FILE)):
        unfinished.append(str(folder))
        return
    for child in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        _walk(child, runs, unfinished)


def read_run(folder: str | Path) -> RunRecord:
    """The :class:`RunRecord` of a finished run directory (``summary.json`` and each stage's metrics)."""
    folder = Path(folder)
    summary = _read_json(folder / SUMMARY_FILE)
    command = summary.get("command")
    if command == "run":
        config = summary.get("config")
        stage_dirs = {stage: folder / stage for stage in STAGES}
    elif command in STAGES:
        config = _read_json(folder / (PRETRAIN_CONFIG_FILE if command == "pretrain" else FINETUNE_CONFIG_FILE))
        stage_dirs = {command: folder}
    else:
        raise DataError(f"'command' is {command!r}, expected a summary of pretrain, finetune or run", file=str(folder / SUMMARY_FILE))
    if not isinstance(config, dict):
        raise DataError("holds no run config", file=str(folder / SUMMARY_FILE))
    stages = {stage: _read_stage(path) for stage, path in stage_dirs.items()}
    stages = {stage: scores for stage, scores in stages.items() if scores is not None}
    if not stages:
        raise DataError("the run was never evaluated (no final evaluation), so it has no score to compare", file=str(folder / SUMMARY_FILE))
    data, env = config.get("data"), config.get("env_id") or summary.get("env")
    seed = config.get("seed")
    return RunRecord(
        path=str(folder), command=str(command), config=_flatten(config), dataset=Path(data).name if data else str(env),
        seed=seed if isinstance(seed, int) else None, stages=stages,
    )


def _read_stage(folder: Path) -> StageScores | None:
    """A stage's final evaluation (``summary.json``) and evaluation curve (``metrics.csv``); None when it never evaluated."""
    final = _read_json(folder / SUMMARY_FILE).get("final")
    if not final:
        return None
    try:
        metrics = read_metrics_csv(folder / METRICS_FILE)
    except FileNotFoundError:
        raise DataError("missing: a finished run keeps its metrics", file=str(folder / METRICS_FILE)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable metrics CSV ({exc})", file=str(folder / METRICS_FILE)) from None
    if EVAL_RETURN_KEY not in metrics:
        raise DataError(f"has no '{EVAL_RETURN_KEY}' rows although the run evaluated", file=str(folder / METRICS_FILE))
    steps, returns = metrics[EVAL_RETURN_KEY]
    normalized = metrics.get(EVAL_NORMALIZED_KEY)
    normalized_curve = normalized[1] if normalized is not None and len(normalized[1]) == len(returns) else None
    final_normalized = final.get("normalized_score")
    return StageScores(
        final_return=float(final["return_mean"]),
        final_normalized=None if final_normalized is None or normalized_curve is None else float(final_normalized),
        steps=steps, curve_return=returns, curve_normalized=normalized_curve,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("missing: every finished run directory has it", file=str(path)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", file=str(path)) from None
    if not isinstance(data, dict):
        raise DataError("expected a JSON object", file=str(path))
    return data


def _flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def setting_labels(runs: Sequence[RunRecord]) -> list[str]:
    """Each run's setting: ``field=value`` for every config field (and the command) whose value differs
    between the runs, seeds, datasets and output locations aside; one shared label when none differs."""
    configs = [{"command": run.command, **run.config} for run in runs]
    keys = sorted({key for config in configs for key in config if key.split(".")[0] not in NOT_A_SETTING})
    varying = [key for key in keys if len({json.dumps(config.get(key, UNSET), sort_keys=True) for config in configs}) > 1]
    if not varying:
        return [runs[0].command if len({run.command for run in runs}) == 1 else "all"] * len(runs)
    return [setting_text((key, config.get(key, UNSET)) for key in varying) for config in configs]


# ---------------------------------------------------------------------------------------------------
# Grouping and summarising


@dataclass
class GroupSummary:
    """The runs of one (stage, dataset, setting), or of one (stage, setting) over datasets (``dataset`` "all")."""

    stage: str
    dataset: str
    setting: str
    runs: list[str]
    """Run directories, in the order of ``seeds`` and ``scores``."""
    seeds: list[int | None]
    scores: list[float]
    """Each run's final score (pooled over datasets for an aggregate)."""
    final: Estimate
    curve_steps: list[int]
    """Evaluation steps every run of the group has (a run that stopped early shortens the curve)."""
    curve: Estimate | None
    datasets: list[str] = field(default_factory=list)
    """The datasets pooled (aggregates only)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "dataset": self.dataset, "setting": self.setting, "runs": self.runs, "seeds": self.seeds,
            "scores": self.scores, "datasets": self.datasets, "final": self.final.to_dict(),
            "curve": None if self.curve is None else {"steps": self.curve_steps, **self.curve.to_dict()},
        }


@dataclass
class CompareResult:
    """The per-dataset groups, the aggregates over datasets (or why there are none) and the files written."""

    score: str
    """"normalized" or "return"."""
    confidence: float
    groups: list[GroupSummary]
    aggregates: list[GroupSummary]
    aggregate_note: str | None
    """Why nothing was aggregated over datasets (None when it was)."""
    notices: list[str]
    """Runs skipped (unfinished)."""
    json_path: str | None = None
    figure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": "compare", "score": self.score, "confidence": self.confidence,
            "groups": [g.to_dict() for g in self.groups], "aggregates": [g.to_dict() for g in self.aggregates],
            "aggregate_note": self.aggregate_note, "notices": self.notices, "json": self.json_path, "figure": self.figure,
        }


def compare(cfg: CompareConfig) -> CompareResult:
    """Find the finished runs under ``cfg.paths``, summarise each (stage, dataset, setting) and, with
    normalised scores, each (stage, setting) over datasets; write ``compare.json`` and ``compare.png``."""
    runs, notices = find_runs(cfg.paths)
    score = _resolve_score(cfg.score, runs)
    settings = setting_labels(runs)
    members: dict[tuple[str, str, str], list[tuple[RunRecord, StageScores]]] = {}
    for run, setting in zip(runs, settings, strict=True):
        for stage, scores in run.stages.items():
            members.setdefault((stage, run.dataset, setting), []).append((run, scores))
    order = sorted(members, key=lambda key: (STAGES.index(key[0]), key[1], key[2]))
    groups = [_summarise(stage, dataset, setting, {dataset: members[(stage, dataset, setting)]}, score, cfg)
              for stage, dataset, setting in order]

    datasets = sorted({run.dataset for run in runs})
    aggregates: list[GroupSummary] = []
    if len(datasets) < 2:
        note: str | None = "one dataset: its rows are the whole comparison"
    elif score != "normalized":
        lacking = next((run for run in runs if any(s.final_normalized is None for s in run.stages.values())), None)
        note = ("cannot aggregate over datasets: raw returns of different tasks have no common scale"
                + (f", and {lacking.path} ({lacking.dataset}) has no normalised score (no reference returns)" if lacking else
                   "; compare with score 'normalized'"))
    else:
        note = None
        for stage, setting in sorted({(k[0], k[2]) for k in order}, key=lambda k: (STAGES.index(k[0]), k[1])):
            per_dataset = {d: members[(stage, d, setting)] for d in datasets if (stage, d, setting) in members}
            aggregates.append(_summarise(stage, "all", setting, per_dataset, score, cfg))
    result = CompareResult(score, cfg.confidence, groups, aggregates, note, notices)
    if cfg.out_dir is not None:
        out = Path(cfg.out_dir)
        result.figure = _plot(result, out / COMPARE_FIGURE)
        result.json_path = str(out / COMPARE_JSON)
        atomic_write_text(out / COMPARE_JSON, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    return result


def _resolve_score(requested: str, runs: Sequence[RunRecord]) -> str:
    lacking = next((run for run in runs if any(s.final_normalized is None for s in run.stages.values())), None)
    if requested == "auto":
        return "return" if lacking else "normalized"
    if requested == "normalized" and lacking is not None:
        raise ConfigError(f"{lacking.path}: no normalised score (its dataset and environment have no reference returns); use score 'return'")
    return requested


def _summarise(
    stage: str, dataset: str, setting: str, per_dataset: dict[str, list[tuple[RunRecord, StageScores]]], score: str,
    cfg: CompareConfig,
) -> GroupSummary:
    entries = [entry for members in per_dataset.values() for entry in members]
    tasks = [np.array([scores.final(score) for _, scores in members]) for members in per_dataset.values()]
    common = sorted(set.intersection(*(set(scores.steps.tolist()) for _, scores in entries)))
    curve = None
    if common:
        curve_tasks = [np.stack([_at_steps(scores, common, score) for _, scores in members]) for members in per_dataset.values()]
        curve = Estimate.of(curve_tasks, cfg)
    return GroupSummary(
        stage=stage, dataset=dataset, setting=setting, runs=[run.path for run, _ in entries],
        seeds=[run.seed for run, _ in entries], scores=[scores.final(score) for _, scores in entries],
        final=Estimate.of(tasks, cfg), curve_steps=[int(s) for s in common], curve=curve,
        datasets=list(per_dataset) if dataset == "all" else [],
    )


def _at_steps(scores: StageScores, steps: list[int], score: str) -> np.ndarray:
    index = {int(s): i for i, s in enumerate(scores.steps.tolist())}  # a repeated step keeps its last evaluation
    return scores.curve(score)[[index[s] for s in steps]]


# ---------------------------------------------------------------------------------------------------
# Report


def format_table(result: CompareResult) -> str:
    """The comparison as text: one row per group, then the aggregates (or why there are none)."""
    label = "normalised score" if result.score == "normalized" else "return"
    level = f"{result.confidence:.0%} CI"
    header = ("stage", "dataset", "setting", "runs", f"IQM [{level}]", "mean", f"IQM curve ({label})")
    rows = [header]
    for group in [*result.groups, *result.aggregates]:
        curve = "" if group.curve is None else " -> ".join(f"{v:.1f}" for v in group.curve.iqm)
        rows.append((
            group.stage, group.dataset, group.setting, str(len(group.runs)),
            f"{float(group.final.iqm):.1f} [{float(group.final.low):.1f}, {float(group.final.high):.1f}]",
            f"{float(group.final.mean):.1f}", curve,
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    if result.aggregate_note:
        lines.append(f"({result.aggregate_note})")
    return "\n".join(line.rstrip() for line in lines)


def _plot(result: CompareResult, png_path: Path) -> str | None:
    """One figure: a row per stage, a panel per dataset (then the aggregate), the IQM learning curve of
    each setting with its confidence band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels: dict[str, list[list[GroupSummary]]] = {}
    for group in [*result.groups, *result.aggregates]:
        if group.curve is None:
            continue
        columns = panels.setdefault(group.stage, [])
        column = next((c for c in columns if c[0].dataset == group.dataset), None)
        if column is None:
            columns.append([group])
        else:
            column.append(group)
    if not panels:
        return None
    stages = [stage for stage in STAGES if stage in panels]
    width = max(len(panels[stage]) for stage in stages)
    settings = sorted({g.setting for g in result.groups})
    figure = Figure(figsize=(4.2 * width, 3.4 * len(stages) + 0.6), dpi=110)
    FigureCanvasAgg(figure)
    label = "normalised score" if result.score == "normalized" else "evaluation return"
    for row, stage in enumerate(stages):
        for col, column in enumerate(panels[stage]):
            axes = figure.add_subplot(len(stages), width, row * width + col + 1)
            for group in column:
                assert group.curve is not None
                color = f"C{settings.index(group.setting) % 10}"
                steps = np.asarray(group.curve_steps)
                axes.plot(steps, group.curve.iqm, marker="o", markersize=3, color=color, label=f"{group.setting} (n={len(group.runs)})")
                axes.fill_between(steps, group.curve.low, group.curve.high, color=color, alpha=0.2)
            title = "all datasets (stratified)" if column[0].dataset == "all" else column[0].dataset
            axes.set_title(f"{stage}: {title}", fontsize="small")
            axes.set_xlabel(STAGE_UNITS[stage], fontsize="small")
            axes.set_ylabel(f"IQM {label}", fontsize="small")
            axes.tick_params(labelsize="x-small")
            axes.grid(alpha=0.3)
            axes.legend(fontsize="x-small", loc="best")
    figure.suptitle(f"IQM over runs with {result.confidence:.0%} stratified-bootstrap CI (Agarwal et al., 2021)", fontsize="small")
    figure.tight_layout()
    with atomic_path(png_path) as tmp:
        figure.savefig(tmp, format="png")
    return str(png_path)
