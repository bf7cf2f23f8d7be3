"""Fixtures for the trainer tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """The tests' networks are tiny: one intra-op thread is faster, and far faster on a busy machine
    (two threads spin-waiting on a shared 2-core box made updates 6x slower in measurement)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
