"""Issue 9's offline -> online measures, read from sweep outputs (`dime-offline sweep --out DIR`) and
from plain `dime-offline finetune --out DIR` runs.

For every fine-tuning trial (a ``finetune`` sweep's trial or a ``finetune`` run, from a checkpoint or
from scratch) this reads the
evaluations in its ``metrics.csv`` (``eval/return_mean``, the deterministic policy the run would
deploy) and, for a trial that fine-tunes a checkpoint, the boundary score: the last evaluation of
the pretraining run the checkpoint came from. Per trial it prints

* ``boundary``: the pretrained policy's score on the fine-tuning run's own evaluation episodes (the
  checkpoint evaluated again with the trial's evaluation seed, so a checkpoint pretrained with another
  seed is scored on the same episodes as the online evaluations after it);
* ``dip``: the lowest evaluation in the first ``--window`` of the online steps, and whether it stays
  within 10 % of the boundary (``>= 0.9 x`` for positive scores; ``>= boundary - 0.1 |boundary|`` in
  general, as returns here are often negative);
* ``drawdown``: after that window, the largest fall of an evaluation below the best earlier one;
  ``kept`` fails where an evaluation falls below 0.9 x that best (``best - 0.1 |best|``, as returns
  are often negative) by more than the evaluation noise (twice the standard error of the mean return
  over the evaluation's episodes), the issue's wording: the 10 % and the noise add up. (Before
  2026-12-02 a fall beyond the larger of the two failed; figures recorded before then used that
  stricter rule.)
* ``final``: the last evaluation (the final policy), and its gain over the boundary.

Trials are grouped by their sweep setting (``trial.json``), the checkpoint aside (fine-tuning each
pretraining seed's checkpoint is a seed of the setting), and each group's means are printed. A plain
run has no setting: its folder's name without a trailing seed (``ft-s2`` -> ``ft``) stands for one, so
runs named ``ARM-sSEED`` group by arm.

    python benchmarks/handover_report.py --runs cache/o2o-cstr/handover cache/o2o-cstr/scratch
    python benchmarks/handover_report.py --runs cache/hc20k      # a folder of finetune runs (ft-s0, rlpd-s0, ...)
    python benchmarks/handover_report.py --runs DIR --json report.json
    python benchmarks/handover_report.py --runs cache/p20k --paired-episodes 50

``--paired-episodes N`` tells a tie from a gain: each trial's deployed policy (and, for a trial that
fine-tunes a checkpoint, that checkpoint: the boundary) plays the same N fresh episodes (reset seeds
``--paired-seed + i``, shared by every trial), and each setting is compared with the first one printed,
trial by trial where their seeds match: the mean per-episode difference and its standard error, per seed
and pooled. Ten evaluation episodes from each seed's own start states cannot separate policies that
differ by less than their spread; the same 50 episodes for both can.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from dime_offline.config import dotted_items, setting_text
from dime_offline.evaluation.metrics import standard_error
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.evaluate import EvaluateConfig, evaluate_checkpoint
from dime_offline.trainers.loop import FINETUNE_CONFIG_FILE
from dime_offline.trainers.scaffold import EVAL_SEED_OFFSET


@dataclass
class TrialMeasures:
    """The measures of one fine-tuning trial (see the module docstring)."""

    setting: str
    trial: str
    source: str
    boundary: float | None
    steps: list[int]
    returns: list[float]
    dip: float
    dip_ok: bool | None
    drawdown: float
    drawdown_at: int | None
    kept: bool
    final: float
    gain: float | None


def _evaluations(run: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    metrics = read_metrics_csv(run / "metrics.csv")
    steps, means = metrics["eval/return_mean"]
    _, stds = metrics["eval/return_std"]
    _, episodes = metrics["eval/episodes"]
    return steps, means, stds, episodes


@functools.cache
def _boundary(checkpoint: str, seed: int, episodes: int, deterministic: bool, max_episode_steps: int | None) -> float:
    """The pretrained checkpoint's mean return on the episodes that start from reset(seed + i)."""
    cfg = EvaluateConfig(checkpoint=checkpoint, seed=seed, episodes=episodes, deterministic=deterministic,
                         max_episode_steps=max_episode_steps)
    return float(evaluate_checkpoint(cfg).stats.return_mean)


def within_tenth_below(value: float, reference: float) -> bool:
    """Whether ``value`` is at most 10 % below ``reference``: ``reference - 0.1 |reference|``, so the rule
    holds for negative returns too (a ratio >= 0.9 would pass falls there)."""
    return value >= reference - 0.1 * abs(reference)


