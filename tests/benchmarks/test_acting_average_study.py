"""benchmarks/acting_average_study.py: extra acting averages are the ones the agent itself would keep,
they do not change how the agent learns, and the measures read the boundary first."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from benchmark_scripts import load

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.types import Batch

study = load("acting_average_study")

OBS, ACT, ROWS = 4, 2, 32
TINY = DIMEConfig.preset(
    "cpu", batch_size=ROWS, critic_hidden=(32, 32), score_hidden=(32, 32), score_frequencies=8, score_time_hidden=16,
    diffusion_steps=4, brn_warmup_steps=2, matmul_precision="float32",
)


def _batch(seed: int) -> Batch:
    gen = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(ROWS, OBS, generator=gen), action=torch.rand(ROWS, ACT, generator=gen) * 2 - 1,
        reward=torch.randn(ROWS, generator=gen), next_obs=torch.randn(ROWS, OBS, generator=gen),
        terminated=torch.zeros(ROWS), truncated=torch.zeros(ROWS),
        mc_return=torch.full((ROWS,), float("nan")), is_offline=torch.zeros(ROWS),
    )


def _flat(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for m in modules for t in (*m.parameters(), *m.buffers())]


def test_an_extra_average_with_the_agents_decay_is_the_agents_average_and_learning_is_unchanged() -> None:
    cfg = dataclasses.replace(TINY, acting_average_decay=0.9)
    plain, watched = DIMEAgent(OBS, ACT, cfg, seed=3), DIMEAgent(OBS, ACT, cfg, seed=3)
    extras = study.ExtraAverages(watched, [0.0, 0.9, 0.5])
    for i in range(5):
        plain.update(_batch(i))
        watched.update(_batch(i))
    # Learning is the same: live weights and the agent's own average match an agent without extras.
    for a, b in zip(_flat(plain.policy, plain.critic, plain.acting_policy, plain.acting_critic),
                    _flat(watched.policy, watched.critic, watched.acting_policy, watched.acting_critic)):
        assert torch.equal(a, b)
    arms = extras.arms()
    assert set(arms) == {"decay_0.9", "decay_0.5", "decay_0"}
    for a, b in zip(_flat(*arms["decay_0.9"]), _flat(watched.acting_policy, watched.acting_critic)):
        assert torch.allclose(a, b, atol=1e-7)
    assert arms["decay_0"] == (watched.policy, watched.critic)
    # A faster average sits nearer the live weights than the agent's own.
    live = _flat(watched.policy)
    gap = {d: sum(float((a - w).abs().sum()) for a, w in zip(_flat(arms[f"decay_{d}"][0]), live)) for d in ("0.5", "0.9")}
    assert 0 < gap["0.5"] < gap["0.9"]


def test_measures_take_the_first_evaluation_as_the_boundary() -> None:
    def evals(means: list[float]) -> list[dict]:
        return [{"mean": m, "returns": [m - 10.0, m + 10.0]} for m in means]

    # 1000 steps, evaluations every 100: the dip window holds the first online evaluation only.
    measured = study._measures(evals([1000.0, 950.0, 2000.0, 1500.0, 1900.0] + [1900.0] * 6), steps=1000, eval_every=100)
    assert measured["boundary"] == 1000.0
    assert measured["dip_ratio"] == pytest.approx(0.95) and measured["dip_ok"]
    assert measured["drawdown"] == pytest.approx(500.0) and not measured["kept"]
    assert measured["final"] == 1900.0
    dipped = study._measures(evals([1000.0, 800.0, 900.0]), steps=1000, eval_every=100)
    assert dipped["dip_ratio"] == pytest.approx(0.8) and not dipped["dip_ok"] and dipped["kept"]
