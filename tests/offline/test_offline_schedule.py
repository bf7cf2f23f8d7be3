"""OfflineConfig: offline vs online phases, the offline agent settings, and the checkpoint description."""

from __future__ import annotations

import json

import pytest
from offline_factories import tiny_config

from dime_offline.agent.dime import DIMEAgent
from dime_offline.config import from_dict, to_dict
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.regularizers import (
    BehaviourLikelihood,
    ConservativePenalty,
    OfflineConfig,
    attach_regularizers,
    describe_regularizers,
    regularizer_weights,
)

SWITCHING = OfflineConfig(
    conservative_weight=0.6, conservative_weight_online=0.2, calibration=True, calibration_online=False,
    behaviour_weight=3.0, behaviour_weight_online=0.0, n_actions=3, softmax_temperature=2.0, behaviour_paths=2,
    behaviour_scored_steps=2,
)


def test_each_phase_gets_its_own_weights_and_calibration() -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    SWITCHING.attach(agent, "offline", seed=5)
    critic, actor = agent.critic_regularizer, agent.actor_regularizer
    assert isinstance(critic, ConservativePenalty) and isinstance(actor, BehaviourLikelihood)
    assert (critic.weight, critic.lower_bound, critic.n_actions, critic.temperature) == (0.6, True, 3, 2.0)
    assert (actor.weight, actor.n_paths, actor.scored_steps) == (3.0, 2, 2)
    assert regularizer_weights(agent, "offline/") == {
        "offline/conservative_weight": 0.6, "offline/behaviour_weight": 3.0, "offline/calibration": 1.0,
    }
    SWITCHING.attach(agent, "online", seed=5)
    assert regularizer_weights(agent, "online/") == {
        "online/conservative_weight": 0.2, "online/behaviour_weight": 0.0, "online/calibration": 0.0,
    }


@pytest.mark.parametrize("offline", [True, False])
def test_online_calibration_follows_pretraining_unless_set(offline: bool) -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    OfflineConfig(calibration=offline).attach(agent, "online")
    assert agent.critic_regularizer.lower_bound is offline  # switching it at the boundary dips
    OfflineConfig(calibration=offline, calibration_online=not offline).attach(agent, "online")
    assert agent.critic_regularizer.lower_bound is (not offline)
    restored = from_dict(OfflineConfig, to_dict(OfflineConfig(calibration=offline)))
    assert restored.calibration_online is None and restored.online_calibration is offline


def test_offline_temperature_and_reduction_apply_to_the_pretraining_agent_only() -> None:
    online = tiny_config()
    offline = OfflineConfig(alpha_mode="fixed", alpha=0.05, actor_q_reduction="min").agent_config(online)
    assert (offline.alpha_mode, offline.alpha_init, offline.actor_q_reduction) == ("fixed", 0.05, "min")
    assert (online.alpha_mode, online.alpha_init, online.actor_q_reduction) == ("auto", 1.0, "mean")
    lower = OfflineConfig(alpha_mode="auto", target_entropy_per_dim=-8.0).agent_config(online)
    assert lower.alpha_mode == "auto" and lower.target_entropy(2) == -16.0 and lower.alpha_init == online.alpha_init


def test_the_default_offline_temperature_is_fixed_at_a_tenth_of_the_reward_spread() -> None:
    online = tiny_config()
    derived = OfflineConfig().agent_config(online, reward_std=4.0)
    assert (derived.alpha_mode, derived.alpha_init) == ("fixed", pytest.approx(0.4))
    assert OfflineConfig(alpha_per_reward_std=0.5).agent_config(online, reward_std=4.0).alpha_init == pytest.approx(2.0)
    assert OfflineConfig(alpha=0.3).agent_config(online, reward_std=4.0).alpha_init == 0.3
    for missing in (None, 0.0):
        with pytest.raises(ConfigError, match="offline.alpha"):
            OfflineConfig().agent_config(online, reward_std=missing)


def test_description_round_trips_through_json_onto_a_fresh_agent() -> None:
    source = DIMEAgent(3, 2, tiny_config(), seed=0)
    SWITCHING.attach(source, "online", seed=7)
    description = json.loads(json.dumps(describe_regularizers(source)))
    assert description == SWITCHING.describe("online", seed=7)
    target = DIMEAgent(3, 2, tiny_config(), seed=1)
    attach_regularizers(target, description)
    assert describe_regularizers(target) == description
    assert target.critic_regularizer is not source.critic_regularizer
    attach_regularizers(target, None)  # no description (e.g. a checkpoint of plain DIME): unchanged
    assert describe_regularizers(target) == description


def test_plain_agents_describe_as_none_and_custom_regularisers_are_refused() -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    assert describe_regularizers(agent) == {"critic": None, "actor": None}

    class Custom:
        weight = 1.0

        def __call__(self, ctx):  # pragma: no cover - never called
            raise AssertionError

    agent.actor_regularizer = Custom()
    with pytest.raises(ConfigError, match="Custom"):
        describe_regularizers(agent)


@pytest.mark.parametrize(
    "description",
    [
        {"critic": {"type": "behaviour", "weight": 1.0, "n_paths": 1, "seed": 0}, "actor": None},
        {"critic": {"type": "conservative", "weight": 1.0}, "actor": None},
        {"critic": None, "actor": {"type": "behaviour", "weight": "x", "n_paths": 1, "seed": 0}},
    ],
)
def test_a_malformed_description_is_a_one_line_checkpoint_error(description: dict) -> None:
    agent = DIMEAgent(3, 2, tiny_config(), seed=0)
    with pytest.raises(CheckpointError) as err:
        attach_regularizers(agent, description, file="runs/pre/checkpoint")
    assert err.value.one_line().startswith("runs/pre/checkpoint: ") and "\n" not in err.value.one_line()


@pytest.mark.parametrize(
    ("field", "value"),
    [("conservative_weight", -1.0), ("behaviour_weight_online", -0.1), ("n_actions", 0), ("softmax_temperature", 0.0),
     ("behaviour_paths", 0), ("behaviour_scored_steps", 0), ("alpha", 0.0), ("alpha_per_reward_std", 0.0)],
)
def test_invalid_settings_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"offline.{field}"):
        from_dict(OfflineConfig, {**to_dict(OfflineConfig()), field: value})


def test_the_behaviour_term_keeps_its_pretraining_weight_online_at_least_the_floor_unless_told_otherwise() -> None:
    assert OfflineConfig(behaviour_weight=3.0).actor_regularizer("online").weight == 3.0
    assert OfflineConfig().actor_regularizer("offline").weight == 0.1
    assert OfflineConfig().actor_regularizer("online").weight == 1.0  # the library's 0.1 raised to the floor
    assert OfflineConfig().describe("online")["actor"]["weight"] == 1.0  # what the checkpoint records
    assert OfflineConfig(behaviour_weight=0.0).actor_regularizer("online").weight == 0.0  # off stays off
    assert OfflineConfig(behaviour_weight=3.0, behaviour_weight_online=0.5).actor_regularizer("online").weight == 0.5
    assert OfflineConfig(behaviour_weight=3.0, behaviour_weight_online=0.0).actor_regularizer("offline").weight == 3.0
