"""The shared training cadence and run-config loading."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
import torch

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.config import load_run_config, resolve_agent_config
from dime_offline.errors import ConfigError, RunInterruptedError, TrainingDivergedError
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.tracking import CSVSink, ProgressDisplay, Tracker, read_metrics_csv
from dime_offline.trainers.collect import CollectConfig
from dime_offline.trainers.evaluate import EvaluateConfig
from dime_offline.trainers.loop import (
    Cadence,
    LoopResult,
    StepReport,
    run_loop,
)
from dime_offline.trainers.offline import PretrainConfig
from dime_offline.trainers.online import FinetuneConfig
from dime_offline.trainers.pipeline import PipelineConfig
from dime_offline.types import Batch


def _stats(value: float) -> EpisodeStats:
    return EpisodeStats(returns=(value, value + 2.0), lengths=(10, 10), terminated=(False, True))


def _run(
    tmp_path: Path, cadence: Cadence, eval_returns: list[float], step_seconds: float = 0.0,
    fail_at: tuple[int, BaseException] | None = None, checkpoints: list[tuple[int, str]] | None = None,
) -> tuple[LoopResult, list[tuple[int, str]], list[int], dict]:
    checkpoints = [] if checkpoints is None else checkpoints
    evaluated: list[int] = []
    returns = iter(eval_returns)

    def step(current: int) -> StepReport:
        time.sleep(step_seconds)
        if fail_at is not None and current == fail_at[0]:
            raise fail_at[1]
        episodes = [(float(current), current)] if current % 4 == 0 else []
        return StepReport(updates=2, metrics={"train/value": float(current)}, episodes=episodes)

    def evaluate(current: int) -> EpisodeStats:
        evaluated.append(current)
        return _stats(next(returns))

    tracker = Tracker([CSVSink(tmp_path / "m.csv")])
    result = run_loop(
        cadence, step, tracker=tracker, progress=ProgressDisplay(cadence.total_steps, description="t", enabled=False),
        evaluate=evaluate, checkpoint=lambda s, tag: checkpoints.append((s, tag)),
    )
    tracker.close()
    return result, checkpoints, evaluated, read_metrics_csv(tmp_path / "m.csv")


def test_cadence_of_logs_evaluations_and_checkpoints(tmp_path: Path) -> None:
    cadence = Cadence(total_steps=10, eval_every=4, checkpoint_every=3, log_every=5)
    result, checkpoints, evaluated, metrics = _run(tmp_path, cadence, [1.0, 5.0, 3.0])
    assert evaluated == [4, 8, 10]  # every 4 steps plus the final policy
    # best after evaluations that improved, periodic every 3 steps, final once at the end
    assert checkpoints == [(3, "periodic"), (4, "best"), (6, "periodic"), (8, "best"), (9, "periodic"), (10, "final")]
    assert result.steps == 10 and result.updates == 20 and not result.stopped_by_time
    assert result.final.step == 10 and result.best.step == 8
    assert result.best.stats.return_mean == 6.0
    steps, values = metrics["train/value"]
    assert steps.tolist() == [5, 10]
    assert values.tolist() == [3.0, 8.0]  # means of 1..5 and 6..10
    assert metrics["train/episode_return"][0].tolist() == [4, 8]
    assert metrics["eval/return_mean"][0].tolist() == [4, 8, 10]
    assert "train/updates_per_second" in metrics


def test_ctrl_c_saves_the_completed_steps_and_exits_130(tmp_path: Path) -> None:
    cadence = Cadence(total_steps=10, eval_every=0, checkpoint_every=0, log_every=100)
    checkpoints: list[tuple[int, str]] = []
    with pytest.raises(RunInterruptedError, match="steps 1-6 are saved") as caught:
        _run(tmp_path, cadence, [], fail_at=(7, KeyboardInterrupt()), checkpoints=checkpoints)
    assert caught.value.exit_code == 130
    assert checkpoints == [(6, "final")]
    assert read_metrics_csv(tmp_path / "m.csv")["train/value"][0].tolist() == [6]  # the interval is flushed
    with pytest.raises(RunInterruptedError, match="nothing to save"):
        _run(tmp_path / "first", cadence, [], fail_at=(1, KeyboardInterrupt()), checkpoints=(none := []))
    assert none == []


def test_a_second_signal_stops_at_once_without_a_checkpoint(tmp_path: Path) -> None:
    """The second signal may land mid-step: a checkpoint then would record half a step as a whole one."""
    checkpoints: list[tuple[int, str]] = []

    def step(current: int) -> StepReport:
        if current == 5:
            os.kill(os.getpid(), signal.SIGINT)  # held until the step ends
            os.kill(os.getpid(), signal.SIGINT)  # stops here, mid-step
        return StepReport(updates=1, metrics={"train/value": 1.0})

    tracker = Tracker([CSVSink(tmp_path / "m.csv")])
    with pytest.raises(RunInterruptedError, match="second signal .* the run's checkpoint holds steps 1-3") as caught:
        run_loop(
            Cadence(total_steps=10, checkpoint_every=3, log_every=100), step, tracker=tracker,
            progress=ProgressDisplay(10, description="t", enabled=False), checkpoint=lambda s, tag: checkpoints.append((s, tag)),
        )
    tracker.close()
    assert caught.value.exit_code == 130 and checkpoints == [(3, "periodic")]


def test_a_signal_during_the_final_checkpoint_waits_for_it(tmp_path: Path) -> None:
    checkpoints: list[tuple[int, str]] = []

    def checkpoint(step: int, tag: str) -> None:
        if tag == "final":
            os.kill(os.getpid(), signal.SIGINT)  # held: the save goes on, and nothing is left to stop
        checkpoints.append((step, tag))

    tracker = Tracker([CSVSink(tmp_path / "m.csv")])
    result = run_loop(
        Cadence(total_steps=4, log_every=2), lambda current: StepReport(updates=1), tracker=tracker,
        progress=ProgressDisplay(4, description="t", enabled=False), checkpoint=checkpoint,
    )
    tracker.close()
    assert result.steps == 4 and checkpoints == [(4, "final")]


def test_divergence_stops_without_overwriting_the_last_good_checkpoint(tmp_path: Path) -> None:
    cadence = Cadence(total_steps=10, eval_every=0, checkpoint_every=3, log_every=100)
    checkpoints: list[tuple[int, str]] = []
    with pytest.raises(TrainingDivergedError, match="at step 8; the last good checkpoint is from step 6") as caught:
        _run(tmp_path, cadence, [], fail_at=(8, TrainingDivergedError("training diverged")), checkpoints=checkpoints)
    assert caught.value.exit_code == 2
    assert checkpoints == [(3, "periodic"), (6, "periodic")]  # no final checkpoint of the diverged state


def test_the_agent_refuses_to_update_on_non_finite_values() -> None:
    agent = DIMEAgent(3, 1, DIMEConfig.preset("cpu", critic_hidden=(16, 16), score_hidden=(16, 16)), seed=0)
    batch = Batch(obs=torch.randn(8, 3), action=torch.rand(8, 1) * 2 - 1, reward=torch.randn(8), next_obs=torch.randn(8, 3),
                  terminated=torch.zeros(8), truncated=torch.zeros(8), mc_return=torch.zeros(8), is_offline=torch.zeros(8))
    agent.update(batch)
    with torch.no_grad():
        next(agent.critic.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match="not finite"):
        agent.update(batch)


def test_wall_clock_budget_ends_with_a_final_evaluation_and_checkpoint(tmp_path: Path) -> None:
    cadence = Cadence(total_steps=100_000, eval_every=0, log_every=100, max_wall_seconds=0.2)
    result, checkpoints, evaluated, _ = _run(tmp_path, cadence, [1.0], step_seconds=0.01)
    assert result.stopped_by_time and 5 <= result.steps < 100_000
    assert evaluated == [result.steps]
    assert checkpoints == [(result.steps, "best"), (result.steps, "final")]


@pytest.mark.parametrize(
    "kwargs", [{"total_steps": 0}, {"total_steps": 5, "eval_every": -1}, {"total_steps": 5, "max_wall_seconds": 0.0}]
)
def test_cadence_rejects_nonsense(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        Cadence(**kwargs)


def test_run_config_precedence_file_then_flags_then_overrides(tmp_path: Path) -> None:
    config_file = tmp_path / "ft.yaml"
    config_file.write_text("env_id: Hopper-v4\nsteps: 10\nseed: 4\nagent:\n  utd: 3\n  gamma: 0.9\n")
    cfg = load_run_config(
        FinetuneConfig, str(config_file), ["seed=7", "agent.utd=1", "agent.critic_hidden=[64, 64]"],
        steps=20, env_id=None,
    )
    assert cfg.env_id == "Hopper-v4"  # from the file; a flag given as None does not override
    assert cfg.steps == 20  # flag beats the file
    assert cfg.seed == 7  # --set beats the file
    assert cfg.agent == {"utd": 1, "gamma": 0.9, "critic_hidden": [64, 64]}
    resolved = resolve_agent_config(DIMEConfig, DIMEConfig.preset("cpu"), cfg.agent)
    assert resolved.utd == 1 and resolved.gamma == 0.9 and resolved.critic_hidden == (64, 64)


def test_unknown_fields_are_one_line_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown field 'agent.not_a_field'"):
        resolve_agent_config(DIMEConfig, DIMEConfig.preset("cpu"), {"not_a_field": 1})
    with pytest.raises(ConfigError, match="unknown field"):
        load_run_config(FinetuneConfig, None, ["not_a_field=1"])
    with pytest.raises(ConfigError, match="agent.field=value"):
        load_run_config(FinetuneConfig, None, ["agent.utd"])
    with pytest.raises(ConfigError, match="expected int"):
        resolve_agent_config(DIMEConfig, DIMEConfig.preset("cpu"), {"utd": "many"})


@pytest.mark.parametrize("cls", [FinetuneConfig, PretrainConfig, PipelineConfig, EvaluateConfig, CollectConfig])
def test_every_device_field_is_checked_when_the_config_is_built(cls: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch takes "cuda" on a build without CUDA and fails only at the first tensor, mid-run."""
    required = {"checkpoint": "runs/x"} if cls is EvaluateConfig else {}
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    with pytest.raises(ConfigError, match=r"field 'device': 'cuda' is not available \(this torch build has no CUDA; use cpu\)"):
        cls(device="cuda", **required)
    with pytest.raises(ConfigError, match="field 'device': 'tpu9' is not a supported torch device"):
        cls(device="tpu9", **required)
    assert cls(device="cpu", **required).device == "cpu"


