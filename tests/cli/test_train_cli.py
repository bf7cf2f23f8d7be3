"""`dime-offline finetune | evaluate | collect` in-process: JSON summaries, artefacts, exit code 2."""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from unittest.mock import ANY

import numpy as np
import pytest
import torch
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.checkpoints import load_checkpoint
from dime_offline.data.load import load_dataset, save_dataset
from dime_offline.data.parquet import read_parquet

TINY = [
    "agent.critic_hidden=[32, 32]", "agent.score_hidden=[32, 32]", "agent.score_frequencies=8",
    "agent.score_time_hidden=16", "agent.diffusion_steps=4", "agent.batch_size=32", "agent.learning_starts=50",
]
SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-random-tiny.parquet"
EVAL_KEYS = {"episodes", "return_mean", "return_std", "return_min", "return_max", "length_mean",
             "terminated_episodes", "normalized_score", "normalized_score_std", "time_at_action_bounds",
             "episode_returns", "episode_lengths", "episode_terminated"}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: one intra-op thread is faster, and far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _json(result) -> dict:
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout  # exactly one JSON object on stdout
    return json.loads(lines[0])


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def _finetune(out: Path, *extra: str):
    sets = [item for s in [*TINY, "max_episode_steps=50", "eval_episodes=1", "eval_every=150", "log_every=50",
                           "tensorboard=false"] for item in ("--set", s)]
    return _invoke("finetune", "--env", "Pendulum-v1", "--steps", "300", "--out", out, "--preset", "cpu",
                   "--seed", "1", *sets, *extra)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("cli") / "run"
    return out, _json(_finetune(out, "--json"))


def test_finetune_json_summary_and_artefacts(run_dir: tuple[Path, dict]) -> None:
    out, summary = run_dir
    assert summary["command"] == "finetune" and summary["env"] == "Pendulum-v1" and summary["steps"] == 300
    assert summary["updates"] == 2 * (300 - 50)
    assert set(summary["final"]) == EVAL_KEYS | {"step"} and summary["final"]["step"] == 300
    assert set(summary["best"]) == EVAL_KEYS | {"step"}
    assert summary["wall_seconds"] > 0 and summary["updates_per_second"] > 0
    assert summary["checkpoint"] == str(out / "checkpoint")
    for name in ("metrics.csv", "learning_curve.png", "summary.json", "finetune_config.json", "checkpoint/state.pt"):
        assert (out / name).is_file(), name
    config = json.loads((out / "finetune_config.json").read_text())
    assert config["preset"] == "cpu" and config["seed"] == 1 and config["agent"]["diffusion_steps"] == 4
    assert config["quiet"] is True  # --json turns the progress bar off


def test_evaluate_uses_the_same_keys_and_the_checkpoint_reloads_identically(run_dir: tuple[Path, dict]) -> None:
    out, finetune_summary = run_dir
    first = _json(_invoke("evaluate", "--checkpoint", out, "--episodes", "2", "--seed", "7", "--json"))
    second = _json(_invoke("evaluate", "--checkpoint", out, "--episodes", "2", "--seed", "7", "--json"))
    assert first["command"] == "evaluate" and first["env"] == "Pendulum-v1"  # env read from the checkpoint
    assert EVAL_KEYS <= set(first) and first["episodes"] == 2
    assert first["return_mean"] == second["return_mean"]  # fixed seed: identical actions after reload
    assert first["checkpoint"] == finetune_summary["champion_checkpoint"]  # the run deploys its champion
    assert first["acting"] == "best_of_k"  # deterministic by default, in the default mode
    sampled = _json(_invoke("evaluate", "--checkpoint", out, "--episodes", "2", "--seed", "7", "--stochastic", "--json"))
    assert sampled["acting"] == "stochastic" and sampled["return_mean"] != first["return_mean"]
    a, _, _ = load_checkpoint(out)
    b, _, _ = load_checkpoint(out / "champion")
    obs = np.zeros((4, 3), np.float32)
    np.testing.assert_array_equal(a.act(obs), b.act(obs))


