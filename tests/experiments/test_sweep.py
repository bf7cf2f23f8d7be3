"""`dime-offline sweep`: planning trials from a sweep file, resuming, and real sweeps on Ray Tune."""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from dime_offline_cli.main import app
from run_factories import TINY_AGENT, make_stage_run
from typer.testing import CliRunner
from wandb_files import wandb_run

import dime_offline.sweep as sweep_module
from dime_offline.agent.dime import DIMEAgent
from dime_offline.config import from_dict, load_config
from dime_offline.errors import ConfigError
from dime_offline.sweep import (
    SchedulerConfig,
    SweepConfig,
    Trial,
    plan_trials,
    run_trial,
    sweep,
)
from dime_offline.trainers.offline import PretrainConfig, pretrain

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"
TINY_PRETRAIN = {"data": str(SAMPLE), "steps": 2, "eval_every": 0, "eval_episodes": 1, "max_episode_steps": 20,
                 "tensorboard": False, "checkpoint_every": 0}


def test_a_grid_plans_every_setting_at_every_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLE.parents[2])  # the data path relative to the repository root, as a user writes it
    cfg = SweepConfig(
        command="run", base={"data": "datasets/samples/pendulum-medium-replay-dime.parquet", "finetune_steps": 50, "agent": {"batch_size": 64}},
        parameters={"offline.conservative_weight": [0.3, 1.0], "agent.utd": [1, 2]}, seeds=[0, 1, 2], out_dir=str(tmp_path / "sw"),
    )
    trials = plan_trials(cfg)
    assert len(trials) == 12
    assert [t.name for t in trials[:4]] == ["s000-seed0", "s000-seed1", "s000-seed2", "s001-seed0"]
    first, last = trials[0], trials[-1]
    assert first.setting == {"offline.conservative_weight": 0.3, "agent.utd": 1} and first.seed == 0
    assert last.setting == {"offline.conservative_weight": 1.0, "agent.utd": 2} and last.seed == 2
    assert last.config["offline"]["conservative_weight"] == 1.0 and last.config["agent"] == {"batch_size": 64, "utd": 2}
    assert last.config["finetune_steps"] == 50 and last.config["seed"] == 2 and last.config["torch_threads"] == 1
    assert last.config["data"] == str(SAMPLE)  # absolute: a trial runs in another working directory
    assert last.run_dir == (tmp_path / "sw" / "trials" / "s003-seed2").resolve()


def test_random_search_draws_reproducibly_within_bounds(tmp_path: Path) -> None:
    parameters = {"offline.conservative_weight": {"loguniform": [0.01, 10.0]}, "agent.utd": {"randint": [1, 3]},
                  "offline.behaviour_weight": [0.0, 0.1]}
    cfg = SweepConfig(command="pretrain", base={"data": str(SAMPLE)}, parameters=parameters, search="random", samples=6,
                      seeds=[0], out_dir=str(tmp_path))
    settings = [t.setting for t in plan_trials(cfg)]
    assert len(settings) == 6 and settings == [t.setting for t in plan_trials(cfg)]
    assert all(0.01 <= s["offline.conservative_weight"] <= 10.0 and s["agent.utd"] in (1, 2, 3) for s in settings)
    assert {s["offline.behaviour_weight"] for s in settings} <= {0.0, 0.1}
    other = SweepConfig(command="pretrain", base={"data": str(SAMPLE)}, parameters=parameters, search="random", samples=6,
                        seeds=[0], out_dir=str(tmp_path), search_seed=1)
    assert [t.setting for t in plan_trials(other)] != settings


@pytest.mark.parametrize(("parameters", "search", "expected"), [
    ({"offline.nope": [1]}, "grid", "unknown field 'offline.nope'"),
    ({"agent.nope": [1]}, "grid", "unknown field 'agent.nope'"),
    ({"steps": [0]}, "grid", "field 'steps': must be >= 1"),
    ({"agent.utd": {"uniform": [1, 2]}}, "grid", "a distribution needs search: random"),
    ({"agent.utd": {"normal": [1, 2]}}, "random", "parameter 'agent.utd': expected a list of values or one of"),
    ({"agent.utd": []}, "grid", "expected a non-empty list"),
    ({"offline.alpha": {"loguniform": [0, 1]}}, "random", "loguniform needs numbers low <= high above 0"),
    ({"offline.alpha": {"uniform": ["a", 1]}}, "random", "uniform needs numbers low <= high"),
])
def test_bad_parameters_fail_before_anything_runs(tmp_path: Path, parameters: dict[str, Any], search: str, expected: str) -> None:
    cfg = SweepConfig(command="pretrain", base={"data": str(SAMPLE)}, parameters=parameters, search=search, out_dir=str(tmp_path / "sw"))
    with pytest.raises(ConfigError, match=expected):
        sweep(cfg)
    assert not (tmp_path / "sw").exists()


