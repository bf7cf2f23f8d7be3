"""The offline -> online handover schedule (trainers/handover.py): batch shares and weight ramps."""

from __future__ import annotations

import numpy as np
import pytest

from dime_offline.errors import ConfigError
from dime_offline.regularizers import OfflineConfig
from dime_offline.data.returns import LoggedEpisodes
from dime_offline.evaluation.metrics import EpisodeStats
from dime_offline.trainers.handover import Handover, HandoverConfig, LogsComparison, RegularizerWeights


def test_offline_fraction_anneals_linearly() -> None:
    fixed = HandoverConfig()
    assert fixed.offline_fraction_at(1, 101) == fixed.offline_fraction_at(101, 101) == 0.5
    annealed = HandoverConfig(offline_fraction=0.5, offline_fraction_final=0.0)
    assert annealed.offline_fraction_at(1, 101) == 0.5
    assert annealed.offline_fraction_at(51, 101) == pytest.approx(0.25)
    assert annealed.offline_fraction_at(101, 101) == 0.0
    short = HandoverConfig(offline_fraction_final=1.0, offline_anneal_steps=11)
    assert short.offline_fraction_at(6, 101) == pytest.approx(0.75)
    assert short.offline_fraction_at(50, 101) == 1.0


def test_the_reuse_cap_keeps_the_first_online_rows_from_filling_the_batch() -> None:
    uncapped = HandoverConfig(online_reuse_limit=None)
    assert uncapped.batch_offline_fraction(1, 100, online_rows=10, offline_rows=3000) == 0.5
    uniform = HandoverConfig()  # r = 1: every stored row equally likely
    assert uniform.batch_offline_fraction(1, 100, online_rows=100, offline_rows=3000) == pytest.approx(3000 / 3100)
    assert uniform.batch_offline_fraction(1, 100, online_rows=5000, offline_rows=3000) == 0.5
    fourfold = HandoverConfig(online_reuse_limit=4.0)
    share = 1 - fourfold.batch_offline_fraction(1, 100, online_rows=100, offline_rows=3000)
    assert share == pytest.approx(400 / 3400)
    assert uniform.batch_offline_fraction(1, 100, online_rows=100, offline_rows=0) == 0.5  # no offline data


@pytest.mark.parametrize(
    ("field", "value"),
    [("offline_fraction", 1.5), ("offline_fraction_final", -0.1), ("online_reuse_limit", 0.0),
     ("offline_anneal_steps", 0), ("conservative_weight", -1.0), ("behaviour_weight", -0.5), ("ramp_steps", -1),
     ("alpha_mode", "warm"), ("alpha_start", 0.0), ("conservative_candidates", 0), ("surpassed_logs", "off")],
)
def test_bad_settings_name_their_field(field: str, value: float | str) -> None:
    with pytest.raises(ConfigError, match=f"handover.{field}"):
        HandoverConfig(**{field: value})


class _Agent:
    def __init__(self) -> None:
        offline = OfflineConfig(conservative_weight=1.0, conservative_weight_online=0.5, behaviour_weight=10.0, behaviour_weight_online=0.0)
        offline.attach(self, "online")  # type: ignore[arg-type]


def test_the_weights_ramp_from_pretraining_to_online_and_stay() -> None:
    agent = _Agent()
    end = RegularizerWeights.of(agent)  # type: ignore[arg-type]
    assert end == RegularizerWeights(0.5, 0.0)
    handover = Handover(HandoverConfig(ramp_steps=10), start=RegularizerWeights(1.0, 10.0), end=end)
    seen = []
    for step in (1, 6, 11, 500):
        handover.apply(agent, step)  # type: ignore[arg-type]
        seen.append(RegularizerWeights.of(agent))  # type: ignore[arg-type]
    assert seen == [RegularizerWeights(1.0, 10.0), RegularizerWeights(0.75, 5.0), end, end]