def test_evaluate_acts_in_the_deterministic_mode_asked_for(run_dir: tuple[Path, dict]) -> None:
    out, _ = run_dir
    args = ("evaluate", "--checkpoint", out, "--episodes", "2", "--seed", "7", "--json")
    as_saved = _json(_invoke(*args))
    mean_path = _json(_invoke(*args, "--deterministic-act", "noise_free"))
    assert mean_path["acting"] == "noise_free" and mean_path["return_mean"] != as_saved["return_mean"]
    assert _json(_invoke(*args, "--deterministic-act", "best_of_k")) == {**as_saved, "wall_seconds": ANY}
    # the run's own episodes in another mode are not the run's own evaluation
    own = ("evaluate", "--checkpoint", out, "--json")
    assert _json(_invoke(*own))["as_run"] and not _json(_invoke(*own, "--deterministic-act", "noise_free"))["as_run"]
    line = _error_line(_invoke(*args, "--deterministic-act", "median"))
    assert "deterministic_act" in line and "noise_free" in line


def test_human_readable_evaluate_output(run_dir: tuple[Path, dict]) -> None:
    out, _ = run_dir
    result = _invoke("evaluate", "--checkpoint", out, "--episodes", "1")
    assert result.exit_code == 0, result.output
    assert "return" in result.stdout and "over 1 episodes" in result.stdout


def test_mismatched_env_is_one_line_and_exit_2(run_dir: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run_dir
    line = _error_line(_invoke("evaluate", "--checkpoint", out, "--env", "MountainCarContinuous-v0"))
    assert "does not match checkpoint" in line and "observation dim 2, expected 3" in line
    line = _error_line(_invoke("finetune", "--env", "MountainCarContinuous-v0", "--checkpoint", out,
                               "--out", tmp_path / "ft", "--steps", "10"))
    assert "does not match checkpoint" in line
    assert not (tmp_path / "ft" / "checkpoint").exists()


def test_finetune_from_a_checkpoint_takes_its_recorded_registered_env(run_dir: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = run_dir
    summary = _json(_invoke("finetune", "--checkpoint", out, "--out", tmp_path / "ft", "--steps", "5",
                            "--set", "eval_episodes=1", "--set", "tensorboard=false", "--json"))
    assert summary["env"] == "Pendulum-v1" and summary["steps"] == 5
    # An id that names a module (gymnasium would import it) is never taken from a file.
    copy = tmp_path / "untrusted"
    shutil.copytree(out / "checkpoint", copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["env_id"] = "untrusted_module_xyz:Env-v0"
    (copy / "meta.json").write_text(json.dumps(meta))
    line = _error_line(_invoke("finetune", "--checkpoint", copy, "--out", tmp_path / "ft2", "--steps", "5"))
    assert "not a registered gymnasium id" in line and "--env" in line
    line = _error_line(_invoke("evaluate", "--checkpoint", copy, "--episodes", "1"))
    assert "not a registered gymnasium id" in line and "--env" in line
    assert "untrusted_module_xyz" not in sys.modules
    # Named explicitly, the registered env is used and the recorded id ignored.
    assert _json(_invoke("evaluate", "--checkpoint", copy, "--env", "Pendulum-v1", "--episodes", "1", "--json"))["episodes"] == 1


def test_a_dataset_env_id_naming_a_module_is_never_imported(tmp_path: Path) -> None:
    data = load_dataset(SAMPLE)
    untrusted = tmp_path / "untrusted.parquet"
    save_dataset(dataclasses.replace(data, metadata=dataclasses.replace(data.metadata, env_id="untrusted_data_xyz:Env-v0")), untrusted)
    sets = [item for s in [*TINY, "tensorboard=false"] for item in ("--set", s)]
    summary = _json(_invoke("pretrain", "--data", untrusted, "--steps", "2", "--out", tmp_path / "pre", *sets, "--json"))
    assert summary["final"] is None  # no evaluation in an environment the file names
    run_sets = [item for s in TINY for item in ("--set", s)]
    line = _error_line(_invoke("run", "--data", untrusted, "--out", tmp_path / "run", "--pretrain-steps", "2", *run_sets))
    assert "untrusted_data_xyz:Env-v0" in line and "not registered" in line
    assert "untrusted_data_xyz" not in sys.modules


def test_filesystem_faults_are_one_line_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-only output folder and a disk that fills while the checkpoint is written (simulated:
    root ignores permissions, and no test may fill the disk)."""
    read_only = tmp_path / "ro"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args, **kwargs) -> None:
        if self == read_only / "run":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    line = _error_line(_finetune(read_only / "run"))
    assert str(read_only / "run") in line and "Read-only file system" in line

    def full_disk(*args, **kwargs) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    line = _error_line(_finetune(tmp_path / "full"))
    assert "cannot write the checkpoint" in line and str(tmp_path / "full") in line


def test_ctrl_c_before_training_is_one_line_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the data loads no loop can save anything: the run stops, with no run directory left."""
    from dime_offline.trainers import offline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(offline, "load_replay_store", interrupted)
    result = _invoke("pretrain", "--data", SAMPLE, "--out", tmp_path / "run")
    assert result.exit_code == 130 and result.stderr.strip() == "error: interrupted" and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("log_every=0", "log_every"), ("checkpoint_every=-1", "checkpoint_every"), ("max_wall_seconds=-1", "max_wall_seconds"),
     ("agent.critic_lr=-1", "learning rates"), ("agent.adam_beta1=2", "adam_beta1"), ("agent.critic_hidden=[0]", "hidden widths")],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path: Path, setting: str, expected: str) -> None:
    out = tmp_path / "run"
    line = _error_line(_invoke("finetune", "--env", "Pendulum-v1", "--steps", "10", "--out", out, "--set", setting))
    assert expected in line
    assert not out.exists()  # the corrected rerun is not refused as "already holds a run"


def test_user_mistakes_are_one_line_exit_2(tmp_path: Path) -> None:
    assert "unknown environment id 'Pendulm-v1'" in _error_line(
        _invoke("finetune", "--env", "Pendulm-v1", "--out", tmp_path / "a", "--steps", "10"))
    assert "unknown field" in _error_line(
        _invoke("finetune", "--env", "Pendulum-v1", "--out", tmp_path / "b", "--set", "no_such=1"))
    assert "unknown DIME preset" in _error_line(
        _invoke("finetune", "--env", "Pendulum-v1", "--out", tmp_path / "c", "--preset", "gpu"))
    assert "not found" in _error_line(_invoke("evaluate", "--checkpoint", tmp_path / "missing"))
    assert "Box" in _error_line(_invoke("collect", "--env", "CartPole-v1", "--out", tmp_path / "d.parquet"))


def _start(command: str, out: Path, *extra: str):
    """``command`` with the least it needs to get going (it is expected to stop before training)."""
    needs = {"pretrain": ["--data", SAMPLE], "finetune": ["--env", "Pendulum-v1"], "run": ["--data", SAMPLE]}[command]
    return _invoke(command, *needs, "--out", out, *extra)


@pytest.mark.parametrize("command", ["pretrain", "finetune", "run"])
def test_an_unavailable_or_unknown_device_is_one_line_before_anything_is_written(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)  # the same on a machine with CUDA
    for given in (["--set", "device=cuda"], ["--device", "cuda"]):
        line = _error_line(_start(command, tmp_path / "run", *given))
        assert line == "error: field 'device': 'cuda' is not available (this torch build has no CUDA; use cpu)"
    line = _error_line(_start(command, tmp_path / "run", "--set", "device=tpu9"))
    assert "field 'device': 'tpu9' is not a supported torch device" in line
    assert not (tmp_path / "run").exists()


def test_evaluate_and_collect_take_the_device_flag_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cuda, "is_built", lambda: False)
    expected = "error: field 'device': 'cuda' is not available (this torch build has no CUDA; use cpu)"
    assert _error_line(_invoke("evaluate", "--checkpoint", tmp_path / "ckpt", "--device", "cuda")) == expected
    line = _error_line(_invoke("collect", "--env", "Pendulum-v1", "--out", tmp_path / "d.parquet", "--device", "cuda"))
    assert line == expected
    assert not (tmp_path / "d.parquet").exists()


