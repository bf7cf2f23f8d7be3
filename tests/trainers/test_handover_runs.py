"""The handover schedule through ``finetune``: weights ramp from pretraining's to the online ones as
logged, overrides apply, the temperature starts and is held or tuned as set, a run killed mid-ramp
resumes to the same run, bad requests are one line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import trainer_factories as tf
from test_resume import Killed, _assert_same_state, _kill_at_update, _metrics, _state

from dime_offline.checkpoints import load_checkpoint, read_checkpoint_meta
from dime_offline.config import apply_overrides, from_dict, load_run_config, to_dict
from dime_offline.data.parquet import read_parquet, write_parquet
from dime_offline.errors import ConfigError
from dime_offline.regularizers import OfflineConfig
from dime_offline.tracking import read_metrics_csv
from dime_offline.trainers.handover import HandoverConfig
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Pretrained with penalty 1.0 -> 0.5 online and behaviour term 2.0 -> 0 online."""
    out = tmp_path_factory.mktemp("handover") / "pre"
    pretrain(PretrainConfig(
        data=str(tf.PENDULUM_SAMPLE), steps=3, out_dir=str(out), agent=dict(tf.TINY_AGENT), eval_every=0, eval_episodes=1,
        max_episode_steps=5, tensorboard=False, quiet=True,
        offline=OfflineConfig(conservative_weight=1.0, conservative_weight_online=0.5, behaviour_weight=2.0,
                              behaviour_weight_online=0.0),
    ))
    return out


def _cfg(pretrained: Path, out: Path, **handover) -> FinetuneConfig:
    return FinetuneConfig(
        env_id="Pendulum-v1", checkpoint=str(pretrained), data=str(tf.PENDULUM_SAMPLE), steps=60, out_dir=str(out),
        seed=2, agent={"batch_size": 16}, eval_every=25, eval_episodes=1, checkpoint_every=25, log_every=1,
        max_episode_steps=10, tensorboard=False, quiet=True, handover=HandoverConfig(**handover),
    )