def _fake_tune(ran: list[list[str]]) -> Any:
    """Stands in for Ray Tune: each trial 'finishes' with a known score, and the names run are recorded."""

    def run(trials: list[Trial], cfg: SweepConfig, out: Path, group: dict[str, Any]) -> dict[str, str]:
        ran.append([t.name for t in trials])
        for t in trials:
            make_stage_run(t.run_dir, "pretrain", -500.0 + 100.0 * t.seed, seed=t.seed, **{
                k: v for k, v in t.config.items() if k not in ("seed", "data")})
        return {}

    return run


def test_resume_keeps_finished_trials_and_reruns_the_others(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[list[str]] = []
    monkeypatch.setattr(sweep_module, "_run_on_tune", _fake_tune(ran))
    cfg = SweepConfig(command="pretrain", base=TINY_PRETRAIN, parameters={"offline.conservative_weight": [0.3, 1.0]},
                      seeds=[0, 1], out_dir=str(tmp_path / "sw"))
    result = sweep(cfg)
    assert ran == [["s000-seed0", "s000-seed1", "s001-seed0", "s001-seed1"]]
    assert [t.status for t in result.trials] == ["finished"] * 4
    assert result.comparison is not None and len(result.comparison.groups) == 2
    assert (tmp_path / "sw" / "compare" / "compare.png").is_file()

    with pytest.raises(ConfigError, match="already holds a sweep"):
        sweep(cfg)
    interrupted = tmp_path / "sw" / "trials" / "s001-seed0"
    (interrupted / "summary.json").unlink()
    stopped = tmp_path / "sw" / "trials" / "s000-seed1"
    (stopped / "summary.json").unlink()
    (stopped / "stopped.json").write_text("{}")  # ASHA stopped it: resuming keeps that decision
    result = sweep(SweepConfig(**{**cfg.__dict__, "resume": True}))
    assert ran[-1] == ["s001-seed0"]
    assert [t.status for t in result.trials] == ["kept", "kept", "finished", "kept"]
    assert result.comparison is not None
    assert result.comparison.notices == [f"skipped {stopped.resolve()}: stopped early by the sweep's scheduler"]

    changed = SweepConfig(**{**cfg.__dict__, "resume": True, "seeds": [0, 1, 2]})
    with pytest.raises(ConfigError, match="the sweep changed since it started"):
        sweep(changed)


def test_cli_without_ray_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({"command": "pretrain", "base": TINY_PRETRAIN, "seeds": [0]}))
    result = CliRunner().invoke(app, ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "sw")])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: Ray Tune is not installed; install the extra with: pip install 'dime-offline[ray]'"


def test_cli_bad_sweep_file_is_one_line(tmp_path: Path) -> None:
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text("command: train\n")
    result = CliRunner().invoke(app, ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "sw")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "field 'command'" in result.stderr and "sweep.yaml" in result.stderr


def test_a_sweep_on_ray_tune_writes_normal_run_directories(tmp_path: Path) -> None:
    """Two settings x one seed of a tiny pretrain, side by side on local Ray (one CPU and thread each)."""
    pytest.importorskip("ray", reason="the ray extra is optional: pip install 'dime-offline[ray]'")
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "command": "pretrain", "base": TINY_PRETRAIN, "parameters": {"offline.conservative_weight": [0.3, 1.0]}, "seeds": [0],
    }))
    result = CliRunner().invoke(app, ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "sw"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [t["status"] for t in summary["trials"]] == ["finished", "finished"]
    for name, weight in (("s000-seed0", 0.3), ("s001-seed0", 1.0)):
        run = tmp_path / "sw" / "trials" / name
        assert json.loads((run / "summary.json").read_text())["updates"] == 2
        config = json.loads((run / "pretrain_config.json").read_text())
        assert config["offline"]["conservative_weight"] == weight and config["torch_threads"] == 1
        assert (run / "checkpoint").is_dir()
    groups = summary["comparison"]["groups"]
    assert [g["setting"] for g in groups] == ["offline.conservative_weight=0.3", "offline.conservative_weight=1.0"]


@pytest.fixture
def tune_reports(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, float]]:
    """What trials report to a stand-in ``ray.tune.report`` (the trainable runs in this process, without Ray)."""
    reports: list[dict[str, float]] = []
    fake_ray = types.ModuleType("ray")
    fake_ray.tune = types.SimpleNamespace(report=reports.append)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    return reports