def test_without_a_ramp_the_online_weights_hold_from_the_first_step() -> None:
    agent = _Agent()
    handover = Handover(HandoverConfig(), start=RegularizerWeights(1.0, 10.0), end=RegularizerWeights(0.5, 2.0))
    handover.apply(agent, 1)  # type: ignore[arg-type]
    assert RegularizerWeights.of(agent) == RegularizerWeights(0.5, 2.0)  # type: ignore[arg-type]
    assert RegularizerWeights.from_dict(RegularizerWeights(0.5, None).to_dict()) == RegularizerWeights(0.5, None)


def test_the_penalty_takes_its_online_calibration_and_candidate_count_from_the_handover() -> None:
    import torch

    agent = _Agent()
    penalty = agent.critic_regularizer  # type: ignore[attr-defined]
    obs = torch.zeros(8, 3)
    assert penalty.policy_states(obs).shape[0] == 8  # pretraining's M = 2, one of them the reused a'
    Handover(HandoverConfig(), start=None, end=RegularizerWeights(0.5, 0.0)).apply(agent, 1)  # type: ignore[arg-type]
    assert (penalty.n_actions, penalty.lower_bound) == (2, True)  # None: what the checkpoint holds
    handover = Handover(HandoverConfig(conservative_candidates=1, conservative_calibration=False), start=None,
                        end=RegularizerWeights(0.5, 0.0))
    handover.apply(agent, 1)  # type: ignore[arg-type]
    assert (penalty.n_actions, penalty.lower_bound) == (1, False)
    assert penalty.policy_states(obs).shape[0] == 0  # a' is the only policy candidate: no chain for the penalty
    assert penalty.to_dict()["n_actions"] == 1  # what the fine-tuning checkpoint records


def _evaluation(returns: list[float], length: int = 10) -> EpisodeStats:
    return EpisodeStats(returns=tuple(returns), lengths=(length,) * len(returns), terminated=(False,) * len(returns))


def test_the_boundary_surpasses_the_logs_only_beyond_its_standard_error() -> None:
    reward = np.concatenate([np.full(10, 1.0), np.full(10, 5.0)])  # two 10-step episodes: returns 10 and 50
    ends = np.zeros(20, dtype=bool)
    ends[[9, 19]] = True
    logged = LoggedEpisodes.from_rows(reward, ends, np.zeros(20, dtype=bool))
    clear = LogsComparison.of(_evaluation([60.0, 62.0, 58.0, 60.0]), logged, reward, horizon=10)
    assert clear.logs_best == 50.0 and clear.surpassed
    assert clear.boundary_error == pytest.approx(np.std([60, 62, 58, 60], ddof=1) / 2)
    noisy = LogsComparison.of(_evaluation([10.0, 100.0]), logged, reward, horizon=10)  # mean 55, s.e. 45
    assert noisy.boundary_return == 55.0 and not noisy.surpassed
    below = LogsComparison.of(_evaluation([40.0, 41.0]), logged, reward, horizon=10)
    assert not below.surpassed
    # episodes of 20 steps cannot be judged against logs of 10-step fragments
    unjudged = LogsComparison.of(_evaluation([600.0, 600.0], length=20), logged, reward, horizon=20)
    assert unjudged.logs_best is None and not unjudged.surpassed
    assert unjudged.to_dict()["surpassed"] is False


def test_dropping_the_regularisers_keeps_the_weights_a_user_set() -> None:
    start, end = RegularizerWeights(1.0, 0.1), RegularizerWeights(0.5, 1.0)
    assert Handover(HandoverConfig(), start, end).without_regularizers().end == RegularizerWeights(0.0, 0.0)
    explicit = Handover(HandoverConfig(behaviour_weight=1.0), start, end).without_regularizers()
    assert explicit.end == RegularizerWeights(0.0, 1.0)
    ramped = Handover(HandoverConfig(ramp_steps=10), start, end).without_regularizers()
    assert ramped.weights_at(1) == start and ramped.weights_at(11) == RegularizerWeights(0.0, 0.0)
    absent = Handover(HandoverConfig(), None, RegularizerWeights(None, 1.0)).without_regularizers()
    assert absent.end == RegularizerWeights(None, 0.0)