def _logged(out: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    steps, values = read_metrics_csv(out / "metrics.csv")[key]
    return np.asarray(steps), np.asarray(values)


def test_the_weights_ramp_from_pretraining_to_online_over_ramp_steps(pretrained: Path, tmp_path: Path) -> None:
    finetune(_cfg(pretrained, tmp_path / "ramp", ramp_steps=40))
    steps, behaviour = _logged(tmp_path / "ramp", "online/behaviour_weight")
    _, penalty = _logged(tmp_path / "ramp", "online/conservative_weight")
    progress = np.minimum(1.0, (steps - 1) / 40)
    np.testing.assert_allclose(behaviour, 2.0 * (1 - progress), atol=1e-6)
    np.testing.assert_allclose(penalty, 1.0 - 0.5 * progress, atol=1e-6)
    assert behaviour[-1] == 0.0 and penalty[-1] == 0.5  # the online weights once the ramp is over
    # without a ramp: the checkpoint's online weights from the first update, unless overridden
    finetune(_cfg(pretrained, tmp_path / "step"))
    assert set(_logged(tmp_path / "step", "online/behaviour_weight")[1]) == {0.0}
    finetune(_cfg(pretrained, tmp_path / "kept", behaviour_weight=2.0, conservative_weight=0.0))
    assert set(_logged(tmp_path / "kept", "online/behaviour_weight")[1]) == {2.0}
    assert set(_logged(tmp_path / "kept", "online/conservative_weight")[1]) == {0.0}
    # the behaviour term's advantage filter: off unless the handover switches it on, then recorded
    assert "train/behaviour/kept_share" not in read_metrics_csv(tmp_path / "kept" / "metrics.csv")
    finetune(_cfg(pretrained, tmp_path / "filtered", behaviour_weight=2.0, behaviour_advantage_filter=True))
    _, kept = _logged(tmp_path / "filtered", "train/behaviour/kept_share")
    assert len(kept) and ((kept >= 0) & (kept <= 1)).all()
    assert read_checkpoint_meta(tmp_path / "filtered").extra["regularizers"]["actor"]["advantage_filter"] is True
    # the penalty's calibration: pretraining's online setting (on) unless the handover switches it
    assert set(_logged(tmp_path / "step", "online/calibration")[1]) == {1.0}
    finetune(_cfg(pretrained, tmp_path / "uncalibrated", conservative_calibration=False))
    assert set(_logged(tmp_path / "uncalibrated", "online/calibration")[1]) == {0.0}


def _sample_with_rewards(value: float, path: Path) -> Path:
    """The Pendulum sample with every logged reward set to ``value``."""
    data, _ = read_parquet(tf.PENDULUM_SAMPLE)
    return write_parquet(dataclasses.replace(data, reward=np.full_like(data.reward, value)), path)


def test_the_regularisers_go_off_online_when_the_boundary_policy_beats_every_logged_episode(pretrained: Path, tmp_path: Path) -> None:
    # Pendulum's rewards lie in [-16.3, 0]: over the runs' 10-step episodes every policy beats logs that
    # lost 20 per step, none beats logs that lost nothing
    worse, better = _sample_with_rewards(-20.0, tmp_path / "worse.parquet"), _sample_with_rewards(0.0, tmp_path / "better.parquet")

    def run(name: str, data: Path, **handover: object) -> dict:
        finetune(dataclasses.replace(_cfg(pretrained, tmp_path / name, **handover), data=str(data), eval_episodes=3))
        assert set(_logged(tmp_path / name, "online/behaviour_weight")[1]) == {0.0}  # the fixture's online weight
        return read_checkpoint_meta(tmp_path / name).extra

    dropped = run("dropped", worse, surpassed_logs="drop")
    assert set(_logged(tmp_path / "dropped", "online/conservative_weight")[1]) == {0.0}
    compared = dropped["boundary_vs_logs"]
    assert compared["surpassed"] and compared["logs_best"] == pytest.approx(-200.0)  # 10 steps of -20
    assert -16.3 * 10 <= compared["boundary_return"] <= 0 and compared["boundary_error"] >= 0
    assert dropped["handover_weights"]["end"] == {"conservative": 0.0, "behaviour": 0.0}
    logged = read_metrics_csv(tmp_path / "dropped" / "metrics.csv")
    assert logged["online/boundary_above_logs"][1].tolist() == [1.0] and logged["online/logs_best_return"][0].tolist() == [0]
    assert logged["online/boundary_return"][1][0] == pytest.approx(compared["boundary_return"])
    # the boundary's evaluation acts from its own stream: the run is the one the weights set by hand give
    run("by_hand", worse, conservative_weight=0.0)
    by_hand, automatic = _logged(tmp_path / "by_hand", "train/critic/loss"), _logged(tmp_path / "dropped", "train/critic/loss")
    np.testing.assert_array_equal(by_hand[0], automatic[0])
    np.testing.assert_array_equal(by_hand[1], automatic[1])

    kept = run("kept", better, surpassed_logs="drop")
    assert set(_logged(tmp_path / "kept", "online/conservative_weight")[1]) == {0.5}
    assert kept["boundary_vs_logs"]["surpassed"] is False and kept["boundary_vs_logs"]["logs_best"] == 0.0
    # a weight set explicitly stays; "keep" neither evaluates nor drops; "drop" is the default
    run("explicit", worse, surpassed_logs="drop", conservative_weight=0.25)
    assert set(_logged(tmp_path / "explicit", "online/conservative_weight")[1]) == {0.25}
    assert run("keep", worse, surpassed_logs="keep")["boundary_vs_logs"] is None
    assert set(_logged(tmp_path / "keep", "online/conservative_weight")[1]) == {0.5}
    assert HandoverConfig().surpassed_logs == "drop"


def test_the_temperature_starts_where_set_and_is_held_or_tuned(pretrained: Path, tmp_path: Path) -> None:
    pretrained_alpha = load_checkpoint(pretrained / "checkpoint")[0].alpha
    finetune(_cfg(pretrained, tmp_path / "default"))
    _, alpha = _logged(tmp_path / "default", "train/alpha/value")
    # auto-tuned from where pretraining left it: Adam moves log alpha by about alpha_lr per actor step
    assert abs(np.log(alpha[0] / pretrained_alpha)) < 0.01 and alpha[-1] != alpha[0]

    finetune(_cfg(pretrained, tmp_path / "held", alpha_mode="fixed", alpha_start=0.05))
    _, alpha = _logged(tmp_path / "held", "train/alpha/value")
    np.testing.assert_allclose(alpha, 0.05, rtol=1e-6)
    agent, agent_cfg, _ = load_checkpoint(tmp_path / "held" / "checkpoint")
    assert agent_cfg.alpha_mode == "fixed" and agent.alpha == pytest.approx(0.05)  # a further fine-tuning holds it too

    finetune(_cfg(pretrained, tmp_path / "started", alpha_start=0.05))
    _, alpha = _logged(tmp_path / "started", "train/alpha/value")
    assert abs(np.log(alpha[0] / 0.05)) < 0.01 and alpha[-1] != alpha[0]
    assert load_checkpoint(tmp_path / "started" / "checkpoint")[1].alpha_mode == "auto"


def test_a_warm_start_lets_the_pretrained_policy_act_before_the_first_update(
    pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_random_actions(*_: object, **__: object) -> None:
        raise AssertionError("a pretrained agent's warm-up must act with its own policy")

    monkeypatch.setattr("dime_offline.trainers.online.UniformRandomPolicy.act", no_random_actions)
    cfg = _cfg(pretrained, tmp_path / "wsrl", warmup_steps=30)
    finetune(dataclasses.replace(cfg, data=None))  # WSRL: warm start, then no offline data
    logged = read_metrics_csv(tmp_path / "wsrl" / "metrics.csv")
    steps, _ = logged["train/critic/loss"]
    assert steps.min() == 31 and steps.max() == 60
    assert logged["train/episode_return"][0].min() <= 30  # episodes ran during the warm-up
    with pytest.raises(ConfigError, match="handover.warmup_steps"):
        HandoverConfig(warmup_steps=-1)


def test_a_run_killed_mid_ramp_resumes_to_the_same_run(pretrained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # alpha_start too: a resumed run goes on from the recorded alpha, it does not start it again
    settings = {"ramp_steps": 40, "alpha_start": 0.05}
    whole = finetune(_cfg(pretrained, tmp_path / "whole", **settings))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 2 * 30)  # env step 30: after the periodic checkpoint at 25, mid-ramp
        with pytest.raises(Killed):
            finetune(_cfg(pretrained, tmp_path / "killed", **settings))
    resumed = finetune(FinetuneConfig(**{**vars(_cfg(pretrained, tmp_path / "killed", **settings)), "resume": True}))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))


