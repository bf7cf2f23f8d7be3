"""Exporting an online run's replay as a canonical dataset, and the target-return stop rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trainer_factories as tf

from dime_offline.data.parquet import read_parquet
from dime_offline.data.replay import ReplayStore
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import ConfigError, DataError
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.tracking import ProgressDisplay, Tracker
from dime_offline.trainers.loop import Cadence, StepReport, run_loop
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.replay_export import online_transitions

SPACES = SpaceSpec(obs_dim=2, action_dim=1, action_low=(0.0,), action_high=(4.0,))
"""A 1-D action in [0, 4] env units, so exporting must undo the store's [-1, 1] scaling."""


def _fill(store: ReplayStore, episode_lengths: list[int], end_flags: list[str]) -> list[tuple[int, int]]:
    """Add episodes whose obs are (episode, t) and scaled action t/10 - 1; returns (episode, t) per row."""
    rows = []
    for episode, (length, flag) in enumerate(zip(episode_lengths, end_flags, strict=True)):
        for t in range(length):
            last = t == length - 1
            store.add(
                np.array([episode, t], np.float32), np.array([t / 10 - 1], np.float32), float(t),
                np.array([episode, t + 1], np.float32), last and flag == "term", last and flag == "trunc",
            )
            rows.append((episode, t))
    return rows


def test_episodes_are_rebuilt_from_flags_and_actions_return_to_env_units() -> None:
    store = ReplayStore.empty(2, 1, online_capacity=100)
    _fill(store, [3, 4, 2], ["term", "trunc", "open"])  # the last episode is still running
    data = online_transitions(store, SPACES, env_id="Pendulum-v1", source="test")
    data.validate()
    assert data.episode_id.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2]
    assert data.step.tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1]
    assert np.flatnonzero(data.terminated).tolist() == [2]
    assert np.flatnonzero(data.truncated).tolist() == [6, 8]  # time limit, then the cut by the run's end
    # scaled t/10 - 1 -> env units 0 + (t/10) * 4 / 2
    np.testing.assert_allclose(data.action[:, 0], 0.2 * data.step, atol=1e-6)
    np.testing.assert_array_equal(data.obs[:, 1], data.step)
    np.testing.assert_array_equal(data.reward, data.step.astype(np.float32))
    assert data.metadata.action_low == [0.0] and data.metadata.action_high == [4.0]
    assert data.metadata.env_id == "Pendulum-v1" and data.metadata.ref_min_score is None


def test_a_wrapped_ring_drops_the_episode_whose_start_was_overwritten() -> None:
    store = ReplayStore.empty(2, 1, online_capacity=10)
    _fill(store, [4, 4, 4, 4], ["term", "trunc", "term", "open"])  # 16 rows, the ring keeps the last 10
    data = online_transitions(store, SPACES)
    data.validate()
    # kept rows: episode 1 steps 2-3 (start overwritten, dropped), episodes 2 and 3 whole
    assert len(data) == 8 and data.metadata.extra["dropped_wrapped_rows"] == 2
    np.testing.assert_array_equal(data.obs[:, 0], [2] * 4 + [3] * 4)
    assert data.step.tolist() == [0, 1, 2, 3] * 2
    assert data.terminated.tolist() == [False, False, False, True] + [False] * 4
    assert data.truncated[-1]


def test_nothing_exportable_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no online transitions"):
        online_transitions(ReplayStore.empty(2, 1, online_capacity=5), SPACES)
    wrapped = ReplayStore.empty(2, 1, online_capacity=5)
    _fill(wrapped, [12], ["term"])  # only the tail of one episode is left, and it ends the ring
    with pytest.raises(DataError, match="wrapped inside one episode"):
        online_transitions(wrapped, SPACES)


def test_run_loop_stops_after_the_first_evaluation_reaching_the_target(tmp_path: Path) -> None:
    returns = iter([1.0, 4.0, 9.0, 20.0])
    checkpoints: list[tuple[int, str]] = []
    result = run_loop(
        Cadence(total_steps=100, eval_every=10, log_every=7, target_return=5.0),
        lambda current: StepReport(updates=1),
        tracker=Tracker([]),
        progress=ProgressDisplay(100, description="t", enabled=False),
        evaluate=lambda current: EpisodeStats((next(returns),), (1,), (False,)),
        checkpoint=lambda step, tag: checkpoints.append((step, tag)),
    )
    assert result.stopped_by_target and not result.stopped_by_time
    assert result.steps == 30 and [r.step for r in result.evaluations] == [10, 20, 30]
    assert checkpoints[-1] == (30, "final") and result.final.stats.return_mean == 9.0


def test_finetune_saves_its_replay_and_stops_at_the_target_return(tmp_path: Path) -> None:
    replay = tmp_path / "replay.parquet"
    cfg = FinetuneConfig(
        env_id=tf.COUNTDOWN_ID, steps=1000, out_dir=str(tmp_path / "run"), agent={**tf.TINY_AGENT, "learning_starts": 30},
        eval_every=20, eval_episodes=1, log_every=10, tensorboard=False, quiet=True,
        target_return=-1.0,  # every episode of this env returns >= 0: the first evaluation stops the run
        save_replay=str(replay),
    )
    result = finetune(cfg)
    assert result.loop.stopped_by_target and result.loop.steps == 20
    assert result.to_dict()["stopped_by_target"] is True
    data, _ = read_parquet(replay)
    assert len(data) == 20 and data.metadata.env_id == tf.COUNTDOWN_ID
    # Countdown episodes cycle through 3-6 steps and end terminated (the 6-step one also hits the time
    # limit: stored as terminated); the 20-step run cuts the last one, which is marked truncated
    lengths = data.episode_lengths()
    assert set(lengths[:-1].tolist()) <= {3, 4, 5, 6} and len(lengths) >= 4
    assert data.terminated.sum() == len(lengths) - 1 and data.truncated.sum() == 1 and data.truncated[-1]
    assert data.action.min() >= 0.0 and data.action.max() <= 4.0  # env units
    assert data.action.std() > 0.5  # warm-up actions span the box, not its [-1, 1] image
    np.testing.assert_allclose(data.reward, data.action[:, 0], rtol=1e-5)  # this env pays the applied action
    ReplayStore.from_parquet(replay)  # loads back as offline data


def test_a_target_return_needs_periodic_evaluations() -> None:
    with pytest.raises(ConfigError, match="target_return"):
        FinetuneConfig(env_id="Pendulum-v1", eval_every=0, target_return=-200.0)
