"""`dime-offline export`: the policy as one ONNX or TorchScript file that reproduces `load_policy`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_factories as tf
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline import load_policy
from dime_offline.errors import ConfigError
from dime_offline.export import ONNX_HINT, export_policy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretrained Pendulum policy: observation normalisation inside, torque bounds +-2."""
    return tf.pretrained_pendulum(tmp_path_factory.mktemp("export") / "pre")


def _onnx_actions(path: Path, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["action"], {"obs": obs} if noise is None else {"obs": obs, "noise": noise})[0]


def _torchscript_actions(path: Path, obs: np.ndarray, noise: np.ndarray | None = None) -> np.ndarray:
    inputs = [torch.from_numpy(obs)] + ([] if noise is None else [torch.from_numpy(noise)])
    with torch.no_grad():
        return torch.jit.load(str(path))(*inputs).numpy()


def _observations(batch: int) -> np.ndarray:
    return (np.random.default_rng(batch).normal(size=(batch, 3)) * [1.0, 1.0, 4.0]).astype(np.float32)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_deterministic_file_is_load_policys_default_action(checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    """The default export carries the critics and picks the best of K chains, as load_policy does."""
    result = export_policy(checkpoint, tmp_path / f"policy.{fmt}", fmt=fmt)  # type: ignore[arg-type]
    # One self-contained file (no external weights, no temporaries left) and its description.
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"policy.{fmt}", f"policy.{fmt}.json"]
    description = json.loads(Path(result.description).read_text())
    assert description["deterministic_act"] == "best_of_k" and list(description["inputs"]) == ["obs"]
    assert description["action_low"] == [-2.0] and description["env_id"] == "Pendulum-v1"
    run = _onnx_actions if fmt == "onnx" else _torchscript_actions
    for batch in (1, 33):  # the batch size is free
        obs = _observations(batch)
        np.testing.assert_allclose(run(Path(result.path), obs), load_policy(checkpoint)(obs), atol=1e-5)
    assert result.max_abs_error < 1e-5


def test_the_deterministic_file_takes_the_mode_asked_for(checkpoint: Path, tmp_path: Path) -> None:
    result = export_policy(checkpoint, tmp_path / "mean.pt", fmt="torchscript", deterministic_act="noise_free")
    description = json.loads(Path(result.description).read_text())
    assert description["deterministic_act"] == "noise_free"  # no critics in the graph
    obs = _observations(5)
    mean_path = load_policy(checkpoint, mode="noise_free")(obs)
    np.testing.assert_allclose(_torchscript_actions(Path(result.path), obs), mean_path, atol=1e-5)
    assert not np.allclose(mean_path, load_policy(checkpoint)(obs))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_the_noise_input_file_replays_the_chain_with_and_without_noise(checkpoint: Path, tmp_path: Path, fmt: str) -> None:
    result = export_policy(checkpoint, tmp_path / f"policy.{fmt}", fmt=fmt, mode="noise_input")  # type: ignore[arg-type]
    run = _onnx_actions if fmt == "onnx" else _torchscript_actions
    rows = json.loads(Path(result.description).read_text())["inputs"]["noise"]["shape"][0]
    for batch in (1, 33):
        obs = _observations(batch)
        # Zero noise is the noise-free chain, in env units.
        noise_free = run(Path(result.path), obs, np.zeros((rows, batch, 1), np.float32))
        np.testing.assert_allclose(noise_free, load_policy(checkpoint, mode="noise_free")(obs), atol=1e-5)
        # The stochastic policy's own draws (x_0 first, then each step's), fed as the noise input,
        # replay its actions exactly: a deployment that logs the noise can be reproduced.
        generator = torch.Generator().manual_seed(7)
        x0 = torch.randn(batch, 1, generator=generator)
        steps = torch.randn(rows - 1, batch, 1, generator=generator)
        noise = torch.cat([x0[None], steps]).numpy()
        stochastic = load_policy(checkpoint, deterministic=False, seed=7)(obs)
        np.testing.assert_allclose(run(Path(result.path), obs, noise), stochastic, atol=1e-5)
        assert np.all(np.abs(stochastic) <= 2.0) and not np.allclose(stochastic, noise_free)


def test_cli_export_and_its_one_line_errors(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.pt"
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--format", "torchscript", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["path"] == str(out) and out.is_file() and Path(summary["description"]).is_file()
    assert summary["mode"] == "deterministic"
    bad_mode = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m"), "--mode", "mean"])
    assert bad_mode.exit_code == 2 and "mean" in bad_mode.stderr
    bad_act = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m"), "--deterministic-act", "mean"])
    assert bad_act.exit_code == 2 and "deterministic_act" in bad_act.stderr and not (tmp_path / "m").exists()
    again = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(out), "--format", "torchscript"])
    assert again.exit_code == 2 and "--overwrite" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    bogus = runner.invoke(app, ["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p"), "--format", "tflite"])
    assert bogus.exit_code == 2 and "tflite" in bogus.stderr
    missing = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "nothing"), "--out", str(tmp_path / "q.onnx")])
    assert missing.exit_code == 2 and "nothing" in missing.stderr and not (tmp_path / "q.onnx").exists()


def test_onnx_without_its_packages_names_the_extra(checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match=r"dime-offline\[onnx\]") as info:
        export_policy(checkpoint, tmp_path / "p.onnx")
    assert ONNX_HINT in str(info.value) and not (tmp_path / "p.onnx").exists()
