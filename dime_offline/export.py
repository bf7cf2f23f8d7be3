"""A trained policy as one self-contained graph file for a control system: ONNX or TorchScript.

The graph holds what acting needs and nothing else (no optimiser state): raw observations in,
actions in the environment's units out, with the checkpoint's observation normalisation and action
scaling inside, and its averaged weights when it keeps them (``agent.acting_average_decay`` > 0),
in both modes, as ``load_policy`` acts. The batch size B is free. Two modes:

* ``deterministic`` (default): ``obs (B, O) -> action (B, A)``, exactly the action
  :func:`~dime_offline.load_policy` returns by default. With the checkpoint's ``best_of_k``
  deterministic mode the critics travel in the graph (K chains per state on fixed noise, the
  action they value most); with ``noise_free`` it is the chain without injected noise.
* ``noise_input``: ``(obs (B, O), noise (N + 1, B, A)) -> action``, the chain with explicit standard
  normal draws (row 0 starts the chain, x_0 = prior_std * noise[0]; rows 1..N are injected at the N
  denoising steps). All zeros is the noise-free chain; the stochastic policy's own draws replay a
  stochastic deployment exactly, so a deployment that logs its noise can be reproduced.

:func:`export_policy` writes the graph atomically with a JSON description beside it
(``<file>.json``: inputs, shapes, bounds, the mode, the source checkpoint) and checks the written
file against the torch policy on random observations (and noise) before it returns (ONNX through
onnxruntime). ONNX needs the ``onnx`` extra (onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from dime_offline.agent.config import DeterministicMode
from dime_offline.checkpoints import load_checkpoint, resolve_checkpoint_dir, stable_path
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.io import atomic_path, atomic_write_text
from dime_offline.policy import GRAPH_MODES, GraphMode, PolicyGraph

ExportFormat = Literal["onnx", "torchscript"]
EXPORT_FORMATS: tuple[str, ...] = ("onnx", "torchscript")
ExportMode = GraphMode
EXPORT_MODES = GRAPH_MODES
ONNX_HINT = "ONNX export needs the onnx extra: pip install 'dime-offline[onnx]'"
CHECK_ROWS = 16
"""Random observations the written file is checked on."""
CHECK_TOLERANCE = 1e-4
"""Largest difference, in the actions' unit box, between the written file and the torch policy on
the same inputs (the measured difference is a few 1e-7; the figure is stored in the JSON)."""


@dataclass(frozen=True)
class ExportConfig:
    """What ``dime-offline export`` writes (the arguments of :func:`export_policy`)."""

    checkpoint: str = ""
    """Checkpoint directory, or a run directory (its ``checkpoint/`` is used)."""
    out: str = ""
    """File to write (e.g. ``policy.onnx``); a ``.json`` description of inputs and bounds goes beside it."""
    format: ExportFormat = "onnx"
    """"onnx" (needs the onnx extra) or "torchscript"."""
    mode: ExportMode = "deterministic"
    """"deterministic": obs -> action, as ``load_policy`` acts; "noise_input": obs, noise -> action (the
    chain with explicit noise, zero noise its deterministic chain)."""
    deterministic_act: DeterministicMode | None = None
    """With ``mode`` "deterministic": "best_of_k" (the critics choose among K chain samples; they
    travel in the graph) or "noise_free" (the chain's mean path); None: the checkpoint's."""
    overwrite: bool = False
    """Replace an existing ``out``."""
    seed: int = 0
    """Seed of the inputs the written file is checked on against the torch policy."""

    def __post_init__(self) -> None:
        for name in ("checkpoint", "out"):
            if not getattr(self, name):
                raise ConfigError(f"field '{name}': required (--{name})")


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_policy` wrote."""

    path: str
    """The graph file."""
    description: str
    """The JSON description beside it."""
    format: str
    """"onnx" or "torchscript"."""
    mode: str
    """"deterministic" or "noise_input"."""
    max_abs_error: float
    """Largest difference between the written file and the torch policy on the check inputs, in units of
    half the action range (the policy's [-1, 1] box)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON summary."""
        return {"command": "export", "path": self.path, "description": self.description, "format": self.format,
                "mode": self.mode, "max_abs_error": self.max_abs_error}


def export_policy(
    checkpoint: str | Path, out: str | Path, *, fmt: ExportFormat = "onnx", mode: ExportMode = "deterministic",
    overwrite: bool = False, seed: int = 0, deterministic_act: DeterministicMode | None = None,
) -> ExportResult:
    """Write the policy of ``checkpoint`` (a run or checkpoint directory) to ``out`` as ``fmt`` in ``mode``
    (deterministic actions as ``deterministic_act`` says, None: as the checkpoint's).

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
    if deterministic_act is not None:
        agent.set_deterministic_act(deterministic_act)
    graph = PolicyGraph(agent, meta.spaces, mode)
    out = Path(out)
    generator = torch.Generator().manual_seed(seed)
    obs = torch.randn(CHECK_ROWS, meta.spaces.obs_dim, generator=generator) * graph.obs_std + graph.obs_mean
    inputs: dict[str, torch.Tensor] = {"obs": obs}
    if mode == "noise_input":
        noise = torch.randn(graph.noise_rows, CHECK_ROWS, meta.spaces.action_dim, generator=generator)
        noise[:, : CHECK_ROWS // 2] = 0.0  # half the rows on the noise-free chain
        inputs["noise"] = noise
    with torch.no_grad():
        expected = graph(*inputs.values())
    with atomic_path(out) as tmp:
        if fmt == "onnx":
            _write_onnx(graph, inputs, tmp)
        else:
            _write_torchscript(graph, inputs, tmp)
        got = _run_file(tmp, fmt, inputs)
    error = float(np.abs(got - expected.numpy()).max() / max(float(graph.half_range.max()), 1e-12))
    if not error <= CHECK_TOLERANCE:
        out.unlink(missing_ok=True)
        raise CheckpointError(f"the exported {fmt} file does not reproduce the policy (error {error:.2e} > {CHECK_TOLERANCE})",
                              file=str(out))
    description = out.with_name(out.name + ".json")
    atomic_write_text(description, json.dumps(_describe(graph, meta, checkpoint, fmt, error), indent=2) + "\n")
    return ExportResult(path=str(out), description=str(description), format=fmt, mode=mode, max_abs_error=error)


def _write_onnx(graph: PolicyGraph, inputs: dict[str, torch.Tensor], path: Path) -> None:
    import logging

    batch = torch.export.Dim("batch", min=1)
    shapes = {"obs": {0: batch}, "noise": {1: batch}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        program = torch.onnx.export(
            graph, tuple(inputs.values()), dynamo=True, input_names=list(inputs), output_names=["action"],
            dynamic_shapes={name: shapes[name] for name in inputs}, verbose=False,
        )
    program.save(str(path), external_data=False)  # one self-contained file (weights inside)


def _write_torchscript(graph: PolicyGraph, inputs: dict[str, torch.Tensor], path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(graph, tuple(inputs.values()))
    traced.save(str(path))


def _run_file(path: Path, fmt: str, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    """The written file's actions for the check inputs."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(["action"], {name: t.numpy() for name, t in inputs.items()})[0]
    module = torch.jit.load(str(path))
    with torch.no_grad():
        return module(*inputs.values()).numpy()


def _describe(graph: PolicyGraph, meta: Any, checkpoint: str | Path, fmt: str, error: float) -> dict[str, Any]:
    from dime_offline import __version__

    spaces: SpaceSpec = meta.spaces
    inputs: dict[str, Any] = {"obs": {"shape": ["batch", spaces.obs_dim], "dtype": "float32", "units": "raw observations"}}
    if graph.mode == "noise_input":
        inputs["noise"] = {
            "shape": [graph.noise_rows, "batch", spaces.action_dim], "dtype": "float32",
            "meaning": "standard normal draws (row 0 starts the chain, rows 1..N per denoising step);"
                       " all zeros = the noise-free chain",
        }
    return {
        "format": fmt,
        "mode": graph.mode,
        "deterministic_act": None if graph.mode == "noise_input" else ("best_of_k" if graph.critic is not None else "noise_free"),
        "inputs": inputs,
        "output": {"action": {"shape": ["batch", spaces.action_dim], "dtype": "float32", "units": "environment"}},
        "action_low": list(spaces.action_low),
        "action_high": list(spaces.action_high),
        "env_id": meta.env_id,
        "checkpoint": str(stable_path(resolve_checkpoint_dir(checkpoint))),  # a run directory's champion or checkpoint
        "max_abs_error_vs_torch": error,
        "dime_offline_version": __version__,
    }
