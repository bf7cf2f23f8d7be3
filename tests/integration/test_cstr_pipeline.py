"""The CSTR demo path end to end through the CLI, in-process, with tiny budgets:
make-telemetry -> from-telemetry -> pretrain -> finetune (on the twin, logs kept) -> evaluate.

It checks the hand-offs between the stages (files, spaces, checkpoints, JSON keys), not learning:
the learning itself is tested in tests/agent and tests/offline, and measured by
benchmarks/cstr_demo.py.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.checkpoints import read_checkpoint_meta
from dime_offline.data.parquet import read_parquet_metadata
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.envs import CSTR_ENV_ID
from dime_offline.envs.make import make_env, spaces_of

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "datasets" / "specs" / "telemetry" / "cstr.yaml"
TINY_AGENT = [
    "agent.critic_hidden=[32, 32]", "agent.score_hidden=[32, 32]", "agent.score_frequencies=8",
    "agent.score_time_hidden=16", "agent.diffusion_steps=4", "agent.n_atoms=21", "agent.batch_size=32",
    "agent.v_min=-500", "agent.v_max=100",
]
RUN_SETS = ["eval_episodes=1", "max_episode_steps=40", "log_every=10", "tensorboard=false", "torch_threads=1"]
EVAL_KEYS = {"episodes", "return_mean", "return_std", "return_min", "return_max", "length_mean",
             "terminated_episodes", "normalized_score", "normalized_score_std", "time_at_action_bounds",
             "episode_returns", "episode_lengths", "episode_terminated"}


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    """The runs set torch's thread count (torch_threads=1); give the process its own back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _sets(items: list[str]) -> list[str]:
    return [part for item in items for part in ("--set", item)]


def _json(*args: object) -> dict:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    return json.loads(lines[0])


def _assert_eval_block(block: dict, episodes: int) -> None:
    assert EVAL_KEYS <= set(block)
    assert block["episodes"] == episodes
    for key in ("return_mean", "return_std", "return_min", "return_max", "length_mean"):
        assert math.isfinite(block[key]), (key, block)
    # The twin's reward is minus an absolute tracking error and a move penalty: never positive.
    assert block["return_max"] <= 0.0
    assert 1 <= block["length_mean"] <= 240


def test_historian_export_to_a_finetuned_policy_for_the_twin(tmp_path: Path) -> None:
    historian, logs = tmp_path / "historian.csv", tmp_path / "logs.parquet"
    made = _json("data", "make-telemetry", "--out", historian, "--hours", 2, "--seed", 5, "--json")
    assert historian.is_file() and made["rows"] > 1000 and made["control_steps"] == 240

    converted = _json("data", "from-telemetry", historian, "--spec", SPEC, "--out", logs,
                      "--report", tmp_path / "report.json", "--json")
    assert logs.is_file() and (tmp_path / "report.json").is_file()
    assert converted["transitions"] > 100

    # The dataset names the twin and fits its spaces: same features in the same order, same bounds.
    metadata, obs_dim, action_dim, rows = read_parquet_metadata(logs)
    assert rows == converted["transitions"] and metadata.env_id == CSTR_ENV_ID
    env = make_env(CSTR_ENV_ID)
    try:
        env_spaces = spaces_of(env)
        assert metadata.obs_names == env.unwrapped.obs_names
        assert metadata.action_names == env.unwrapped.action_names
    finally:
        env.close()
    dataset_spaces = SpaceSpec.from_metadata(metadata, obs_dim, action_dim)
    assert dataset_spaces is not None
    check_spaces_match(dataset_spaces, env_spaces, expected_from="the converted dataset", actual_from="the twin")

    pre = _json("pretrain", "--data", logs, "--steps", 12, "--out", tmp_path / "pre", "--seed", 0,
                *_sets([*TINY_AGENT, *RUN_SETS, "eval_every=0"]), "--json")
    assert pre["env"] == CSTR_ENV_ID and pre["transitions"] == rows and pre["updates"] == 12
    _assert_eval_block(pre["final"], 1)
    for name in ("config.json", "meta.json", "state.pt"):
        assert (tmp_path / "pre" / "checkpoint" / name).is_file()
    assert read_checkpoint_meta(tmp_path / "pre").env_id == CSTR_ENV_ID

    fine = _json("finetune", "--env", CSTR_ENV_ID, "--checkpoint", tmp_path / "pre", "--data", logs,
                 "--steps", 30, "--out", tmp_path / "fine", "--seed", 0,
                 *_sets([*RUN_SETS, "agent.batch_size=32", "agent.utd=1", "eval_every=0"]), "--json")
    assert fine["env"] == CSTR_ENV_ID and fine["steps"] == 30
    assert fine["updates"] == 30  # the logs fill the store: updates from the first step, no warm-up
    _assert_eval_block(fine["final"], 1)
    assert (tmp_path / "fine" / "checkpoint" / "state.pt").is_file()
    assert (tmp_path / "fine" / "metrics.csv").is_file()

    evaluated = _json("evaluate", "--checkpoint", tmp_path / "fine", "--episodes", 2, "--seed", 7, "--json")
    assert evaluated["env"] == CSTR_ENV_ID
    _assert_eval_block(evaluated, 2)


def test_demo_script_runs_the_whole_path_and_writes_its_table_and_plot(tmp_path: Path) -> None:
    """benchmarks/cstr_demo.py with tiny budgets: the comparison covers every controller on the
    same episodes, and the results file and the plot are written."""
    spec = importlib.util.spec_from_file_location("bench_cstr_demo", ROOT / "benchmarks" / "cstr_demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = demo  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(demo)
    tiny = [f"--agent-set={item.removeprefix('agent.')}" for item in TINY_AGENT]
    results = demo.main([
        "--out", str(tmp_path / "demo"), "--hours", "2", "--pretrain-steps", "6", "--finetune-steps", "12",
        "--pretrain-eval-every", "3", "--finetune-eval-every", "12", "--train-eval-episodes", "1",
        "--eval-episodes", "2", *tiny,
    ])
    assert (tmp_path / "demo" / "results.json").is_file() and (tmp_path / "demo" / "cstr-demo.png").stat().st_size > 0
    assert json.loads((tmp_path / "demo" / "results.json").read_text())["table"] == results["table"]
    rows = {row["controller"]: row for row in results["comparison"]}
    assert len(rows) == 6 and all(row["episodes"] == 2 for row in rows.values())
    for row in rows.values():
        assert all(math.isfinite(row[k]) for k in ("return_mean", "tracking_error_K", "move_K_per_step"))
        assert 0.0 <= row["trips_per_episode"] <= 1.0
    # the PI controller on its own twin: no trip, tracking within a kelvin on average
    pi = rows["PI (deterministic)"]
    assert pi["trips_per_episode"] == 0.0 and pi["tracking_error_K"] < 1.0 and pi["length_mean"] == 240
    assert [r["step"] for r in results["pretrain"]["curve"]] == [3, 6]
    assert set(results["curve_references"]) == {"PI (deterministic)", "PI + operator (behaviour policy)"}
