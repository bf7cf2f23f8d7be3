"""`dime-offline run`: pretrain, then fine-tune, each evaluated along the way, on the shipped sample."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.checkpoints import load_checkpoint
from dime_offline.data.load import load_dataset, save_dataset

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-medium-replay-dime.parquet"


def test_run_chains_every_stage_and_reports_before_and_after(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["run", "--data", str(SAMPLE), "--out", str(out), "--pretrain-steps", "6", "--finetune-steps", "20",
            "--set", "eval_episodes=1", "--set", "torch_threads=1", "--set", "evaluations=2", "--json",
            "--set", "offline.conservative_weight=0.3", "--set", "device=cpu"]  # the README's example settings
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    pretrain_config = json.loads((out / "pretrain" / "pretrain_config.json").read_text())
    assert pretrain_config["offline"]["conservative_weight"] == 0.3 and pretrain_config["device"] == "cpu"
    assert json.loads((out / "finetune" / "finetune_config.json").read_text())["device"] == "cpu"
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["command"] == "run" and summary["env"] == "Pendulum-v1"
    assert summary["stages"]["pretrain"]["updates"] == 6
    assert summary["stages"]["finetune"]["steps"] == 20
    for key in ("offline_return_mean", "online_return_mean"):
        assert -2000.0 < summary[key] <= 0.0  # Pendulum returns are negative and bounded
    # Two evenly spaced evaluations per stage; the last of each is the one number reported for its checkpoint.
    assert [step for step, _ in summary["offline_curve"]] == [3, 6]
    assert [step for step, _ in summary["online_curve"]] == [10, 20]
    assert summary["offline_return_mean"] == summary["offline_curve"][-1][1] == summary["stages"]["pretrain"]["final"]["return_mean"]
    assert summary["online_return_mean"] == summary["online_curve"][-1][1] == summary["stages"]["finetune"]["final"]["return_mean"]
    assert summary["data_return_mean"] == pytest.approx(-1111.3, abs=0.1)  # the card's figure for the sample
    assert Path(summary["figure"]).is_file() and Path(summary["figure"]).parent == out
    assert json.loads((out / "summary.json").read_text())["online_return_mean"] == summary["online_return_mean"]
    agent, _, meta = load_checkpoint(summary["checkpoint"])
    assert meta.env_id == "Pendulum-v1" and agent.critic_updates > 6  # fine-tuning kept updating the pretrained agent
    assert summary["deployed_checkpoint"] == str(out / "finetune" / "champion")  # what the online score measures

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.stderr


def test_run_takes_every_dataset_format_through_both_stages(tmp_path: Path) -> None:
    """The same data as a D4RL-style HDF5 file: pretraining and fine-tuning read it through one path
    (fine-tuning used to accept Parquet only and failed after pretraining had finished)."""
    h5 = tmp_path / "pendulum.hdf5"
    save_dataset(load_dataset(SAMPLE), h5)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--data", str(h5), "--out", str(out), "--pretrain-steps", "4",
                                      "--finetune-steps", "10", "--set", "eval_episodes=1", "--set", "torch_threads=1", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["stages"]["finetune"]["steps"] == 10
    with open(out / "finetune" / "metrics.csv", newline="") as f:
        fractions = [float(r["value"]) for r in csv.DictReader(f) if r["key"] == "online/offline_fraction"]
    # The HDF5 rows fill the batches' offline part: with the default handover.online_reuse_limit (1) every stored
    # row is equally likely, so the offline share is the offline rows' share of the store, 3000 of 3000 + n.
    assert fractions and all(0.99 < x < 1.0 for x in fractions) and fractions == sorted(fractions, reverse=True)


def test_run_without_an_environment_is_a_one_line_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--data", str(tmp_path / "missing.parquet"), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "missing.parquet" in result.stderr


def test_each_checkpoint_is_evaluated_once_and_that_number_is_reported_everywhere(tmp_path: Path) -> None:
    """The printout, summary.json, each stage's metrics.csv and a later `evaluate` of the checkpoint (its
    defaults: the run's own evaluation episodes) all give the one evaluation of each stage's final checkpoint."""
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["run", "--data", str(SAMPLE), "--out", str(out), "--pretrain-steps", "4",
                                      "--finetune-steps", "10", "--set", "eval_episodes=2", "--set", "evaluations=2",
                                      "--set", "torch_threads=1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    printed = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith(("offline", "online"))}
    for stage, name, steps in (("pretrain", "offline", [2, 4]), ("finetune", "online", [5, 10])):
        final = summary["stages"][stage]["final"]
        with open(out / stage / "metrics.csv", newline="") as f:
            rows = [r for r in csv.DictReader(f) if r["key"] == "eval/return_mean"]
        assert [int(r["step"]) for r in rows] == steps  # one evaluation per scheduled step, none repeated
        assert float(rows[-1]["value"]) == final["return_mean"] == summary[f"{name}_return_mean"]
        assert final["normalized_score"] == summary[f"{name}_normalized_score"] is not None  # the sample's references
        assert (f"return {final['return_mean']:.1f} ± {final['return_std']:.1f} over 2 episodes, "
                f"normalised score {final['normalized_score']:.1f}") in printed[name]
        again = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(out / stage), "--json"])
        assert again.exit_code == 0, again.output
        evaluated = json.loads(again.stdout)
        assert evaluated["as_run"] and evaluated["episode_returns"] == final["episode_returns"]
        assert evaluated["normalized_score"] == final["normalized_score"]
