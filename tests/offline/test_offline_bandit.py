"""A task with a known optimum where out-of-distribution actions tempt a naive critic.

The repeated bandit of ``offline_factories.bandit_dataset``: logged actions sit in two narrow modes,
reward 1 at a = -0.5 and a rising 0.2 .. 0.8 at a = +0.5, and 0 everywhere else (never logged). The
true value of an out-of-distribution action is therefore exactly 1 below that of the good mode.

* Plain DIME (no regulariser) learns a critic that ranks some unlogged action well *above* the good
  mode, and the gap grows as bootstrapping feeds on it.
* The conservative penalty keeps every unlogged action below the good mode, and with a small fixed
  temperature (the offline setting; here alpha = 0.01) the deployed policy (best of K chain samples
  by the critics) earns more true reward than plain DIME's, on average over seeds. Which logged mode
  one seed's policy settles on is not stable: the penalty pushes down the value wherever the policy
  samples, and the outcome of a single seed flips with float rounding (a thread count, a rewritten
  but equal kernel), so no single-seed outcome is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from offline_factories import GOOD_MODE, SLOPED_MODE, bandit_dataset, bandit_reward, tiny_config

from dime_offline.agent.dime import DIMEAgent
from dime_offline.data.replay import ReplayStore
from dime_offline.regularizers import ConservativePenalty, OfflineConfig

GAMMA = 0.9
GRID = np.linspace(-1.0, 1.0, 21, dtype=np.float32)
OOD = np.abs(np.abs(GRID) - 0.5) > 0.2
"""Grid actions at least 0.2 from both modes (never logged: the data lies within 0.1 of a mode)."""


def _agent(conservative: bool, seed: int, **overrides: object) -> DIMEAgent:
    cfg = tiny_config(gamma=GAMMA, v_min=-100.0, v_max=100.0, policy_delay=1, actor_lr=1e-3, batch_size=64, **overrides)
    defaults = OfflineConfig()  # the candidates pretraining uses by default
    penalty = (ConservativePenalty(0.5, n_actions=defaults.n_actions, reuse_next_actions=defaults.reuse_next_actions, seed=seed)
               if conservative else None)
    return DIMEAgent(2, 1, cfg, seed=seed, critic_regularizer=penalty)


def _probe(agent: DIMEAgent) -> dict[str, float]:
    """Mean over 100 contexts of: the largest Q over unlogged grid actions minus Q at the good mode;
    and where the policy's samples fall."""
    obs = np.random.default_rng(1).uniform(-1.0, 1.0, (100, 2)).astype(np.float32)
    q = np.stack([agent.q_values(obs, np.full((100, 1), a, np.float32)).mean(0).numpy() for a in GRID])  # (21, 100)
    q_good = q[np.argmin(np.abs(GRID - GOOD_MODE))]
    actions = agent.act(obs)[:, 0]
    return {
        "ood_minus_good": float((q[OOD].max(0) - q_good).mean()),
        "near_good": float(np.mean(np.abs(actions - GOOD_MODE) < 0.2)),
        "near_sloped": float(np.mean(np.abs(actions - SLOPED_MODE) < 0.2)),
    }


def _train(agent: DIMEAgent, steps: int, probe_every: int, seed: int) -> list[dict[str, float]]:
    store = ReplayStore.from_transitions(bandit_dataset(), online_capacity=0, gamma=GAMMA)
    generator = torch.Generator().manual_seed(seed)
    probes = []
    for step in range(1, steps + 1):
        agent.update(store.sample(agent.cfg.batch_size, generator=generator))
        if step % probe_every == 0:
            probes.append(_probe(agent))
    return probes


def test_plain_critic_ranks_unlogged_actions_above_the_best_mode_and_conservative_below() -> None:
    """Short run (the default suite): after 500 updates with DIME's own temperature."""
    plain = _train(_agent(False, seed=0), 500, 500, seed=0)[-1]
    conservative = _train(_agent(True, seed=0), 500, 500, seed=0)[-1]
    assert plain["ood_minus_good"] > 1.0  # truth: -1
    assert conservative["ood_minus_good"] < 0.0


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_plain_overestimation_grows_while_the_conservative_critic_stays_below_the_data(seed: int) -> None:
    plain = _train(_agent(False, seed=seed), 2000, 250, seed=seed)
    conservative = _train(_agent(True, seed=seed), 2000, 250, seed=seed)
    assert max(p["ood_minus_good"] for p in plain) > 4.0
    assert all(p["ood_minus_good"] < 0.0 for p in conservative[1:])


@pytest.mark.slow
def test_conservative_dime_with_a_small_fixed_temperature_deploys_better_actions_than_plain_dime() -> None:
    """Three seeds, 1500 updates each, alpha fixed at 0.01: true reward of the deterministic actions
    on 100 contexts. Measured over seeds 0-5 at one and two threads: conservative 0.45-1.00 (means
    0.79-0.81), plain 0.09-0.94 (means 0.51-0.57); the data's mean reward is 0.74."""
    obs = np.random.default_rng(1).uniform(-1.0, 1.0, (100, 2)).astype(np.float32)
    deployed = {True: [], False: []}
    for seed in (0, 1, 2):
        for conservative in (True, False):
            agent = _agent(conservative, seed=seed, alpha_mode="fixed", alpha_init=0.01)
            final = _train(agent, 1500, 1500, seed=seed)[-1]
            if conservative:
                assert final["ood_minus_good"] < 0.0, seed
            deployed[conservative].append(float(bandit_reward(agent.act(obs, deterministic=True)).mean()))
    assert np.mean(deployed[True]) > np.mean(deployed[False]) + 0.1, deployed
