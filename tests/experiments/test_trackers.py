"""MLflow and Weights & Biases sinks: the real packages against a local store (MLflow) and offline run
files (W&B), each read back and compared to metrics.csv; a killed run resumed into the same tracker
run; and, without either package, the one-line error naming the extra."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from dime_offline_cli.main import app
from run_factories import TINY_AGENT
from typer.testing import CliRunner
from wandb_files import wandb_run

from dime_offline.agent.dime import DIMEAgent
from dime_offline.errors import ConfigError, TrackerError
from dime_offline.regularizers import OfflineConfig
from dime_offline.sweep import SweepConfig, sweep
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.offline import PretrainConfig, pretrain

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"
TIMING_KEY = "train/updates_per_second"
"""Measures wall time: a resumed session logs it again with another value."""
HIDE = {"mlflow": ("mlflow", "mlflow.tracking"), "wandb": ("wandb",)}
"""Modules to hide from the import system, as if the extra were not installed."""


class Killed(Exception):
    """Stands for SIGKILL: the run dies where it is, after its periodic checkpoint at step 8."""


def _pretrain_cfg(out: Path, trackers: list[str]) -> PretrainConfig:
    return PretrainConfig(
        data=str(SAMPLE), steps=16, out_dir=str(out), agent=dict(TINY_AGENT), eval_every=10, eval_episodes=1,
        max_episode_steps=20, checkpoint_every=8, log_every=4, tensorboard=False, quiet=True, trackers=trackers,
        offline=OfflineConfig(conservative_weight=0.5, n_actions=2),
    )


def _killed_then_resumed(cfg: PretrainConfig, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Run ``cfg`` killed at its 13th update (after the checkpoint at 8 and the log at 12, which reached
    the trackers), then resume it; returns trackers.json as the killed session left it."""
    original, calls = DIMEAgent.update, {"n": 0}

    def dying_update(self: DIMEAgent, batch: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 13:
            raise Killed
        return original(self, batch)

    with monkeypatch.context() as patch:
        patch.setattr(DIMEAgent, "update", dying_update)
        with pytest.raises(Killed):
            pretrain(cfg)
    first = json.loads((Path(cfg.out_dir) / "trackers.json").read_text())
    # W&B names an offline session's folder by its start time to the second; a resume within the same
    # second as the killed session would write into that session's folder (seen as one session).
    time.sleep(1.01 - time.time() % 1.0)
    pretrain(dataclasses.replace(cfg, resume=True))
    return first


def _csv_points(out: Path) -> dict[str, set[tuple[int, float]]]:
    return {key: set(zip(steps.tolist(), values.tolist(), strict=True)) for key, (steps, values) in read_metrics_csv(out / "metrics.csv").items()}


def _assert_same_points(logged: dict[str, set[tuple[int, float]]], out: Path) -> None:
    """Every metric of metrics.csv at the same steps with the same values (a resumed session logs the
    steps after the checkpoint again, equal to the first session's: the resume is exact on CPU)."""
    expected = _csv_points(out)
    assert set(logged) == set(expected)
    for key, points in expected.items():
        if key == TIMING_KEY:
            assert {step for step, _ in logged[key]} == {step for step, _ in points}
        else:
            assert logged[key] == points, key


@pytest.mark.usefixtures("mlflow_store")
def test_mlflow_run_holds_the_config_metrics_and_outputs_and_a_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    out = tmp_path / "run"
    first = _killed_then_resumed(_pretrain_cfg(out, ["mlflow"]), monkeypatch)

    client = MlflowClient()
    run_id = first["mlflow"]["run_id"]
    assert json.loads((out / "trackers.json").read_text())["mlflow"]["run_id"] == run_id
    experiment = client.get_experiment_by_name("tests")
    assert [run.info.run_id for run in client.search_runs([experiment.experiment_id])] == [run_id]  # continued, not a second run
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == f"{tmp_path.name}/run"
    params = run.data.params
    assert params["steps"] == "16" and params["offline.conservative_weight"] == "0.5" and params["agent.batch_size"] == "32"
    assert params["trackers"] == '["mlflow"]' and params["data"] == str(SAMPLE) and params["env_id"] == "null"
    tags = run.data.tags
    assert tags["dime_offline.summary_file"] == str(out.resolve() / "summary.json")
    assert tags["dime_offline.checkpoint_dir"] == str(out.resolve() / "checkpoint")
    assert tags["dime_offline.stage"] == "pretrain"
    logged = {key: {(m.step, m.value) for m in client.get_metric_history(run_id, key)} for key in run.data.metrics}
    _assert_same_points(logged, out)
    steps = [m.step for m in client.get_metric_history(run_id, "train/critic/loss")]
    assert steps == [4, 8, 12, 12, 16]  # step 12 from the killed session and again from the resumed one


@pytest.mark.usefixtures("mlflow_store")
def test_mlflow_marks_a_run_that_fails_and_one_interrupted(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from dime_offline.errors import RunInterruptedError
    from dime_offline.trackers import open_tracker_sinks
    from dime_offline.tracking import Tracker

    statuses = []
    for error in (ValueError("a bug"), RunInterruptedError("interrupted")):
        sinks, _ = open_tracker_sinks(tmp_path, ["mlflow"], run_config={"seed": 0}, stage="pretrain", resume=False)
        tracker = Tracker(list(sinks))
        with pytest.raises(type(error)):
            try:
                tracker.log(1, {"train/x": 1.0})
                raise error
            finally:
                tracker.close()
        statuses.append(MlflowClient().get_run(sinks[0].record["run_id"]).info.status)
    assert statuses == ["FAILED", "KILLED"]



@pytest.mark.usefixtures("wandb_offline")
def test_wandb_offline_run_holds_the_config_metrics_and_outputs_and_a_resume_continues_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    first = _killed_then_resumed(_pretrain_cfg(out, ["wandb"]), monkeypatch)
    run_id = first["wandb"]["run_id"]
    assert json.loads((out / "trackers.json").read_text())["wandb"] == {"run_id": run_id, "project": "dime-offline"}
    run = wandb_run(out, run_id)
    assert run["sessions"] == 2 and run["exit_codes"] == [1, 0]  # the killed session failed, the resumed one finished
    _assert_same_points(run["history"], out)
    assert run["config"]["steps"] == 16 and run["config"]["offline"]["conservative_weight"] == 0.5
    assert run["summary"]["summary_file"] == str(out.resolve() / "summary.json")
    assert run["summary"]["checkpoint_dir"] == str(out.resolve() / "checkpoint")


@pytest.mark.usefixtures("wandb_offline")
def test_cli_run_logs_each_stage_to_its_own_tracker_run_and_stdout_stays_one_json_object(tmp_path: Path) -> None:
    sets = [f"agent.{key}={value}" for key, value in TINY_AGENT.items()]
    sets += ["pretrain_steps=4", "finetune_steps=4", "evaluations=1", "eval_episodes=1", "trackers=[wandb]"]
    result = CliRunner().invoke(app, ["run", "--data", str(SAMPLE), "--out", str(tmp_path / "run"), "--json",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1 and json.loads(result.stdout)["command"] == "run"
    ids = set()
    for stage in ("pretrain", "finetune"):
        out = tmp_path / "run" / stage
        run_id = json.loads((out / "trackers.json").read_text())["wandb"]["run_id"]
        ids.add(run_id)
        run = wandb_run(out, run_id)
        assert run["sessions"] == 1 and run["exit_codes"] == [0]
        _assert_same_points(run["history"], out)
        assert run["summary"]["summary_file"] == str(out.resolve() / "summary.json")
    assert len(ids) == 2


@pytest.mark.parametrize(("args", "missing"), [
    (["pretrain", "--data", str(SAMPLE), "--set", "trackers=[mlflow]"], "mlflow"),
    (["finetune", "--env", "Pendulum-v1", "--set", "trackers=[wandb]"], "wandb"),
    (["run", "--data", str(SAMPLE), "--set", "trackers=[wandb, mlflow]"], "wandb"),
])
def test_a_missing_tracker_package_is_one_line_naming_the_extra_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], missing: str
) -> None:
    for name in HIDE["mlflow"] + HIDE["wandb"]:
        monkeypatch.setitem(sys.modules, name, None)  # the import fails, as without the extras
    out = tmp_path / "run"
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    label = {"mlflow": "MLflow", "wandb": "Weights & Biases"}[missing]
    assert result.stderr == (f"error: {label} is not installed (field 'trackers' names {missing}); "
                             f"install the extra with: pip install 'dime-offline[{missing}]'\n")
    assert not out.exists()


def test_a_sweep_naming_a_missing_tracker_stops_before_it_plans_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    cfg = SweepConfig(command="pretrain", base={"data": str(SAMPLE), "trackers": ["mlflow"]}, seeds=[0], out_dir=str(tmp_path / "sw"))
    with pytest.raises(TrackerError, match=r"pip install 'dime-offline\[mlflow\]'"):
        sweep(cfg)
    assert not (tmp_path / "sw").exists()


def test_overwrite_removes_the_tracker_run_ids_and_wandb_files_and_a_lone_wandb_folder_is_no_run(tmp_path: Path) -> None:
    from dime_offline.trainers.loop import check_run_dir, start_run_dir

    out = tmp_path / "run"
    (out / "wandb" / "offline-run-1-abc").mkdir(parents=True)  # left by a run whose other tracker refused to open
    assert check_run_dir(str(out), overwrite=False) == out
    (out / "trackers.json").write_text('{"wandb": {"run_id": "abc", "project": "p"}}')
    with pytest.raises(ConfigError, match="already holds a run"):
        check_run_dir(str(out), overwrite=False)
    (out / "notes.txt").write_text("mine")
    start_run_dir(check_run_dir(str(out), overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # a new run starts new tracker runs


@pytest.mark.usefixtures("mlflow_store")
def test_a_recorded_mlflow_run_that_cannot_be_continued_gives_a_notice_and_a_new_run(tmp_path: Path) -> None:
    from dime_offline.trackers import open_tracker_sinks

    gone = {"run_id": "0" * 32, "tracking_uri": (tmp_path / "mlruns").as_uri()}
    (tmp_path / "trackers.json").write_text(json.dumps({"mlflow": gone}))
    sinks, notices = open_tracker_sinks(tmp_path, ["mlflow"], run_config={}, stage="finetune", resume=True)
    new_id = sinks[0].record["run_id"]
    sinks[0].close()
    assert new_id != gone["run_id"] and json.loads((tmp_path / "trackers.json").read_text())["mlflow"]["run_id"] == new_id
    assert len(notices) == 1 and notices[0].startswith(f"MLflow run {gone['run_id']} at ") and notices[0].endswith("logging to a new run")


@pytest.mark.parametrize("content", ["{not json", '{"mlflow": "abc"}', "[]"])
def test_damaged_tracker_run_ids_are_one_line_naming_the_file(tmp_path: Path, content: str) -> None:
    from dime_offline.trackers import open_tracker_sinks

    (tmp_path / "trackers.json").write_text(content)
    with pytest.raises(TrackerError, match=r"trackers\.json: unreadable tracker run ids .*delete the file") as caught:
        open_tracker_sinks(tmp_path, ["mlflow"], run_config={}, stage="pretrain", resume=True)
    assert "\n" not in caught.value.one_line()


def test_a_trials_wandb_tags_name_each_swept_field_and_the_seed_within_the_length_limit() -> None:
    from dime_offline.trackers import WANDB_TAG_LIMIT, TrackerGroup

    long_id = "CSTR-" + "x" * 80
    group = TrackerGroup(sweep="s", trial="s003-seed2", seed=2,
                         setting={"data": str(SAMPLE), "agent.critic_hidden": [64, 64], "env_id": long_id})
    assert group.wandb_tags() == ["data=pendulum-medium-replay-dime.parquet", "agent.critic_hidden=[64, 64]",
                                  f"env_id={long_id}"[:WANDB_TAG_LIMIT], "seed=2"]  # W&B refuses a longer tag
    assert group.mlflow_tags()["dime_offline.setting"] == f"data={SAMPLE}, agent.critic_hidden=[64, 64], env_id={long_id}"
    assert "mlflow.parentRunId" not in group.mlflow_tags()  # no sweep run to nest under
    assert TrackerGroup(sweep="s", trial="s000-seed0", setting={}, seed=0).setting_label == "base"
