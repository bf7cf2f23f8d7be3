"""Fixtures shared by the experiment tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """W&B installed (else the test is skipped), offline, its files in the run directories, nothing under ~."""
    pytest.importorskip("wandb", reason="the wandb extra is optional: pip install 'dime-offline[wandb]'")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)  # W&B's files go into the run directory
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    for variable in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(variable, str(tmp_path / "wandb-home"))


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow installed (else the test is skipped), logging to a file store in ``tmp_path``, experiment "tests"."""
    pytest.importorskip("mlflow", reason="the mlflow extra is optional: pip install 'dime-offline[mlflow]'")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the local file store behind this switch
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