def curve_measures(
    boundary: float | None, steps: np.ndarray, means: np.ndarray, noise: np.ndarray, horizon: float
) -> tuple[float, bool | None, float, int | None, bool]:
    """Dip, dip within 10 % of the boundary (None without one), largest drawdown, its step, and kept,
    from the online evaluations (``steps`` > 0, mean returns and their noise), the dip looked for up
    to step ``horizon`` and drawdowns after it (see the module docstring)."""
    early = steps <= horizon
    dip = float(means[early].min()) if early.any() else math.nan
    dip_ok = None if boundary is None or not early.any() else within_tenth_below(dip, boundary)
    drawdown, drawdown_at, kept = 0.0, None, True
    best = -math.inf
    for step, value, spread, is_early in zip(steps, means, noise, early):
        if not is_early and best > -math.inf:
            fall = float(best - value)
            if fall > drawdown:
                drawdown, drawdown_at = fall, int(step)
            # Every evaluation is judged with its own noise, not only the largest fall: a smaller fall
            # measured more precisely can be the one beyond the allowance.
            if fall > 0.1 * abs(best) + spread:
                kept = False
        best = max(best, float(value))
    return dip, dip_ok, drawdown, drawdown_at, kept


def _name_and_setting(run_dir: Path) -> tuple[str, str, dict]:
    """A run's name, setting and finetune config: from a sweep's ``trial.json``, or for a plain
    ``finetune`` output from its saved config, the folder's name less a trailing ``-sSEED`` standing for
    the setting."""
    if (run_dir / "trial.json").exists():
        trial = json.loads((run_dir / "trial.json").read_text())
        setting = setting_text((k, v) for k, v in dotted_items(trial.get("setting") or {}) if k != "checkpoint")
        return trial["name"], setting or "(base)", trial["config"]
    config = json.loads((run_dir / FINETUNE_CONFIG_FILE).read_text())
    return run_dir.name, re.sub(r"-s\d+$", "", run_dir.name), config


def finetune_runs(folder: Path) -> list[Path]:
    """The fine-tuning runs in ``folder``: a sweep's trials, the folder itself when it is a ``finetune``
    output, or the ``finetune`` outputs directly inside it (pretraining runs beside them are skipped)."""
    trials = sorted(path.parent for path in folder.glob("trials/*/metrics.csv"))
    if trials:
        return trials
    if (folder / FINETUNE_CONFIG_FILE).exists():
        return [folder]
    return sorted(path.parent for path in folder.glob(f"*/{FINETUNE_CONFIG_FILE}") if (path.parent / "metrics.csv").exists())


def measure(trial_dir: Path, window: float) -> TrialMeasures:
    """The measures of the fine-tuning run in ``trial_dir`` (a sweep trial or a ``finetune`` output)."""
    name, setting, config = _name_and_setting(trial_dir)
    steps, means, stds, episodes = _evaluations(trial_dir)
    checkpoint = config.get("checkpoint")
    boundary = _boundary(checkpoint, int(config["seed"]) + EVAL_SEED_OFFSET, int(config["eval_episodes"]),
                         bool(config["eval_deterministic"]), config.get("max_episode_steps")) if checkpoint else None
    online = steps > 0
    steps, means, noise = steps[online], means[online], 2 * stds[online] / np.sqrt(episodes[online])
    dip, dip_ok, drawdown, drawdown_at, kept = curve_measures(boundary, steps, means, noise, window * float(config["steps"]))
    final = float(means[-1])
    return TrialMeasures(
        setting=setting, trial=name, source=str(checkpoint or "scratch"), boundary=boundary,
        steps=[int(s) for s in steps], returns=[round(float(m), 1) for m in means],
        dip=dip, dip_ok=dip_ok, drawdown=drawdown, drawdown_at=drawdown_at, kept=kept,
        final=final, gain=None if boundary is None else final - boundary,
    )


@functools.cache
def _deployed_returns(run: str, seed: int, episodes: int) -> np.ndarray:
    """Per-episode returns of what ``run`` deploys (a run directory: its champion; a checkpoint: itself),
    acting as its run evaluated, on the episodes that start from reset(seed + i). Cached: settings that
    fine-tune the same checkpoint share its boundary."""
    cfg = EvaluateConfig(checkpoint=run, seed=seed, episodes=episodes)
    returns = np.asarray(evaluate_checkpoint(cfg).stats.returns, dtype=np.float64)
    returns.flags.writeable = False
    return returns


def paired_differences(
    reference: dict[int, np.ndarray], other: dict[int, np.ndarray]
) -> tuple[dict[int, tuple[float, float]], tuple[float, float] | None]:
    """``other`` minus ``reference``, per seed both have (their per-episode returns on the same
    episodes): mean difference and its standard error per seed, and over every matched episode pooled
    (None when no seed matches)."""
    per_seed: dict[int, tuple[float, float]] = {}
    pooled: list[np.ndarray] = []
    for seed in sorted(reference.keys() & other.keys()):
        difference = np.subtract(other[seed], reference[seed])
        per_seed[seed] = (float(difference.mean()), standard_error(difference))
        pooled.append(difference)
    if not pooled:
        return per_seed, None
    everything = np.concatenate(pooled)
    return per_seed, (float(everything.mean()), standard_error(everything))


