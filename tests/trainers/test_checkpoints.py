"""Checkpoint directories: exact round trip, metadata, and one-line errors for broken ones."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_factories as tf

import dime_offline
from dime_offline.checkpoints import (
    CHECKPOINT_FORMAT_VERSION,
    load_checkpoint,
    read_checkpoint_meta,
    resolve_checkpoint_dir,
    save_checkpoint,
)
from dime_offline.data.normalization import NormalizationStats
from dime_offline.data.replay import ReplayStore
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import CheckpointError

SPACES = SpaceSpec(obs_dim=3, action_dim=2, action_low=(-2.0, 0.0), action_high=(2.0, 1.0))


def _trained_agent(seed: int = 0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(64, 3)).astype(np.float32)
    stats = NormalizationStats.compute(obs * 3.0 + 1.0, rng.normal(size=64).astype(np.float32))
    agent = tf.tiny_agent(3, 2, seed=seed)
    agent = type(agent)(3, 2, agent.cfg, obs_normalizer=(stats.obs_mean, stats.obs_std), seed=seed)
    store = ReplayStore.empty(3, 2, online_capacity=64)
    store.add(obs, rng.uniform(-1, 1, (64, 2)), rng.normal(size=64), obs[::-1].copy(), np.zeros(64, bool), np.zeros(64, bool))
    for _ in range(7):  # two actor updates (policy delay 3), so optimiser states are non-trivial
        agent.update(store.sample(16))
    return agent, stats


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory):
    """One trained tiny agent saved once; tests copy the directory into their own tmp_path."""
    agent, stats = _trained_agent()
    directory = save_checkpoint(
        tmp_path_factory.mktemp("saved") / "ckpt", agent, agent.cfg, stats, {"stage": "test", "env_steps": 7},
        spaces=SPACES, env_id="Dummy-v0",
    )
    return agent, stats, directory


def _copy(saved, tmp_path: Path, name: str = "ckpt"):
    agent, stats, directory = saved
    target = tmp_path / name
    shutil.copytree(directory, target)
    return agent, stats, target


def test_reload_restores_weights_optimisers_counters_and_gives_identical_actions(saved, tmp_path: Path) -> None:
    agent, _, directory = _copy(saved, tmp_path)
    agent = copy.deepcopy(agent)  # the module's agent stays as it was saved
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "meta.json", "state.pt"]
    loaded, cfg, meta = load_checkpoint(directory)
    assert cfg == agent.cfg
    assert (loaded.critic_updates, loaded.actor_updates) == (agent.critic_updates, agent.actor_updates) == (7, 2)
    assert loaded.alpha == agent.alpha
    for a, b in zip(agent.policy.state_dict().values(), loaded.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    obs = np.random.default_rng(1).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(agent.act(obs), loaded.act(obs))  # same noise stream, same normaliser
    # training continues identically from the restored optimiser and RNG state
    store = ReplayStore.empty(3, 2, online_capacity=8)
    store.add(obs[:4], np.zeros((4, 2)), np.ones(4), obs[1:], np.zeros(4, bool), np.zeros(4, bool))
    batch = store.sample(4, generator=torch.Generator().manual_seed(0))
    assert agent.update(batch) == loaded.update(batch)


def test_meta_records_versions_spaces_env_and_normalisation(saved, tmp_path: Path) -> None:
    _, stats, directory = _copy(saved, tmp_path)
    meta = read_checkpoint_meta(directory)
    assert meta.format_version == CHECKPOINT_FORMAT_VERSION
    assert meta.package_version == dime_offline.__version__
    assert meta.spaces == SPACES and meta.env_id == "Dummy-v0"
    assert meta.normalization == stats
    assert meta.extra == {"stage": "test", "env_steps": 7}
    assert meta.created_utc.endswith("+00:00")
    assert meta.git_sha is None or len(meta.git_sha) == 40


def test_a_run_directory_resolves_to_its_checkpoint(saved, tmp_path: Path) -> None:
    _, _, directory = _copy(saved, tmp_path / "run", name="checkpoint")
    assert resolve_checkpoint_dir(tmp_path / "run") == directory
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_checkpoint_dir(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        resolve_checkpoint_dir(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "state.pt").write_bytes(b"not a torch file"), "state.pt is unreadable or corrupt"),
        (lambda d: (d / "state.pt").unlink(), "state.pt is missing"),
        (lambda d: (d / "config.json").write_text("{"), "cannot read config.json"),
        (lambda d: (d / "meta.json").write_text("[]"), "does not hold a JSON object"),
        (lambda d: _edit_json(d / "meta.json", format_version=CHECKPOINT_FORMAT_VERSION + 1), "upgrade dime-offline"),
        (lambda d: _edit_json(d / "meta.json", spaces=None), "meta.json is incomplete"),
        (lambda d: _edit_json(d / "config.json", critic_hidden=[64, 64]), "state.pt does not match config.json"),
        (lambda d: _edit_json(d / "config.json", no_such_field=1), "config.json does not fit"),
    ],
)
def test_broken_checkpoints_are_one_line_checkpoint_errors(saved, tmp_path: Path, damage, message: str) -> None:
    _, _, directory = _copy(saved, tmp_path)
    damage(directory)
    with pytest.raises(CheckpointError, match=message) as info:
        load_checkpoint(directory)
    assert "\n" not in info.value.one_line()


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    agent, stats, directory = _copy(saved, tmp_path)
    before = (directory / "state.pt").read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(directory, agent, agent.cfg, stats, spaces=SPACES)
    assert (directory / "state.pt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary leftovers
    load_checkpoint(directory)


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_legacy_stochastic_deterministic_mode_loads_as_noise_free(saved, tmp_path: Path) -> None:
    """Checkpoints before 0.2 say 'stochastic' (deterministic requests were sampled): they load, and
    a deterministic request then gets the same action every time."""
    _, _, directory = _copy(saved, tmp_path)
    _edit_json(directory / "config.json", deterministic_act="stochastic")
    agent, cfg, _ = load_checkpoint(directory)
    assert cfg.deterministic_act == "noise_free"
    obs = np.zeros((3, SPACES.obs_dim), np.float32)
    assert np.array_equal(agent.act(obs, deterministic=True), agent.act(obs, deterministic=True))
