"""finetune: from scratch with warm-up, from a checkpoint without, with offline data; artefacts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import trainer_factories as tf

from dime_offline.checkpoints import load_checkpoint, read_checkpoint_meta
from dime_offline.config import from_dict
from dime_offline.errors import ConfigError, EnvironmentMismatchError
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.collect import CollectConfig, collect
from dime_offline.trainers.handover import HandoverConfig
from dime_offline.trainers.online import FinetuneConfig, finetune

EPISODE = 50
"""Pendulum episodes are cut to this many steps to keep evaluations short."""


def _cfg(tmp_path: Path, name: str, **kwargs) -> FinetuneConfig:
    settings = {
        "env_id": "Pendulum-v1", "steps": 200, "out_dir": str(tmp_path / name), "agent": dict(tf.TINY_AGENT),
        "eval_every": 100, "eval_episodes": 1, "log_every": 50, "max_episode_steps": EPISODE, "tensorboard": False,
        "quiet": True,
    }
    settings.update(kwargs)
    return FinetuneConfig(**settings)


@pytest.fixture(scope="module")
def scratch_run(tmp_path_factory: pytest.TempPathFactory):
    """One short from-scratch run shared by the tests that only read its artefacts."""
    tmp = tmp_path_factory.mktemp("scratch")
    return finetune(_cfg(tmp, "run", seed=3))


def test_from_scratch_warms_up_with_random_actions_then_updates_utd_times_per_step(scratch_run) -> None:
    learning_starts, utd = tf.TINY_AGENT["learning_starts"], 2
    assert scratch_run.loop.steps == 200
    assert scratch_run.loop.updates == utd * (200 - learning_starts)
    assert scratch_run.agent.critic_updates == utd * (200 - learning_starts)
    metrics = read_metrics_csv(Path(scratch_run.out_dir) / "metrics.csv")
    assert metrics["train/critic/loss"][0].tolist() == [100, 150, 200]  # nothing logged during warm-up
    assert metrics["eval/return_mean"][0].tolist() == [100, 200]
    assert metrics["train/episode_length"][1].tolist() == [EPISODE] * 4
    assert np.all(metrics["online/offline_fraction"][1] == 0.0)  # no offline data


def test_the_presets_warm_up_is_capped_to_a_share_of_a_short_budget_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    agent = {k: v for k, v in tf.TINY_AGENT.items() if k != "learning_starts"}  # the preset's 5,000
    result = finetune(_cfg(tmp_path, "capped", steps=250, agent=agent, eval_every=0))
    assert result.loop.updates == 2 * (250 - 50)  # 20 % of the steps at random, then UTD 2
    assert "50 uniform-random warm-up steps (20% of --steps) instead of the preset's 5000" in capsys.readouterr().err
    # A value the user set is kept, and a run that cannot reach it says so.
    result = finetune(_cfg(tmp_path, "kept", steps=100, agent={**agent, "learning_starts": 150}, eval_every=0))
    assert result.loop.updates == 0
    assert "agent.learning_starts=150 >= --steps 100" in capsys.readouterr().err


def test_run_directory_holds_every_artefact_and_a_summary(scratch_run) -> None:
    out = Path(scratch_run.out_dir)
    for name in ("metrics.csv", "learning_curve.png", "summary.json", "finetune_config.json",
                 "checkpoint/config.json", "checkpoint/state.pt", "checkpoint/meta.json", "best/meta.json"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(scratch_run.to_dict()))
    assert summary["env"] == "Pendulum-v1" and summary["steps"] == 200
    assert summary["final"]["step"] == 200 and summary["final"]["episodes"] == 1
    assert summary["best"]["return_mean"] >= summary["final"]["return_mean"]
    assert summary["updates_per_second"] > 0 and summary["checkpoint"] == str(out / "checkpoint")
    saved = from_dict(FinetuneConfig, json.loads((out / "finetune_config.json").read_text()))
    assert saved.seed == 3 and saved.agent["learning_starts"] == tf.TINY_AGENT["learning_starts"]
    meta = read_checkpoint_meta(out / "checkpoint")
    assert meta.env_id == "Pendulum-v1" and meta.extra["env_steps"] == 200 and meta.extra["stage"] == "finetune"
    assert meta.spaces.action_high == (2.0,) and meta.normalization is None  # raw observations from scratch


def test_the_final_checkpoint_reloads_to_the_returned_agent(scratch_run) -> None:
    loaded, cfg, _ = load_checkpoint(Path(scratch_run.out_dir) / "checkpoint")
    assert cfg == scratch_run.agent.cfg
    obs = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.act(obs), scratch_run.agent.act(obs))


def test_same_seed_same_run(tmp_path: Path) -> None:
    def values(name: str) -> dict:
        result = finetune(_cfg(tmp_path, name, steps=90, eval_every=0, log_every=30))
        metrics = read_metrics_csv(Path(result.out_dir) / "metrics.csv")
        return {k: v[1].tolist() for k, v in metrics.items() if "per_second" not in k}

    first, second = values("a"), values("b")
    assert first == second
    assert len(first["train/critic/loss"]) == 2


def test_fine_tuning_a_checkpoint_skips_the_warm_up_and_continues_its_counters(scratch_run, tmp_path: Path) -> None:
    learner = str(Path(scratch_run.out_dir) / "checkpoint")  # the run directory itself stands for its champion
    result = finetune(_cfg(tmp_path, "ft", checkpoint=learner, steps=60, eval_every=0))
    batch_size = tf.TINY_AGENT["batch_size"]
    # no random warm-up: updates start as soon as the (online-only) store holds one batch
    assert result.loop.updates == 2 * (60 - batch_size + 1)
    assert result.agent.critic_updates == scratch_run.agent.critic_updates + result.loop.updates
    assert read_checkpoint_meta(result.out_dir).extra["source_checkpoint"] == learner


def test_a_checkpoint_takes_the_acting_overrides_for_its_own_evaluations(scratch_run, tmp_path: Path) -> None:
    saved = scratch_run.agent.cfg
    chosen = {"deterministic_act": "noise_free" if saved.deterministic_act == "best_of_k" else "best_of_k",
              "act_candidates": saved.act_candidates + 3}
    result = finetune(_cfg(tmp_path, "acting", checkpoint=scratch_run.out_dir, steps=20, eval_every=0, agent=chosen))
    # the run's agent acts as its config.json says, not as the checkpoint did
    assert (result.agent.cfg.deterministic_act, result.agent.cfg.act_candidates) == tuple(chosen.values())
    _, reloaded, _ = load_checkpoint(result.out_dir)
    assert (reloaded.deterministic_act, reloaded.act_candidates) == tuple(chosen.values())


def test_a_checkpoint_refuses_another_env_and_architecture_overrides(scratch_run, tmp_path: Path) -> None:
    with pytest.raises(EnvironmentMismatchError) as info:
        finetune(_cfg(tmp_path, "x", checkpoint=scratch_run.out_dir, env_id="MountainCarContinuous-v0"))
    assert info.value.one_line().startswith("environment 'MountainCarContinuous-v0' does not match checkpoint")
    with pytest.raises(ConfigError, match="agent.critic_hidden is fixed by the pretrained weights"):
        finetune(_cfg(tmp_path, "y", checkpoint=scratch_run.out_dir, agent={"critic_hidden": [8, 8]}))


def test_offline_data_is_mixed_into_batches_and_fits_the_normaliser(tmp_path: Path) -> None:
    data = tmp_path / "pendulum.parquet"
    collect(CollectConfig(env_id="Pendulum-v1", steps=150, out=str(data), quiet=True, max_episode_steps=EPISODE))
    # From scratch the default online_reuse_limit does not apply: RLPD's split from the first update.
    cfg = _cfg(tmp_path, "rlpd", data=str(data), steps=80, eval_every=0, log_every=10,
               handover=HandoverConfig(offline_fraction_final=0.0))
    result = finetune(cfg)
    metrics = read_metrics_csv(Path(result.out_dir) / "metrics.csv")
    fractions = metrics["online/offline_fraction"][1]
    # from the first update (step 51) the share anneals linearly from 0.5 (step 1) to 0 (step 80)
    np.testing.assert_allclose(fractions, [0.5 * (1 - (s - 1) / 79) for s in (60, 70, 80)], atol=0.04)
    meta = read_checkpoint_meta(result.out_dir)
    assert meta.normalization is not None and meta.normalization.count == 150
    assert meta.extra["data"] == str(data)

    other = tmp_path / "car.parquet"
    collect(CollectConfig(env_id="MountainCarContinuous-v0", steps=20, out=str(other), quiet=True))
    with pytest.raises(EnvironmentMismatchError, match=f"does not match dataset {other}"):
        finetune(_cfg(tmp_path, "bad", data=str(other)))


def test_an_output_directory_holding_a_run_is_not_overwritten_by_accident(scratch_run, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="already holds a run"):
        finetune(_cfg(tmp_path, "z", out_dir=scratch_run.out_dir))
    with pytest.raises(ConfigError, match="must differ from the checkpoint"):
        finetune(_cfg(tmp_path, "z", checkpoint=scratch_run.out_dir, out_dir=scratch_run.out_dir, overwrite=True))
    best = str(Path(scratch_run.out_dir) / "best")  # overwrite would delete it
    with pytest.raises(ConfigError, match="must differ from the checkpoint being fine-tuned \\(and not contain it\\)"):
        finetune(_cfg(tmp_path, "z", checkpoint=best, out_dir=scratch_run.out_dir, overwrite=True))
    with pytest.raises(ConfigError, match="no environment id"):
        finetune(_cfg(tmp_path, "z", env_id=""))


def test_fine_tuning_keeps_the_pretraining_return_tail_unless_told_otherwise(tmp_path: Path) -> None:
    """The calibration's truncation tail travels in the checkpoint; an explicit return_tail wins."""
    from dime_offline.regularizers import OfflineConfig
    from dime_offline.trainers.offline import PretrainConfig, pretrain

    data = tmp_path / "pendulum.parquet"
    collect(CollectConfig(env_id="Pendulum-v1", steps=120, out=str(data), quiet=True, max_episode_steps=EPISODE))
    pre = pretrain(PretrainConfig(
        data=str(data), steps=2, out_dir=str(tmp_path / "pre"), agent=dict(tf.TINY_AGENT), eval_every=0, eval_episodes=1,
        max_episode_steps=EPISODE, tensorboard=False, quiet=True, offline=OfflineConfig(return_tail="repeat_last_reward"),
    ))
    settings = dict(checkpoint=pre.checkpoint, data=str(data), steps=3, eval_every=0, agent={"batch_size": 16})
    kept = finetune(_cfg(tmp_path, "kept", **settings))
    assert read_checkpoint_meta(kept.out_dir).extra["return_tail"] == "repeat_last_reward"
    chosen = finetune(_cfg(tmp_path, "chosen", return_tail="zero", **settings))
    assert read_checkpoint_meta(chosen.out_dir).extra["return_tail"] == "zero"
    with pytest.raises(ConfigError, match="return_tail"):
        _cfg(tmp_path, "bad", return_tail="bootstrap")
