"""Checking a ``device`` setting before a run starts.

torch accepts ``torch.device("cuda")`` on a build without CUDA and fails only at the first tensor,
deep inside a run, with an AssertionError; an unknown string fails with a RuntimeError. Every
config with a ``device`` field calls :func:`check_device` when it is built, so such a setting is
one :class:`ConfigError` line before anything is loaded or written.
"""

from __future__ import annotations

import torch

from dime_offline.errors import ConfigError

SUPPORTED_DEVICE_TYPES = ("cpu", "cuda", "mps")
"""Device types the agent and the replay store run on."""


def check_device(device: str, field: str = "device") -> None:
    """Raise a :class:`ConfigError` naming ``field`` unless ``device`` is usable on this machine."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in SUPPORTED_DEVICE_TYPES:
        raise ConfigError(f"field '{field}': {device!r} is not a supported torch device (expected cpu, cuda, cuda:N or mps)")
    reason = _unavailable_reason(parsed)
    if reason is not None:
        raise ConfigError(f"field '{field}': {device!r} is not available ({reason}; use cpu)")


def _unavailable_reason(device: torch.device) -> str | None:
    """Why ``device`` cannot hold tensors here, or None when it can."""
    if device.type == "cuda":
        if not torch.backends.cuda.is_built():
            return "this torch build has no CUDA"
        count = torch.cuda.device_count()
        if count == 0:
            return "no CUDA device is visible"
        if device.index is not None and device.index >= count:
            return f"only {count} CUDA device(s) visible, cuda:0 to cuda:{count - 1}"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return "no MPS device on this machine"
    return None
