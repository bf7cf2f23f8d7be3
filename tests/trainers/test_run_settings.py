"""The run settings the training commands share are declared, documented and checked once
(``trainers/scaffold.py``: ``RunSettings``, ``StageSettings``), and configs saved before they were
shared still load."""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path

import pytest

from dime_offline.config import load_run_config, to_dict
from dime_offline.config_docs import ConfigSource, field_docs
from dime_offline.errors import ConfigError
from dime_offline.trainers.offline import PretrainConfig
from dime_offline.trainers.online import FinetuneConfig
from dime_offline.trainers.pipeline import PipelineConfig
from dime_offline.trainers.scaffold import RunSettings, StageSettings

SOURCES = {
    PretrainConfig: ConfigSource("trainers/offline.py", "PretrainConfig"),
    FinetuneConfig: ConfigSource("trainers/online.py", "FinetuneConfig"),
    PipelineConfig: ConfigSource("trainers/pipeline.py", "PipelineConfig"),
}
SHARED_BY = {RunSettings: (PretrainConfig, FinetuneConfig, PipelineConfig, StageSettings), StageSettings: (PretrainConfig, FinetuneConfig)}


@pytest.mark.parametrize("base", list(SHARED_BY), ids=lambda c: c.__name__)
def test_each_shared_setting_is_declared_once_with_one_doc(base: type) -> None:
    own = set(inspect.get_annotations(base))
    base_docs = field_docs(base)
    for cls in SHARED_BY[base]:
        assert issubclass(cls, base)
        assert not own & set(inspect.get_annotations(cls)), f"{cls.__name__} declares {sorted(own & set(inspect.get_annotations(cls)))} again"
        docs = field_docs(cls)
        assert {name: docs[name] for name in own} == {name: base_docs[name] for name in own}
    # --help and config show read the inherited fields from the base's file without importing it.
    for cls, source in SOURCES.items():
        if issubclass(cls, base):
            assert {name: source.fields[name].doc for name in own} == {name: base_docs[name] for name in own}


@pytest.mark.parametrize("cls", list(SOURCES), ids=lambda c: c.__name__)
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"eval_episodes": 0}, "field 'eval_episodes': must be >= 1, got 0"),
        ({"torch_threads": 0}, "field 'torch_threads': must be >= 1, got 0"),
        ({"device": "tpu"}, "field 'device': 'tpu' is not a supported torch device"),
    ],
)
def test_every_training_command_checks_the_shared_settings(cls: type, setting: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message):
        cls(**setting)


# Written by dime-offline before the settings were shared (finetune_config.json, pretrain_config.json).
SAVED_FINETUNE = {
    "agent": {"utd": 1}, "checkpoint": "runs/pre", "checkpoint_every": 150, "data": None, "device": "cpu",
    "env_id": "Pendulum-v1", "eval_deterministic": False, "eval_episodes": 3, "eval_every": 100, "log_every": 50,
    "max_episode_steps": 200, "max_wall_seconds": 60.0, "normalize_obs": True, "offline_anneal_steps": None,
    "offline_fraction": 0.5, "offline_fraction_final": None, "online_reuse_limit": 1.0, "out_dir": "runs/ft",
    "overwrite": False, "preset": "cpu", "quiet": True, "resume": False, "return_tail": None, "save_replay": None,
    "seed": 7, "steps": 300, "target_return": None, "tensorboard": False, "torch_threads": 1, "trackers": ["mlflow"],
}
SAVED_PRETRAIN = {
    "agent": {}, "checkpoint_every": 150, "data": "logs.parquet", "device": "cpu", "env_id": None,
    "eval_deterministic": False, "eval_episodes": 3, "eval_every": 100, "log_every": 50, "max_episode_steps": 200,
    "max_wall_seconds": 60.0, "nonfinite": "error", "normalize_obs": True,
    "offline": {
        "actor_q_reduction": None, "alpha": None, "alpha_mode": "fixed", "alpha_per_reward_std": 0.1,
        "behaviour_paths": 1, "behaviour_weight": 0.1, "behaviour_weight_online": 0.0, "calibration": True,
        "calibration_online": True, "conservative_weight": 0.5, "conservative_weight_online": 0.5, "n_actions": 2,
        "return_tail": "lower", "reuse_next_actions": True, "softmax_temperature": 1.0, "target_entropy_per_dim": None,
        "value_support": "data", "value_support_margin": 0.25,
    },
    "out_dir": "runs/pretrain", "overwrite": True, "preset": "paper", "quiet": True, "resume": False, "seed": 7,
    "steps": 300, "tensorboard": False, "torch_threads": 1, "trackers": ["wandb"],
}


# The same finetune config as it loads now: the batch-composition fields moved into the handover section.
MOVED = ("offline_anneal_steps", "offline_fraction", "offline_fraction_final", "online_reuse_limit")
LOADED_FINETUNE = {
    **{k: v for k, v in SAVED_FINETUNE.items() if k not in MOVED},
    "handover": {**{k: SAVED_FINETUNE[k] for k in MOVED}, "conservative_weight": None, "conservative_calibration": None, "conservative_candidates": None, "behaviour_weight": None, "behaviour_advantage_filter": None, "ramp_steps": 0,
                 "alpha_mode": None, "alpha_start": None, "warmup_steps": 0, "surpassed_logs": "drop", "grow_value_support": None},
    "keep_freed_memory": True,  # added later: an older config gets the defaults
    "acting_average_share": None,
    "checkpoint_history": False,
    "select_acting": False,
    "champion": None,
    "champion_margin": 1.0,
}
LOADED_PRETRAIN = {
    **SAVED_PRETRAIN, "keep_freed_memory": True, "checkpoint_history": False, "select_acting": False,
    "champion": None, "champion_margin": 1.0,
    "offline": {**SAVED_PRETRAIN["offline"], "behaviour_scored_steps": 4,  # added later, as keep_freed_memory
                "behaviour_advantage_filter": False, "behaviour_advantage_filter_online": None},
}


@pytest.mark.parametrize(
    ("cls", "saved", "loaded"), [(FinetuneConfig, SAVED_FINETUNE, LOADED_FINETUNE), (PretrainConfig, SAVED_PRETRAIN, LOADED_PRETRAIN)]
)
def test_a_config_saved_before_the_settings_were_shared_loads_unchanged(tmp_path: Path, cls: type, saved: dict, loaded: dict) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved, indent=2, sort_keys=True))
    cfg = load_run_config(cls, str(path))
    assert to_dict(cfg) == loaded
    assert {f.name for f in dataclasses.fields(cls)} == set(loaded)