def test_a_trial_reports_each_evaluation_and_writes_its_error_in_one_line(tmp_path: Path, tune_reports: list[dict[str, float]]) -> None:
    """The trainable without Ray: a stand-in ``ray.tune.report`` receives the score of every evaluation."""
    reports = tune_reports
    cfg = SweepConfig(command="pretrain", base={**TINY_PRETRAIN, "eval_every": 1}, seeds=[3], out_dir=str(tmp_path / "sw"))
    trial = plan_trials(cfg)[0]
    run_trial({"trial": trial.name}, trials={trial.name: trial.to_dict()})
    evaluations = [row for row in csv.DictReader((trial.run_dir / "metrics.csv").open()) if row["key"] == "eval/return_mean"]
    assert reports == [{"score": float(row["value"]), "evaluations": number, "step": int(row["step"])}
                       for number, row in enumerate(evaluations, start=1)]
    assert [r["step"] for r in reports] == [1, 2]
    assert json.loads((trial.run_dir / "trial.json").read_text())["seed"] == 3
    assert (trial.run_dir / "summary.json").is_file() and not (trial.run_dir / "error.txt").exists()

    (tmp_path / "gone.parquet").write_bytes(SAMPLE.read_bytes())
    broken = SweepConfig(command="pretrain", base={**TINY_PRETRAIN, "data": str(tmp_path / "gone.parquet")}, seeds=[0],
                         out_dir=str(tmp_path / "sw2"))
    trial = plan_trials(broken)[0]
    (tmp_path / "gone.parquet").unlink()  # the data went away between planning and running
    run_trial({"trial": trial.name}, trials={trial.name: trial.to_dict()})
    error = (trial.run_dir / "error.txt").read_text()
    assert error.count("\n") == 1 and "gone.parquet" in error


class Killed(Exception):
    """Stands for SIGKILL of a trial's worker: the run dies where it is, with no clean-up."""


def _tune_in_process(trials: list[Trial], cfg: SweepConfig, out: Path, group: dict[str, Any]) -> dict[str, str]:
    """Stands in for Ray Tune: each trial through the real trainable, in this process; a killed one fails."""
    errors = {}
    for trial in trials:
        try:
            run_trial({"trial": trial.name}, trials={trial.name: trial.to_dict()}, resume=cfg.resume, group=group)
        except Killed:
            errors[trial.name] = "killed"
    return errors


