"""A trained policy as one self-contained graph file for a control system: ONNX or TorchScript.

The graph is the policy alone (no critics, no optimiser state): raw observations in, actions in the
environment's units out, with the checkpoint's observation normalisation and action scaling inside.
Its inputs and output::

    obs     (B, O)          float32, raw observations
    noise   (N + 1, B, A)   float32, standard normal draws: row 0 starts the chain (x_0 = prior_std *
                            noise[0]), rows 1..N are injected at the N denoising steps
    action  (B, A)          float32, in [action_low, action_high]

``noise`` all zeros is the deterministic (noise-free) chain that :func:`~dime_offline.load_policy`
uses by default; standard normal draws sample the stochastic policy. Because the noise is an
input, a deployment that logs it can be replayed exactly. The batch size B is free.

:func:`export_policy` writes the graph atomically with a JSON description beside it
(``<file>.json``: shapes, bounds, the noise convention, the source checkpoint) and checks the
written file against the torch policy on random observations and noise before it returns (ONNX
through onnxruntime). ONNX needs the ``onnx`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_checkpoint
from dime_offline.envs.make import SpaceSpec
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.io import atomic_path, atomic_write_text

ExportFormat = Literal["onnx", "torchscript"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
ONNX_HINT = "ONNX export needs the onnx extra: pip install 'dime-offline[onnx]'"
CHECK_ROWS = 16
"""Random observations the written file is checked on."""
CHECK_TOLERANCE = 1e-4
"""Largest difference, in the actions' unit box, between the written file and the torch policy on
the same inputs (the measured difference is a few 1e-7; the figure is stored in the JSON)."""


class PolicyGraph(nn.Module):
    """``(obs, noise) -> action`` of a trained agent, in env units (the module docstring's contract)."""

    def __init__(self, agent: DIMEAgent, spaces: SpaceSpec) -> None:
        super().__init__()
        self.policy = copy.deepcopy(agent.policy).cpu().float().eval().requires_grad_(False)
        if agent.obs_normalizer is None:
            mean, std = torch.zeros(spaces.obs_dim), torch.ones(spaces.obs_dim)
        else:
            mean, std = (t.detach().cpu().float() for t in agent.obs_normalizer)
        low = torch.tensor(spaces.action_low, dtype=torch.float32)
        high = torch.tensor(spaces.action_high, dtype=torch.float32)
        self.register_buffer("obs_mean", mean.clone())
        self.register_buffer("obs_std", std.clone())
        self.register_buffer("action_low", low)
        self.register_buffer("half_range", (high - low) / 2.0)

    @property
    def noise_rows(self) -> int:
        """N + 1: the rows of the ``noise`` input."""
        return self.policy.n_steps + 1

    def forward(self, obs: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        unit = self.policy.action_from_noise((obs - self.obs_mean) / self.obs_std, noise).clamp(-1.0, 1.0)
        return self.action_low + (unit + 1.0) * self.half_range


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_policy` wrote."""

    path: str
    """The graph file."""
    description: str
    """The JSON description beside it."""
    format: str
    """"onnx" or "torchscript"."""
    max_abs_error: float
    """Largest difference between the written file and the torch policy on the check inputs, in units of
    half the action range (the policy's [-1, 1] box)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON summary."""
        return {"command": "export", "path": self.path, "description": self.description, "format": self.format,
                "max_abs_error": self.max_abs_error}


def export_policy(
    checkpoint: str | Path, out: str | Path, *, fmt: ExportFormat = "onnx", overwrite: bool = False, seed: int = 0
) -> ExportResult:
    """Write the policy of ``checkpoint`` (a run or checkpoint directory) to ``out`` as ``fmt``.

    ``seed`` draws the check inputs. An existing ``out`` is replaced only with ``overwrite``.

    Raises:
        ConfigError: unknown format, ``out`` exists, or the ONNX packages are missing (the hint names the extra).
        CheckpointError: the checkpoint cannot be read, or the written file does not reproduce the policy.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format '{fmt}' (known: {', '.join(EXPORT_FORMATS)})")
    if Path(out).is_dir() or (Path(out).exists() and not overwrite):
        raise ConfigError(f"{out} already exists{' and is a directory' if Path(out).is_dir() else '; pass --overwrite to replace it'}")
    if fmt == "onnx":
        missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"{ONNX_HINT} (missing: {', '.join(missing)})")
    agent, _, meta = load_checkpoint(checkpoint)
    graph = PolicyGraph(agent, meta.spaces)
    out = Path(out)
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(CHECK_ROWS, meta.spaces.obs_dim, generator=generator) * graph.obs_std + graph.obs_mean
    noise = torch.randn(graph.noise_rows, CHECK_ROWS, meta.spaces.action_dim, generator=generator)
    noise[:, : CHECK_ROWS // 2] = 0.0  # half the rows on the deterministic chain
    with torch.no_grad():
        expected = graph(obs, noise)
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _write_onnx(graph, obs, noise, tmp)
        else:
            _write_torchscript(graph, obs, noise, tmp)
        got = _run_file(tmp, fmt, obs, noise)
    error = float(np.abs(got - expected.numpy()).max() / max(float(graph.half_range.max()), 1e-12))
    if not error <= CHECK_TOLERANCE:
        out.unlink(missing_ok=True)
        raise CheckpointError(f"the exported {fmt} file does not reproduce the policy (error {error:.2e} > {CHECK_TOLERANCE})",
                              file=str(out))
    description = out.with_name(out.name + ".json")
    atomic_write_text(description, json.dumps(_describe(graph, meta, checkpoint, fmt, error), indent=2) + "\n")
    return ExportResult(path=str(out), description=str(description), format=fmt, max_abs_error=error)


def _write_onnx(graph: PolicyGraph, obs: torch.Tensor, noise: torch.Tensor, path: Path) -> None:
    import logging

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            graph, (obs, noise), dynamo=True, input_names=["obs", "noise"], output_names=["action"],
            dynamic_shapes={"obs": {0: batch}, "noise": {1: batch}}, verbose=False,
        )
    program.save(str(path), external_data=False)  # one self-contained file (weights inside)


def _write_torchscript(graph: PolicyGraph, obs: torch.Tensor, noise: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, (obs, noise))
    traced.save(str(path))


def _run_file(path: Path, fmt: str, obs: torch.Tensor, noise: torch.Tensor) -> np.ndarray:
    """The written file's actions for the check inputs."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["action"], {"obs": obs.numpy(), "noise": noise.numpy()})[0]
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(obs, noise).numpy()


def _describe(graph: PolicyGraph, meta: Any, checkpoint: str | Path, fmt: str, error: float) -> dict[str, Any]:
    from dime_offline import __version__

    spaces: SpaceSpec = meta.spaces
    return {
        "format": fmt,
        "inputs": {
            "obs": {"shape": ["batch", spaces.obs_dim], "dtype": "float32", "units": "raw observations"},
            "noise": {
                "shape": [graph.noise_rows, "batch", spaces.action_dim], "dtype": "float32",
                "meaning": "standard normal draws (row 0 starts the chain, rows 1..N per denoising step);"
                           " all zeros = the deterministic noise-free chain",
            },
        },
        "output": {"action": {"shape": ["batch", spaces.action_dim], "dtype": "float32", "units": "environment"}},
        "action_low": list(spaces.action_low),
        "action_high": list(spaces.action_high),
        "env_id": meta.env_id,
        "checkpoint": str(checkpoint),
        "max_abs_error_vs_torch": error,
        "dime_offline_version": __version__,
    }