@pytest.mark.parametrize(
    ("override", "expected"),
    [("agent.critic_hidden=[1, 2", "field 'agent.critic_hidden': '[1, 2' is not a valid YAML value"),
     ("steps=[1", "field 'steps': '[1' is not a valid YAML value"),
     ("agent=5", "field 'agent': expected a section"),
     ("offline=x", "field 'offline': expected a section")],
)
def test_malformed_or_misplaced_override_values_name_the_field(override: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_run_config(PretrainConfig, None, [override])


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"agent: [1, 2]\n", "field 'agent': expected a section"), (b'offline: "x"\n', "field 'offline': expected a section"),
     (b"steps: 0\n", "field 'steps': must be >= 1"), (bytes(range(256)), "not a text YAML/JSON config file"), (None, "is a directory")],
)
def test_bad_config_files_are_config_errors_naming_the_file(tmp_path: Path, content: bytes | None, expected: str) -> None:
    path = tmp_path / "run.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as raised:
        load_run_config(PretrainConfig, str(path))
    assert raised.value.one_line().startswith(f"{path}: ") and expected in raised.value.one_line()


def test_the_pipeline_takes_offline_and_device_settings_for_its_stages() -> None:
    cfg = load_run_config(PipelineConfig, None, ["offline.conservative_weight=0.3", "device=cpu"])
    assert cfg.offline.conservative_weight == 0.3 and cfg.device == "cpu"