def _counted_updates(monkeypatch: pytest.MonkeyPatch, *, kill_at: int | None) -> dict[str, int]:
    """Count the agent's updates from now on; the ``kill_at``-th raises :class:`Killed`."""
    original, calls = DIMEAgent.update, {"n": 0}

    def update(self: DIMEAgent, batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == kill_at:
            raise Killed
        return original(self, batch)

    monkeypatch.setattr(DIMEAgent, "update", update)
    return calls


RESUMABLE = {**TINY_PRETRAIN, "steps": 12, "eval_every": 4, "checkpoint_every": 5, "log_every": 2, "agent": TINY_AGENT}
"""A trial with evaluations at 4, 8, 12 and a periodic checkpoint at 5 (and 10)."""


def _interrupted_sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[SweepConfig, Path]:
    """A one-trial sweep whose trial is killed at its 8th update, after the checkpoint at step 5."""
    cfg = SweepConfig(command="pretrain", base=RESUMABLE, seeds=[0], out_dir=str(tmp_path / "sw"), quiet=True)
    with monkeypatch.context() as patch:
        patch.setattr(sweep_module, "_run_on_tune", _tune_in_process)
        _counted_updates(patch, kill_at=8)
        result = sweep(cfg)
    run = tmp_path / "sw" / "trials" / "s000-seed0"
    assert [t.status for t in result.trials] == ["failed"] and not (run / "summary.json").exists()
    assert json.loads((run / "checkpoint" / "meta.json").read_text())["extra"]["gradient_steps"] == 5
    return cfg, run


def _metrics_without_time(run: Path) -> list[tuple[str, str, str]]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return [(r["step"], r["key"], r["value"]) for r in rows if r["key"] != "train/updates_per_second"]


def test_a_resumed_sweep_continues_an_interrupted_trial_from_its_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tune_reports: list[dict[str, float]]
) -> None:
    cfg, run = _interrupted_sweep(tmp_path, monkeypatch)
    tune_reports.clear()
    monkeypatch.setattr(sweep_module, "_run_on_tune", _tune_in_process)
    updates = _counted_updates(monkeypatch, kill_at=None)
    result = sweep(dataclasses.replace(cfg, resume=True))
    assert [t.status for t in result.trials] == ["finished"]
    assert updates["n"] == 12 - 5  # steps 6-12: continued from the checkpoint, not started over
    assert [(r["evaluations"], r["step"]) for r in tune_reports] == [(2, 8), (3, 12)]  # the count goes on after step 4's
    whole = sweep(dataclasses.replace(cfg, out_dir=str(tmp_path / "whole")))
    assert _metrics_without_time(run) == _metrics_without_time(Path(whole.trials[0].run_dir))
    again = sweep(dataclasses.replace(cfg, resume=True))
    assert [t.status for t in again.trials] == ["kept"]


@pytest.mark.slow
def test_a_sweep_resumed_on_ray_tune_continues_the_interrupted_trial(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tune_reports: list[dict[str, float]]
) -> None:
    """The same on Ray Tune: the rows the killed session wrote up to its checkpoint stay as they were
    (a marked wall-clock value proves it), the rest equals an uninterrupted trial."""
    cfg, run = _interrupted_sweep(tmp_path, monkeypatch)
    monkeypatch.delitem(sys.modules, "ray")  # the real Ray from here on
    pytest.importorskip("ray", reason="the ray extra is optional: pip install 'dime-offline[ray]'")
    data = (run / "metrics.csv").read_bytes()
    start = data.index(b"\n") + 1
    end = data.index(b"\n", start)
    step, wall, rest = data[start:end].split(b",", 2)
    marked = b",".join((step, b"9" * len(wall), rest))  # as long as before: the checkpoint's byte position holds
    (run / "metrics.csv").write_bytes(data[:start] + marked + data[end:])
    result = sweep(dataclasses.replace(cfg, resume=True))
    assert [t.status for t in result.trials] == ["finished"], result.trials
    assert (run / "metrics.csv").read_bytes()[start:end] == marked
    reference = tmp_path / "whole"
    pretrain(from_dict(PretrainConfig, {**Trial(**json.loads((run / "trial.json").read_text())).config, "out_dir": str(reference)}))
    assert _metrics_without_time(run) == _metrics_without_time(reference)


@pytest.mark.slow
def test_asha_stops_lagging_trials_and_resume_keeps_its_decisions(tmp_path: Path) -> None:
    """Four settings, eight evaluations each: ASHA (rungs at 1, 2, 4 evaluations, keeping the better half)
    stops some trials; each stopped one is marked, compared as skipped, and not rerun by a resume."""
    pytest.importorskip("ray", reason="the ray extra is optional: pip install 'dime-offline[ray]'")
    cfg = SweepConfig(
        command="pretrain", base={**TINY_PRETRAIN, "steps": 8, "eval_every": 1},
        parameters={"offline.conservative_weight": [0.1, 0.3, 1.0, 3.0]}, seeds=[0],
        scheduler=SchedulerConfig(kind="asha", grace_period=1, reduction_factor=2), out_dir=str(tmp_path / "sw"), quiet=True,
    )
    result = sweep(cfg)
    statuses = {t.name: t.status for t in result.trials}
    stopped = [name for name, status in statuses.items() if status == "stopped"]
    assert stopped and "failed" not in statuses.values() and "finished" in statuses.values()
    for name in stopped:
        run = tmp_path / "sw" / "trials" / name
        assert (run / "stopped.json").is_file() and not (run / "summary.json").exists()
    assert result.comparison is not None and len(result.comparison.notices) == len(stopped)
    again = sweep(SweepConfig(**{**cfg.__dict__, "resume": True}))
    assert all(t.status == "kept" for t in again.trials)