def paired_report(trial_dirs: dict[str, list[Path]], episodes: int, seed: int) -> list[str]:
    """Lines comparing every setting's deployed policies with the first setting's, and the first
    setting's with its boundaries, on the same ``episodes`` fresh episodes (module docstring)."""
    returns: dict[str, dict[int, np.ndarray]] = {}
    for setting, dirs in trial_dirs.items():
        for run in dirs:
            config = _name_and_setting(run)[2]
            run_seed = int(config["seed"])
            returns.setdefault(setting, {})[run_seed] = _deployed_returns(str(run), seed, episodes)
            if config.get("checkpoint"):
                returns.setdefault(f"{setting} (boundary)", {})[run_seed] = _deployed_returns(config["checkpoint"], seed, episodes)
    reference = next(iter(trial_dirs))
    lines = [f"paired: deployed policies on the same {episodes} episodes (reset seeds {seed} + i)"]
    for setting, by_seed in returns.items():
        means = ", ".join(f"s{s} {r.mean():.1f}" for s, r in sorted(by_seed.items()))
        lines.append(f"  {setting}: {means}")
    for setting, by_seed in returns.items():
        if setting == reference:
            continue
        per_seed, pooled = paired_differences(by_seed, returns[reference])
        if pooled is None:
            continue
        seeds = ", ".join(f"s{s} {m:+.1f} ± {e:.1f}" for s, (m, e) in per_seed.items())
        lines.append(f"  {reference} − {setting}: {seeds}; pooled {pooled[0]:+.2f} ± {pooled[1]:.2f}")
    return lines


def group_trials(measured: list[tuple[str, TrialMeasures]], *, by_sweep: bool) -> dict[str, list[TrialMeasures]]:
    """Trials grouped by setting, and by sweep folder first when ``by_sweep`` (several sweeps read at
    once: a scratch and an RLPD-style sweep both have the base setting, and are different methods)."""
    groups: dict[str, list[TrialMeasures]] = {}
    for sweep, t in measured:
        groups.setdefault(group_name(sweep, t.setting, by_sweep=by_sweep), []).append(t)
    return groups


def group_name(sweep: str, setting: str, *, by_sweep: bool) -> str:
    """The name of the group a trial of ``setting`` in the sweep folder ``sweep`` belongs to (:func:`group_trials`)."""
    return f"{sweep}: {setting}" if by_sweep else setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", nargs="+", required=True,
                        help="output folders of finetune sweeps, finetune runs, or folders of finetune runs")
    parser.add_argument("--window", type=float, default=0.1, help="share of the online steps the dip is looked for in")
    parser.add_argument("--json", default=None, help="also write every trial's measures here")
    parser.add_argument("--paired-episodes", type=int, default=0,
                        help="also score every deployed policy and boundary on these many shared fresh episodes")
    parser.add_argument("--paired-seed", type=int, default=7_000_000, help="first reset seed of the paired episodes")
    args = parser.parse_args()
    runs = [(Path(folder).name, path) for folder in args.runs for path in finetune_runs(Path(folder))]
    measured = [(sweep, measure(path, args.window)) for sweep, path in runs]
    trials = [t for _, t in measured]
    groups = group_trials(measured, by_sweep=len(args.runs) > 1)

    def show(value: float | None) -> str:
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1f}"

    print(f"{'setting / trial':60s} {'boundary':>9s} {'dip':>8s} {'ok':>4s} {'drawdown':>9s} {'kept':>5s} {'final':>8s} {'gain':>7s}")
    for setting, members in groups.items():
        print(setting)
        for t in members:
            print(f"  {t.trial + ' ' + Path(t.source).name:58s} {show(t.boundary):>9s} {show(t.dip):>8s} {t.dip_ok!s:>4s}"
                  f" {show(t.drawdown):>9s} {t.kept!s:>5s} {show(t.final):>8s} {show(t.gain):>7s}")
            print(f"      returns: {', '.join(f'{s}:{r:.0f}' for s, r in zip(t.steps, t.returns))}")
        finals = [t.final for t in members]
        judged = [t for t in members if t.dip_ok is not None]  # from scratch there is no boundary to dip below
        dips = f" dips within 10 %: {sum(bool(t.dip_ok) for t in judged)}/{len(judged)}," if judged else ""
        print(f"  mean final {np.mean(finals):.1f} (std {np.std(finals):.1f}), mean drawdown {np.mean([t.drawdown for t in members]):.1f},"
              f"{dips} kept: {sum(t.kept for t in members)}/{len(members)}")
    if args.paired_episodes > 0:
        dirs: dict[str, list[Path]] = {}
        for (sweep, trial), (_, path) in zip(measured, runs):
            dirs.setdefault(group_name(sweep, trial.setting, by_sweep=len(args.runs) > 1), []).append(path)
        print("\n".join(paired_report(dirs, args.paired_episodes, args.paired_seed)))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(t) for t in trials], indent=2) + "\n")


if __name__ == "__main__":
    main()
