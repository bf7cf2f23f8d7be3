"""``checkpoint_history``: every periodic checkpoint's policy kept under ``history/step-N/``, loadable
wherever a checkpoint is, replaced with the run by ``overwrite``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import trainer_factories as tf
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.checkpoints import RESUME_SUBDIR, history_path, load_checkpoint, resolve_checkpoint_dir
from dime_offline.regularizers import OfflineConfig
from dime_offline.trainers.collect import CollectConfig, collect
from dime_offline.trainers.offline import PretrainConfig, pretrain


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "pendulum.parquet"
    collect(CollectConfig(env_id="Pendulum-v1", steps=120, out=str(path), quiet=True, max_episode_steps=20, seed=3))
    return str(path)


def _cfg(out: Path, data: str, **changes) -> PretrainConfig:
    return PretrainConfig(
        data=data, steps=30, out_dir=str(out), seed=1, agent=dict(tf.TINY_AGENT), eval_every=0, eval_episodes=1,
        checkpoint_every=12, log_every=10, max_episode_steps=20, tensorboard=False, quiet=True,
        offline=OfflineConfig(conservative_weight=0.5, behaviour_weight=1.0, n_actions=2), **changes,
    )


def _weights(path: Path) -> dict[str, torch.Tensor]:
    agent, _, _ = load_checkpoint(path)
    return {**{f"policy.{k}": v for k, v in agent.policy.state_dict().items()},
            **{f"critic.{k}": v for k, v in agent.critic.state_dict().items()}}


def test_each_periodic_checkpoint_is_kept_and_loads(tmp_path: Path, data: str) -> None:
    out = tmp_path / "run"
    pretrain(_cfg(out, data, checkpoint_history=True))
    kept = sorted(p.name for p in (out / "history").iterdir())
    assert kept == [history_path(out, step).name for step in (12, 24, 30)]  # every 12 steps, and the final one
    final = _weights(out / "checkpoint")
    last = _weights(history_path(out, 30))
    assert all(torch.equal(last[name], final[name]) for name in final)
    first = _weights(history_path(out, 12))
    assert any(not torch.equal(first[name], final[name]) for name in final)  # a point earlier in the run
    assert not (history_path(out, 12) / RESUME_SUBDIR).exists()  # the policy only
    assert (resolve_checkpoint_dir(out / "checkpoint") / RESUME_SUBDIR).is_dir()
    result = CliRunner().invoke(app, ["evaluate", "--checkpoint", str(history_path(out, 12)), "--episodes", "1"])
    assert result.exit_code == 0, result.output


def test_history_is_off_by_default_and_goes_with_an_overwritten_run(tmp_path: Path, data: str) -> None:
    out = tmp_path / "run"
    pretrain(_cfg(out, data, checkpoint_history=True))
    pretrain(_cfg(out, data, overwrite=True))
    assert not (out / "history").exists()
