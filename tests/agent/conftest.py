"""Agent tests run torch single-threaded: their tensors are small, and on a shared 2-core machine a second
OpenMP thread mostly spins waiting for a descheduled partner (several times the CPU time, same result)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
