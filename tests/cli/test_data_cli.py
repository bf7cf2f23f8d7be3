"""`dime-offline data inspect|convert`, in-process through Typer's runner (plus one real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dime_offline.data.load import load_dataset
from dime_offline.data.parquet import read_parquet, write_parquet
from dime_offline_cli.main import app

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-random-tiny.parquet"
REQUIRED_KEYS = {"transitions", "episodes", "obs_dim", "action_dim", "terminated", "truncated", "episode_return"}


@pytest.fixture(autouse=True)
def minari_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "minari-root"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def run(*args: str) -> object:
    return CliRunner().invoke(app, list(args))


def test_inspect_json_is_one_object_with_the_documented_keys() -> None:
    result = run("data", "inspect", str(SAMPLE), "--json")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert REQUIRED_KEYS <= set(summary)
    assert (summary["transitions"], summary["episodes"], summary["obs_dim"], summary["action_dim"]) == (2000, 10, 3, 1)
    assert (summary["terminated"], summary["truncated"]) == (0, 10)
    returns = load_dataset(SAMPLE).episode_returns()
    assert summary["episode_return"]["mean"] == pytest.approx(returns.mean())
    assert summary["episode_return"]["min"] == pytest.approx(returns.min())
    assert summary["episode_return"]["max"] == pytest.approx(returns.max())
    assert summary["action_bounds"]["outside_fraction"] == 0.0
    assert summary["continuity"]["broken_transitions"] == 0
    assert [f["name"] for f in summary["features"]["obs"]] == ["cos_theta", "sin_theta", "theta_dot"]
    assert summary["metadata"]["env_id"] == "Pendulum-v1" and summary["problems"] == []


def test_inspect_table_by_default() -> None:
    result = run("data", "inspect", str(SAMPLE))
    assert result.exit_code == 0
    assert "transitions" in result.stdout and "2000" in result.stdout and "theta_dot" in result.stdout


def test_inspect_reports_nan_bounds_and_continuity_instead_of_failing(tmp_path: Path) -> None:
    data, _ = read_parquet(SAMPLE)
    data.obs[10, 2] = np.nan
    data.action[20, 0] = 3.0  # outside [-2, 2]
    data.next_obs[30, 0] += 0.5  # breaks continuity with row 31
    write_parquet(data, tmp_path / "bad.parquet")
    summary = json.loads(run("data", "inspect", str(tmp_path / "bad.parquet"), "--json").stdout)
    assert summary["nonfinite"]["obs"]["features"] == {"theta_dot": 1}
    assert summary["nonfinite"]["obs"]["first_row"] == 10
    assert summary["features"]["obs"][2]["nan"] == 1
    assert summary["action_bounds"]["outside_rows"] == 1 and summary["action_bounds"]["first_outside_row"] == 20
    assert summary["continuity"]["broken_transitions"] == 2  # row 9 (next_obs vs NaN obs) and row 30
    assert summary["continuity"]["first_broken_row"] == 9


def test_convert_round_trip_via_hdf5_and_minari(tmp_path: Path) -> None:
    assert run("data", "convert", str(SAMPLE), str(tmp_path / "s.hdf5")).exit_code == 0
    result = run("data", "convert", str(tmp_path / "s.hdf5"), "dime/cli/pendulum-v0", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["target_format"] == "minari"
    assert run("data", "convert", "dime/cli/pendulum-v0", str(tmp_path / "back.parquet")).exit_code == 0
    original, back = load_dataset(SAMPLE), load_dataset(tmp_path / "back.parquet")
    np.testing.assert_array_equal(original.obs, back.obs)
    np.testing.assert_array_equal(original.truncated, back.truncated)


def test_convert_to_a_minari_folder_with_explicit_format(tmp_path: Path) -> None:
    result = run("data", "convert", str(SAMPLE), str(tmp_path / "pendulum"), "--format", "minari")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "pendulum" / "data" / "metadata.json").is_file()
    assert "wrote 2000 transitions in 10 episodes" in result.stdout


def _assert_one_line_error(result: object, *fragments: str) -> None:
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr and result.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0]


def test_user_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    _assert_one_line_error(run("data", "inspect", str(tmp_path / "missing.parquet")), "missing.parquet", "no such file")
    _assert_one_line_error(run("data", "inspect", "mujoco/hopper/expert"), "has no version suffix")
    (tmp_path / "half.parquet").write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 2])
    _assert_one_line_error(run("data", "inspect", str(tmp_path / "half.parquet")), "half.parquet", "corrupt or truncated")
    _assert_one_line_error(run("data", "convert", str(SAMPLE), str(tmp_path / "x.csv")), "x.csv", "output format")
    _assert_one_line_error(run("data", "convert", str(SAMPLE), str(tmp_path / "x.h5"), "--nonfinite", "maybe"),
                           "--nonfinite must be one of error, drop")


def test_failed_convert_leaves_no_output_and_drop_recovers(tmp_path: Path) -> None:
    data, _ = read_parquet(SAMPLE)
    data.reward[205] = np.inf
    write_parquet(data, tmp_path / "inf.parquet")
    out = tmp_path / "out.parquet"
    _assert_one_line_error(run("data", "convert", str(tmp_path / "inf.parquet"), str(out)),
                           "column 'reward', row 205", "1 non-finite value(s)", "--nonfinite drop")
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["inf.parquet"]
    result = run("data", "convert", str(tmp_path / "inf.parquet"), str(out), "--nonfinite", "drop", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["dropped_transitions"] == 195 and summary["transitions"] == 1805  # episode 1 keeps steps 0-4


def test_console_script_reports_user_errors_in_one_line(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("dime-offline")
    proc = subprocess.run([str(exe), "data", "inspect", str(tmp_path / "nope.hdf5")], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "nope.hdf5: no such file" in proc.stderr and "Traceback" not in proc.stderr