@pytest.mark.slow
def test_the_same_sweep_file_runs_on_a_cluster_started_with_ray_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ray start --head` in the foreground (--block), the sweep attached with --address, the head stopped by its pid."""
    pytest.importorskip("ray", reason="the ray extra is optional: pip install 'dime-offline[ray]'")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_cli = Path(sys.executable).with_name("ray")
    log = tmp_path / "head.log"
    with log.open("w") as out:
        head = subprocess.Popen([str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
                                 "--include-dashboard=false", f"--temp-dir=/tmp/ray-{port}"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "block forever" not in log.read_text() and time.monotonic() < deadline and head.poll() is None:
            time.sleep(1)
        assert "block forever" in log.read_text(), log.read_text()[-2000:]
        monkeypatch.setenv("RAY_AUTH_MODE", "token")  # the head uses token authentication (Ray >= 2.59)
        sweep_file = tmp_path / "sweep.yaml"
        sweep_file.write_text(yaml.safe_dump({
            "command": "pretrain", "base": TINY_PRETRAIN, "parameters": {"offline.conservative_weight": [0.3, 1.0]}, "seeds": [0],
        }))
        result = CliRunner().invoke(app, ["sweep", "--config", str(sweep_file), "--out", str(tmp_path / "sw"),
                                          "--address", f"127.0.0.1:{port}", "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert [t["status"] for t in summary["trials"]] == ["finished", "finished"]
        assert len(summary["comparison"]["groups"]) == 2
    finally:
        head.terminate()  # --block tears the head's processes down on SIGTERM
        head.wait(timeout=60)
        shutil.rmtree(f"/tmp/ray-{port}", ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# Trials grouped in the experiment trackers

WEIGHTS = {"offline.conservative_weight": [0.3, 1.0]}


def _tracked_sweep(tmp_path: Path, trackers: list[str], **fields: Any) -> SweepConfig:
    return SweepConfig(command="pretrain", base={**TINY_PRETRAIN, "trackers": trackers}, parameters=WEIGHTS,
                       out_dir=str(tmp_path / "pendulum-cw"), quiet=True, **fields)


def _mlflow_sweep_runs(sweep_dir: Path) -> tuple[Any, list[Any]]:
    """The sweep's own MLflow run (its id from the sweep folder's trackers.json) and the runs nested under it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    parent = client.get_run(json.loads((sweep_dir / "trackers.json").read_text())["mlflow"]["run_id"])
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, sorted(children, key=lambda run: run.data.tags["dime_offline.trial"])


def _assert_trial_runs(children: list[Any], sweep_dir: Path, sweep_name: str, expected: list[tuple[str, float, int]]) -> None:
    """Each trial's MLflow run: tagged with the sweep, trial, setting and seed, its config's values as parameters."""
    assert [run.data.tags["dime_offline.trial"] for run in children] == [trial for trial, _, _ in expected]
    for run, (trial, weight, seed) in zip(children, expected, strict=True):
        tags, params = run.data.tags, run.data.params
        assert tags["dime_offline.sweep"] == sweep_name and tags["dime_offline.stage"] == "pretrain"
        assert tags["dime_offline.setting"] == f"offline.conservative_weight={weight}" and tags["dime_offline.seed"] == str(seed)
        assert params["offline.conservative_weight"] == str(weight) and params["seed"] == str(seed)
        assert tags["dime_offline.run_dir"] == str(sweep_dir / "trials" / trial) and run.info.status == "FINISHED"


@pytest.mark.usefixtures("mlflow_store", "tune_reports")  # the trials run in this process, without Ray
def test_mlflow_runs_of_a_sweeps_trials_nest_under_the_sweeps_own_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    monkeypatch.setattr(sweep_module, "_run_on_tune", _tune_in_process)
    cfg = _tracked_sweep(tmp_path, ["mlflow"], seeds=[0, 1], name="weights")
    result = sweep(cfg)
    assert [t.status for t in result.trials] == ["finished"] * 4
    sweep_dir = Path(result.out_dir)
    parent, children = _mlflow_sweep_runs(sweep_dir)
    experiment = MlflowClient().get_experiment_by_name("tests")  # MLFLOW_EXPERIMENT_NAME
    assert parent.info.experiment_id == experiment.experiment_id and parent.info.run_name == "weights"
    assert parent.info.status == "FINISHED" and parent.data.tags["dime_offline.stage"] == "sweep"
    assert parent.data.params["parameters.offline.conservative_weight"] == "[0.3, 1.0]" and parent.data.params["seeds"] == "[0, 1]"
    assert parent.data.tags["dime_offline.compare_json"] == str(sweep_dir / "compare" / "compare.json")
    _assert_trial_runs(children, sweep_dir, "weights", [("s000-seed0", 0.3, 0), ("s000-seed1", 0.3, 1),
                                                        ("s001-seed0", 1.0, 0), ("s001-seed1", 1.0, 1)])
    assert len(MlflowClient().search_runs([experiment.experiment_id])) == 5  # the sweep's run and its trials', nothing else

    again = sweep(dataclasses.replace(cfg, resume=True))
    assert [t.status for t in again.trials] == ["kept"] * 4
    assert len(MlflowClient().search_runs([experiment.experiment_id])) == 5  # the resumed sweep continued its run
    assert MlflowClient().get_run(parent.info.run_id).info.status == "FINISHED"

    monkeypatch.setattr(sweep_module, "_run_on_tune", lambda trials, cfg, out, group: {})  # every trial ends without a summary
    failed = sweep(dataclasses.replace(cfg, out_dir=str(tmp_path / "failing")))
    assert len(failed.failed) == 4
    assert _mlflow_sweep_runs(tmp_path / "failing")[0].info.status == "FAILED"


@pytest.mark.usefixtures("wandb_offline", "tune_reports")
def test_wandb_runs_of_a_sweeps_trials_share_its_group_tagged_with_setting_and_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sweep_module, "_run_on_tune", _tune_in_process)
    result = sweep(_tracked_sweep(tmp_path, ["wandb"], seeds=[0]))
    assert [t.status for t in result.trials] == ["finished"] * 2
    for trial, weight in (("s000-seed0", 0.3), ("s001-seed0", 1.0)):
        run_dir = Path(result.out_dir) / "trials" / trial
        run = wandb_run(run_dir, json.loads((run_dir / "trackers.json").read_text())["wandb"]["run_id"])
        assert run["group"] == "pendulum-cw"  # the output folder's name: the sweep file names none
        assert run["job_type"] == "pretrain" and run["tags"] == [f"offline.conservative_weight={weight}", "seed=0"]
        assert run["exit_codes"] == [0] and run["config"]["offline"]["conservative_weight"] == weight
    assert not (Path(result.out_dir) / "trackers.json").exists()  # without MLflow the sweep opens no run of its own


@pytest.mark.slow
@pytest.mark.usefixtures("mlflow_store", "wandb_offline")
def test_trials_on_ray_tune_log_into_the_sweeps_groups(tmp_path: Path) -> None:
    """The grouping reaches the trials in Ray's worker processes (both trackers at once)."""
    pytest.importorskip("ray", reason="the ray extra is optional: pip install 'dime-offline[ray]'")
    result = sweep(_tracked_sweep(tmp_path, ["mlflow", "wandb"], seeds=[0], name="on-ray"))
    assert [t.status for t in result.trials] == ["finished"] * 2
    sweep_dir = Path(result.out_dir)
    parent, children = _mlflow_sweep_runs(sweep_dir)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "on-ray"
    _assert_trial_runs(children, sweep_dir, "on-ray", [("s000-seed0", 0.3, 0), ("s001-seed0", 1.0, 0)])
    for trial in ("s000-seed0", "s001-seed0"):
        run_dir = sweep_dir / "trials" / trial
        assert wandb_run(run_dir, json.loads((run_dir / "trackers.json").read_text())["wandb"]["run_id"])["group"] == "on-ray"


@pytest.mark.parametrize("path", sorted((SAMPLE.parents[2] / "docs" / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_sweep_file_plans(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweep files in docs/sweeps name only fields their command has (a renamed field fails here)."""
    monkeypatch.chdir(SAMPLE.parents[2])
    cfg = load_config(SweepConfig, path, [f"out_dir={tmp_path / 'sw'}"])
    trials = plan_trials(cfg)
    assert len(trials) == len(cfg.seeds) * len(sweep_module._settings(cfg)) > 0
