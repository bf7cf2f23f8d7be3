"""`dime-offline compare`: IQM and stratified-bootstrap intervals over synthetic runs with known scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dime_offline_cli.main import app
from run_factories import make_pipeline_run, make_stage_run, normalized
from typer.testing import CliRunner

from dime_offline.compare import (
    CompareConfig,
    compare,
    format_table,
    interquartile_mean,
    stratified_bootstrap_interval,
)
from dime_offline.errors import ConfigError

SCORES_A = [-1000.0, -900.0, -800.0, 0.0]  # normalised 0, 10, 20, 100: IQM 15, mean 32.5
SCORES_B = [-500.0, -400.0, -300.0, -200.0]  # normalised 50, 60, 70, 80: IQM 65


def test_interquartile_mean_drops_the_lowest_and_highest_quarter() -> None:
    assert interquartile_mean(np.array([0.0, 10.0, 20.0, 1000.0])) == 15.0
    assert interquartile_mean(np.arange(1.0, 9.0)) == 4.5  # mean of 3, 4, 5, 6
    assert interquartile_mean(np.array([3.0, 1.0, 2.0])) == 2.0  # fewer than four runs: the mean
    curves = np.array([[0.0, 5.0], [10.0, 5.0], [20.0, 5.0], [1000.0, 5.0]])
    assert interquartile_mean(curves, axis=0).tolist() == [15.0, 5.0]


def test_the_bootstrap_is_stratified_by_dataset() -> None:
    """Four runs scoring 0 on one dataset and four scoring 100 on another: resampling within each dataset
    always pools four of each, whose IQM is 50; pooling first would let a resample be mostly zeros."""
    low, high = stratified_bootstrap_interval([np.zeros(4), np.full(4, 100.0)], samples=500)
    assert low == high == 50.0
    low, high = stratified_bootstrap_interval([np.array(SCORES_A)], samples=4000, confidence=0.9)
    assert -1000.0 <= low < -850.0 < high <= 0.0


def test_groups_by_setting_with_known_iqm_and_an_interval_around_it(tmp_path: Path) -> None:
    for seed, score in enumerate(SCORES_A):
        make_stage_run(tmp_path / "sweep" / f"a{seed}", "pretrain", score, seed=seed, offline={"conservative_weight": 0.3})
    for seed, score in enumerate(SCORES_B):
        make_stage_run(tmp_path / "sweep" / f"b{seed}", "pretrain", score, seed=seed, offline={"conservative_weight": 1.0})
    result = compare(CompareConfig(paths=(str(tmp_path / "sweep"),), out_dir=str(tmp_path / "report")))
    assert result.score == "normalized"
    assert [(g.stage, g.dataset, g.setting) for g in result.groups] == [
        ("pretrain", "pendulum.parquet", "offline.conservative_weight=0.3"),
        ("pretrain", "pendulum.parquet", "offline.conservative_weight=1.0"),
    ]
    first, second = result.groups
    assert first.seeds == [0, 1, 2, 3] and first.scores == [normalized(s) for s in SCORES_A]
    assert float(first.final.iqm) == pytest.approx(15.0) and float(first.final.mean) == pytest.approx(32.5)
    assert float(second.final.iqm) == pytest.approx(65.0)
    for group in result.groups:
        assert group.final.low <= group.final.iqm <= group.final.high
        assert group.final.high - group.final.low > 0
        assert group.curve_steps == [10, 20]
        assert group.curve is not None and group.curve.iqm[-1] == pytest.approx(float(group.final.iqm))
    assert float(first.curve.iqm[0]) == pytest.approx(15.0 - 10.0)  # every run scored 100 return (10 points) lower at step 10
    assert result.aggregates == [] and "one dataset" in (result.aggregate_note or "")
    saved = json.loads((tmp_path / "report" / "compare.json").read_text())
    assert saved["groups"][0]["final"]["iqm"] == pytest.approx(15.0)
    assert Path(result.figure or "").is_file()
    table = format_table(result)
    assert "offline.conservative_weight=0.3" in table and "15.0 [" in table


def test_aggregates_normalised_scores_over_datasets_and_splits_pipeline_stages(tmp_path: Path) -> None:
    for seed, (low, high) in enumerate(zip(SCORES_A, SCORES_B, strict=True)):
        make_pipeline_run(tmp_path / f"hop{seed}", low, high, seed=seed, data="hopper.parquet")
        make_pipeline_run(tmp_path / f"pen{seed}", high, high, seed=seed, data="pendulum.parquet")
    result = compare(CompareConfig(paths=(str(tmp_path),), out_dir=None))
    assert {(g.stage, g.dataset) for g in result.groups} == {
        (stage, data) for stage in ("pretrain", "finetune") for data in ("hopper.parquet", "pendulum.parquet")
    }
    assert all(g.setting == "run" and len(g.runs) == 4 for g in result.groups)
    pretrain_all = next(g for g in result.aggregates if g.stage == "pretrain")
    assert pretrain_all.dataset == "all" and pretrain_all.datasets == ["hopper.parquet", "pendulum.parquet"]
    pooled = [normalized(s) for s in SCORES_A + SCORES_B]
    assert float(pretrain_all.final.iqm) == pytest.approx(float(interquartile_mean(np.array(pooled))))
    assert result.aggregate_note is None and result.json_path is None and result.figure is None


def test_raw_returns_are_not_aggregated_over_datasets(tmp_path: Path) -> None:
    make_stage_run(tmp_path / "x", "finetune", -100.0, seed=0, data="a.parquet", with_references=False)
    make_stage_run(tmp_path / "y", "finetune", -200.0, seed=0, data="b.parquet")
    result = compare(CompareConfig(paths=(str(tmp_path),), out_dir=None))
    assert result.score == "return" and result.aggregates == []
    assert "cannot aggregate" in (result.aggregate_note or "") and str(tmp_path / "x") in (result.aggregate_note or "")
    with pytest.raises(ConfigError, match="no normalised score"):
        compare(CompareConfig(paths=(str(tmp_path),), out_dir=None, score="normalized"))


def test_unfinished_trials_are_skipped_with_a_notice(tmp_path: Path) -> None:
    make_stage_run(tmp_path / "t0", "pretrain", -300.0, seed=0)
    (tmp_path / "t1").mkdir()
    (tmp_path / "t1" / "trial.json").write_text("{}")  # a trial that never finished
    result = compare(CompareConfig(paths=(str(tmp_path),), out_dir=None))
    assert [len(g.runs) for g in result.groups] == [1]
    assert result.notices == [f"skipped {tmp_path / 't1'}: the run has not finished (no summary.json)"]


def test_cli_prints_one_json_object_and_writes_the_figure(tmp_path: Path) -> None:
    for seed, score in enumerate(SCORES_B):
        make_stage_run(tmp_path / "runs" / f"r{seed}", "pretrain", score, seed=seed)
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "runs"), "--out", str(tmp_path / "cmp"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["groups"][0]["final"]["iqm"] == pytest.approx(65.0)
    assert (tmp_path / "cmp" / "compare.png").is_file()


@pytest.mark.parametrize("problem", ["missing", "corrupt", "empty", "bad-score"])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, problem: str) -> None:
    target = tmp_path / "runs"
    args = ["compare", str(target), "--out", str(tmp_path / "cmp")]
    if problem == "corrupt":
        make_stage_run(target / "r0", "pretrain", -300.0, seed=0)
        (target / "r0" / "summary.json").write_text("{not json")
    elif problem == "empty":
        target.mkdir()
    elif problem == "bad-score":
        make_stage_run(target / "r0", "pretrain", -300.0, seed=0)
        args += ["--score", "median"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("error: ")
    expected = {"missing": "no such run directory", "corrupt": "summary.json: not valid JSON", "empty": "holds no run directory",
                "bad-score": "field 'score'"}[problem]
    assert expected in message
    assert not (tmp_path / "cmp").exists()
