"""benchmarks/cuda_check.py runs on a GPU machine only when one is lent: its sections are kept working here
by dry runs on the CPU (its hidden ``--device cpu``), so the script a GPU session relies on has not rotted."""

from __future__ import annotations

import sys

import pytest
import torch

from benchmark_scripts import load

cuda_check = load("cuda_check")


def test_parity_compares_real_actions_and_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_check, "GPU", "cpu")
    out = cuda_check.parity("cpu")
    assert out["max_weight_difference"] == 0.0
    assert out["action_rel_error_float32"] == 0.0 and out["q_rel_error_float32"] == 0.0
    # 'auto' on this CPU is bfloat16 exactly where the CPU has bfloat16 units: then the values move a little.
    bf16 = cuda_check.DIMEAgent(3, 1, cuda_check.DIMEConfig.preset("cpu"), seed=0).matmul_dtype == torch.bfloat16
    assert (out["q_rel_error_auto"] > 0) == bf16
    assert out["q_rel_error_auto"] < 2e-2


def test_speed_rows_time_updates_and_count_their_flops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cuda_check, "GPU", "cpu")
    rows = cuda_check.speed(["cpu"], ["float32"], cpu_threads=1, cycles=1, warmup=0)
    (row,) = rows  # the GPU's and the CPU's agents share one key on a CPU dry run
    assert row["update_ms"] > 0 and row["update_gflop"] > 1.0  # ~2.9 GFLOP per cpu-preset update
    assert row["env_steps_per_s"] == pytest.approx(1000 / (2 * row["update_ms"]))
    assert row["syncs_per_update"] is None


def test_without_a_gpu_it_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(sys, "argv", ["cuda_check.py", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="^error: no CUDA device is visible; this check needs one$"):
        cuda_check.main()