@pytest.mark.parametrize("command", ["pretrain", "run"])
def test_bad_set_values_and_config_files_are_one_line_before_anything_is_written(command: str, tmp_path: Path) -> None:
    """Each case in full is in tests/trainers/test_loop.py; here: one line, exit 2, no run directory."""
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    section = tmp_path / "section.yaml"
    section.write_text("agent: [1, 2]\n")
    cases = [
        (["--set", "agent.critic_hidden=[1, 2"], "field 'agent.critic_hidden': '[1, 2' is not a valid YAML value"),
        (["--set", "agent=5"], "field 'agent': expected a section"),
        (["--set", "offline=x"], "field 'offline': expected a section"),
        (["--config", section], f"{section}: field 'agent': expected a section"),
        (["--config", binary], f"{binary}: not a text YAML/JSON config file"),
        (["--config", tmp_path], f"{tmp_path}: is a directory"),
    ]
    for args, expected in cases:
        assert expected in _error_line(_start(command, tmp_path / "run", *args))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("link", ["loop", "dangling"])
@pytest.mark.parametrize("command", ["pretrain", "finetune"])
def test_an_out_link_that_leads_nowhere_is_one_line_naming_it(command: str, link: str, tmp_path: Path) -> None:
    out = tmp_path / link
    out.symlink_to(out if link == "loop" else tmp_path / "missing")
    line = _error_line(_start(command, out))
    reason = "a symbolic link that loops" if link == "loop" else f"a broken symbolic link (its target {tmp_path / 'missing'} does not exist)"
    assert f"output path {out} is {reason}" in line
    assert _error_line(_start(command, out / "run")).startswith(f"error: output path {out} is ")  # a link on the way


