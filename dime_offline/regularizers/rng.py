"""The regularisers' private noise: a torch generator made on first use, whose state a run's
checkpoint saves so that a resumed run draws the same numbers."""

from __future__ import annotations

from typing import Any

import torch


class SeededGenerator:
    """A ``torch.Generator`` seeded with ``seed``, made on the device of the tensors it first serves
    (and made anew, from the seed, if they move to another device)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._generator: torch.Generator | None = None

    def on(self, device: torch.device) -> torch.Generator:
        """The generator for tensors on ``device``."""
        if self._generator is None or self._generator.device != device:
            self._generator = torch.Generator(device).manual_seed(self.seed)
        return self._generator

    def state(self) -> dict[str, Any] | None:
        """``{"device", "state"}`` of the generator, None before its first use."""
        if self._generator is None:
            return None
        return {"device": str(self._generator.device), "state": self._generator.get_state()}

    def load_state(self, state: dict[str, Any] | None) -> None:
        """Restore a :meth:`state` (None: back to before the first use)."""
        if state is None:
            self._generator = None
        else:
            self.on(torch.device(state["device"])).set_state(state["state"])
