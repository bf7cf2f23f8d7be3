"""keep_freed_memory: freed buffers stay mapped (no page faults when the next update allocates them again)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dime_offline import allocator

glibc_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc thresholds")

# Allocate 24 one-MiB buffers at once, free them, ten times over (an update's pattern): page faults
# of the ten rounds after a warm-up round.
_PROBE = """
import resource, sys
import torch
from dime_offline.allocator import keep_freed_memory
assert keep_freed_memory() if sys.argv[1] == "keep" else True
def round_():
    buffers = [torch.ones(256, 1024) for _ in range(24)]
    del buffers
round_()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


def _faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.strip())


@glibc_linux
def test_freed_buffers_are_reused_without_page_faults() -> None:
    default, kept = _faults("default"), _faults("keep")
    assert default > 2000  # on glibc 2.36 the freed MiBs are returned and faulted in again each round
    assert kept < default / 2  # 500-2300 kept against 6400-12500 by default over 18 runs each


@glibc_linux
def test_a_users_malloc_tunables_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=1000000")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("GLIBC_TUNABLES")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert allocator.keep_freed_memory() is False


def test_training_runs_set_it_unless_switched_off(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from dime_offline.trainers import scaffold
    from dime_offline.trainers.online import FinetuneConfig

    calls: list[bool] = []
    monkeypatch.setattr(scaffold, "keep_freed_memory", lambda: calls.append(True) or True)
    scaffold.RunScaffold.prepare(FinetuneConfig(env_id="Pendulum-v1", out_dir=str(tmp_path / "a")), "finetune", config_file="c.yaml")
    assert calls == [True]
    off = FinetuneConfig(env_id="Pendulum-v1", out_dir=str(tmp_path / "b"), keep_freed_memory=False)
    scaffold.RunScaffold.prepare(off, "finetune", config_file="c.yaml")
    assert calls == [True]