def test_overwrite_removes_everything_the_earlier_run_wrote_and_nothing_else(tmp_path: Path) -> None:
    """The new run evaluates nowhere (its data names no environment) and writes no TensorBoard events:
    nothing of the earlier run's best/, curve, events or summary may pass for the new run's."""
    out = tmp_path / "run"
    sets = [item for s in [*TINY, "eval_episodes=1", "max_episode_steps=20"] for item in ("--set", s)]
    _json(_invoke("pretrain", "--data", SAMPLE, "--steps", "2", "--out", out, *sets, "--json"))
    assert {p.name for p in out.iterdir()} == {"best", "best.v000001", "checkpoint", "checkpoint.v000001", "learning_curve.png",
                                               "metrics.csv", "pretrain_config.json", "summary.json", "tb"}
    (out / "notes.txt").write_text("the user's own file")
    data = load_dataset(SAMPLE)
    no_env = tmp_path / "no-env.parquet"
    save_dataset(dataclasses.replace(data, metadata=dataclasses.replace(data.metadata, env_id=None)), no_env)
    summary = _json(_invoke("pretrain", "--data", no_env, "--steps", "3", "--out", out, "--overwrite", *sets,
                            "--set", "tensorboard=false", "--json"))
    assert summary["best"] is None and summary["learning_curve"] is None and summary["steps"] == 3
    assert {p.name for p in out.iterdir()} == {"checkpoint", "checkpoint.v000001", "metrics.csv", "notes.txt",
                                               "pretrain_config.json", "summary.json"}
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert json.loads((out / "summary.json").read_text()) == summary


def test_config_file_and_set_overrides(tmp_path: Path) -> None:
    config = tmp_path / "ft.yaml"
    config.write_text("env_id: Pendulum-v1\nsteps: 60\neval_every: 0\nmax_episode_steps: 20\neval_episodes: 1\n"
                      "tensorboard: false\nagent:\n  utd: 1\n")
    sets = [item for s in TINY for item in ("--set", s)]
    result = _invoke("finetune", "--config", config, "--out", tmp_path / "run", *sets)
    assert result.exit_code == 0, result.output
    assert "final evaluation: return" in result.stdout and "learning curve:" in result.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 60 and summary["updates"] == 60 - 50  # utd 1 from the file


def test_collect_writes_a_valid_dataset_whose_flags_match_the_env(tmp_path: Path) -> None:
    out = tmp_path / "hopper.parquet"
    summary = _json(_invoke("collect", "--env", "Hopper-v5", "--steps", "300", "--out", out, "--seed", "2", "--json"))
    assert summary["command"] == "collect" and summary["steps"] == 300 and summary["out"] == str(out)
    assert set(summary["completed"]) == EVAL_KEYS
    assert summary["completed"]["normalized_score"] is not None  # D4RL hopper references
    data, _ = read_parquet(out)
    data.validate()
    assert len(data) == 300 and data.metadata.env_id == "Hopper-v5"
    # Hopper-v5 episodes that end before the 1000-step limit end because the hopper fell: terminated
    lengths = data.episode_lengths()
    ends = np.cumsum(lengths) - 1
    assert data.terminated[ends[:-1]].all() and not data.truncated[ends[:-1]].any()
    assert data.truncated[ends[-1]] != data.terminated[ends[-1]]
    assert summary["completed"]["terminated_episodes"] == summary["completed"]["episodes"] == len(lengths) - int(
        data.truncated[ends[-1]]
    )


def test_version_flag_prints_the_package_version() -> None:
    from dime_offline import __version__

    result = _invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"dime-offline {__version__}"


def test_help_and_the_command_table_do_not_import_torch() -> None:
    """`dime-offline --help` must answer at once: torch (1-5 s to import) loads only when a command trains."""
    probe = "import sys; from dime_offline_cli.main import app; sys.exit(3 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0