def test_requests_the_agent_cannot_honour_are_one_line_errors(tmp_path: Path) -> None:
    scratch = {"env_id": "Pendulum-v1", "steps": 5, "out_dir": str(tmp_path / "s"), "quiet": True, "tensorboard": False}
    with pytest.raises(ConfigError, match="handover.ramp_steps"):  # nothing pretrained to ramp from
        finetune(FinetuneConfig(**scratch, handover=HandoverConfig(ramp_steps=10)))
    with pytest.raises(ConfigError, match="handover.behaviour_weight"):  # from scratch there is no behaviour term
        finetune(FinetuneConfig(**scratch, handover=HandoverConfig(behaviour_weight=1.0)))
    with pytest.raises(ConfigError, match="handover.behaviour_advantage_filter"):
        finetune(FinetuneConfig(**scratch, handover=HandoverConfig(behaviour_advantage_filter=True)))
    for setting in ({"conservative_calibration": True}, {"conservative_candidates": 1}):  # nor a penalty
        with pytest.raises(ConfigError, match=f"handover.{next(iter(setting))}"):
            finetune(FinetuneConfig(**scratch, handover=HandoverConfig(**setting)))
    with pytest.raises(ConfigError, match=r"handover.alpha_start.*agent.alpha_init"):  # from scratch alpha starts at alpha_init
        finetune(FinetuneConfig(**scratch, handover=HandoverConfig(alpha_start=0.1)))
    with pytest.raises(ConfigError, match=r"handover.alpha_mode.*agent.alpha_mode"):
        finetune(FinetuneConfig(**scratch, handover=HandoverConfig(alpha_mode="fixed")))
    assert not (tmp_path / "s" / "metrics.csv").exists()


def test_the_old_top_level_names_still_load_into_the_section() -> None:
    cfg = from_dict(FinetuneConfig, {"env_id": "x", "offline_fraction": 0.3, "online_reuse_limit": None})
    assert cfg.handover.offline_fraction == 0.3 and cfg.handover.online_reuse_limit is None
    with pytest.raises(ConfigError, match="moved to 'handover.offline_fraction'"):
        from_dict(FinetuneConfig, {"offline_fraction": 0.3, "handover": {"offline_fraction": 0.2}})


def test_the_old_names_work_in_config_files_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "ft.yaml"
    path.write_text("env_id: Pendulum-v1\noffline_fraction: 0.25\n")
    assert load_run_config(FinetuneConfig, str(path)).handover.offline_fraction == 0.25
    cfg = load_run_config(FinetuneConfig, None, ["env_id=x", "online_reuse_limit=2", "handover.ramp_steps=5"])
    assert cfg.handover.online_reuse_limit == 2 and cfg.handover.ramp_steps == 5
    assert load_run_config(FinetuneConfig, str(path), ["handover.offline_fraction=0.75"]).handover.offline_fraction == 0.75
    assert apply_overrides(FinetuneConfig(env_id="x"), ["offline_fraction=0.2"]).handover.offline_fraction == 0.2
    # a sweep sets the old name on top of the defaults (whose section holds the default)
    assert from_dict(FinetuneConfig, {**to_dict(FinetuneConfig()), "offline_fraction": 0.3}).handover.offline_fraction == 0.3
