"""benchmarks/handover_report.py: the dip, drawdown and kept-gain measures of a fine-tuning trial."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmark_scripts import load

report = load("handover_report")


def _trial(folder: Path, returns: dict[int, float], setting: dict, std: float = 10.0, episodes: int = 10) -> Path:
    folder.mkdir(parents=True)
    rows = ["step,wall_seconds,key,value"]
    for step, value in returns.items():
        rows += [f"{step},0.0,eval/return_mean,{value}", f"{step},0.0,eval/return_std,{std}", f"{step},0.0,eval/episodes,{episodes}"]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n")
    config = {"steps": max(returns), "seed": 0, "eval_episodes": episodes, "eval_deterministic": True, "checkpoint": None}
    (folder / "trial.json").write_text(json.dumps({"name": folder.name, "setting": setting, "config": config}))
    return folder


def test_the_drawdown_counts_after_the_window_and_a_fall_beyond_noise_and_ten_percent_is_not_kept(tmp_path: Path) -> None:
    # Evaluations every 100 of 1000 steps; the window is the first 100. The -900 at step 100 is a dip,
    # not a drawdown; after it the best is -200 (step 400) and the worst fall after it is to -300.
    curve = {100: -900.0, 200: -400.0, 300: -250.0, 400: -200.0, 500: -300.0, 600: -210.0, 1000: -190.0}
    measured = report.measure(_trial(tmp_path / "a", curve, {"data": None}), window=0.1)
    assert measured.dip == -900.0 and measured.dip_ok is None  # no boundary from scratch
    assert measured.drawdown == pytest.approx(100.0) and measured.drawdown_at == 500
    assert not measured.kept  # 100 > 0.1 * 200 + 2 * 10 / sqrt(10)
    assert measured.final == -190.0 and measured.gain is None
    assert measured.setting == "data=null"
    small = {100: -300.0, 200: -200.0, 300: -215.0, 1000: -205.0}  # a fall of 15: within 10 % of the best
    assert report.measure(_trial(tmp_path / "b", small, {}), window=0.1).kept
    fall = {100: -300.0, 200: -200.0, 300: -300.0, 1000: -250.0}  # 100 below the best: beyond 10 %...
    assert not report.measure(_trial(tmp_path / "c", fall, {}), window=0.1).kept
    noisy = report.measure(_trial(tmp_path / "d", fall, {}, std=200.0), window=0.1)  # ...but within 2 x 200 / sqrt(10)
    assert noisy.kept and noisy.drawdown == pytest.approx(100.0)
    # The 10 % and the noise add up: a fall of 30 below a best of -200 is beyond each alone
    # (20 and 2 x 30 / sqrt(10) = 19) and within their sum (39).
    both = {100: -300.0, 200: -200.0, 300: -230.0, 1000: -220.0}
    assert report.measure(_trial(tmp_path / "e", both, {}, std=30.0), window=0.1).kept
    assert not report.measure(_trial(tmp_path / "f", {**both, 300: -240.0}, {}, std=30.0), window=0.1).kept


def test_every_evaluation_is_judged_with_its_own_noise_not_only_the_largest_fall() -> None:
    # Best 1000 at step 200; a fall of 300 at step 300 within its noise (allowance 100 + 400), then a
    # smaller fall of 250 at step 400 measured precisely (allowance 100 + 10): that one is lost.
    steps = report.np.array([100, 200, 300, 400, 500])
    means = report.np.array([900.0, 1000.0, 700.0, 750.0, 1000.0])
    noise = report.np.array([10.0, 10.0, 400.0, 10.0, 10.0])
    _, _, drawdown, drawdown_at, kept = report.curve_measures(None, steps, means, noise, horizon=100)
    assert drawdown == 300.0 and drawdown_at == 300
    assert not kept
    noise[3] = 200.0  # the same fall within its own noise: kept
    assert report.curve_measures(None, steps, means, noise, horizon=100)[4]


def test_trials_of_several_sweeps_group_by_sweep_then_setting(tmp_path: Path) -> None:
    curve = {100: -300.0, 1000: -200.0}
    scratch = report.measure(_trial(tmp_path / "scratch" / "trials" / "s0", curve, {}), window=0.1)
    rlpd = report.measure(_trial(tmp_path / "rlpd" / "trials" / "s0", curve, {}), window=0.1)
    measured = [("scratch", scratch), ("rlpd", rlpd)]
    # Both are the base setting of their sweep, and two different methods.
    assert report.group_trials(measured, by_sweep=True) == {"scratch: (base)": [scratch], "rlpd: (base)": [rlpd]}
    assert report.group_trials(measured, by_sweep=False) == {"(base)": [scratch, rlpd]}


def test_plain_finetune_runs_are_read_and_group_by_their_folder_name_less_the_seed(tmp_path: Path) -> None:
    curve = {100: -300.0, 1000: -200.0}
    for arm, seed in (("ft", 0), ("ft", 1), ("rlpd", 0)):
        run = _trial(tmp_path / "study" / f"{arm}-s{seed}", curve, {})
        config = json.loads((run / "trial.json").read_text())["config"]
        (run / "trial.json").unlink()  # a plain `finetune --out` has its config, no trial record
        (run / report.FINETUNE_CONFIG_FILE).write_text(json.dumps(config))
    (tmp_path / "study" / "pre-s0").mkdir()  # a pretraining run beside them is not a fine-tuning run
    (tmp_path / "study" / "pre-s0" / "metrics.csv").write_text("step,wall_seconds,key,value\n")
    runs = report.finetune_runs(tmp_path / "study")
    assert [r.name for r in runs] == ["ft-s0", "ft-s1", "rlpd-s0"]
    assert report.finetune_runs(runs[0]) == [runs[0]]  # one run named on its own
    measured = [("study", report.measure(r, window=0.1)) for r in runs]
    assert measured[0][1].trial == "ft-s0" and measured[0][1].final == -200.0
    groups = report.group_trials(measured, by_sweep=False)
    assert {k: [t.trial for t in v] for k, v in groups.items()} == {"ft": ["ft-s0", "ft-s1"], "rlpd": ["rlpd-s0"]}


def test_paired_differences_match_trials_by_seed_and_pool_their_episodes() -> None:
    np = report.np
    reference = {0: np.array([-100.0, -120.0, -140.0]), 1: np.array([-200.0, -210.0, -220.0]), 2: np.array([-1.0, -2.0, -3.0])}
    other = {0: np.array([-98.0, -121.0, -137.0]), 1: np.array([-200.0, -208.0, -221.0]), 3: np.array([0.0, 0.0, 0.0])}
    per_seed, pooled = report.paired_differences(reference, other)
    assert sorted(per_seed) == [0, 1]  # seeds 2 and 3 have no partner
    assert per_seed[0][0] == pytest.approx((2 - 1 + 3) / 3)
    assert per_seed[1][0] == pytest.approx((0 + 2 - 1) / 3)
    differences = np.array([2.0, -1.0, 3.0, 0.0, 2.0, -1.0])
    assert pooled[0] == pytest.approx(differences.mean())
    assert pooled[1] == pytest.approx(differences.std(ddof=1) / np.sqrt(6))
    assert report.paired_differences({0: reference[0]}, {1: other[1]}) == ({}, None)


def test_the_paired_report_compares_every_setting_and_the_boundaries_with_the_first_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def run(name: str, seed: int, checkpoint: str | None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        config = {"seed": seed, "checkpoint": checkpoint}
        (folder / "trial.json").write_text(json.dumps({"name": name, "setting": {}, "config": config}))
        return folder

    scores = {"ft-s0": 10.0, "ft-s1": 20.0, "pre-s0": 4.0, "pre-s1": 15.0, "rlpd-s0": 9.0, "rlpd-s1": 21.0}
    played: list[tuple[str, int, int]] = []

    def deployed(path: str, seed: int, episodes: int):
        played.append((Path(path).name, seed, episodes))
        return report.np.full(episodes, scores[Path(path).name]) + report.np.arange(episodes)

    monkeypatch.setattr(report, "_deployed_returns", deployed)
    dirs = {"ft": [run("ft-s0", 0, str(tmp_path / "pre-s0")), run("ft-s1", 1, str(tmp_path / "pre-s1"))],
            "rlpd": [run("rlpd-s0", 0, None), run("rlpd-s1", 1, None)]}
    lines = report.paired_report(dirs, episodes=4, seed=77)
    assert {seed for _, seed, _ in played} == {77} and {n for _, _, n in played} == {4}  # the same episodes for all
    assert len(played) == 6  # four deployed policies and two boundaries
    text = "\n".join(lines)
    assert "ft − ft (boundary): s0 +6.0 ± 0.0, s1 +5.0 ± 0.0; pooled +5.50 ± 0.19" in text
    assert "ft − rlpd: s0 +1.0 ± 0.0, s1 -1.0 ± 0.0; pooled +0.00 ± 0.38" in text
