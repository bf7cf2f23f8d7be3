"""Learning is tested by learning: a contextual bandit (fast), Pendulum through the online trainer (slow).

Each learning check is parametrised over sabotage switches applied by monkeypatching the loss functions
``DIMEAgent.update`` calls (``dime_offline.agent.losses``); the public config has no such switches. The
intact agent must pass the threshold and every sabotaged one must miss it, so the threshold measures
the algorithm rather than luck.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dime_offline.agent import losses
from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.nets.diffusion import DiffusionPolicy
from dime_offline.types import Batch


def sabotage(monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """Break one sign or the critic target inside the agent's update."""
    target, actor = losses.soft_distributional_target, losses.actor_loss
    patched: dict[str, Callable[..., object]] = {}
    if kind == "entropy_sign":  # maximise -H instead of H, in the actor and in the soft value
        patched["actor_loss"] = lambda alpha, log_prob, q: actor(alpha, -log_prob, q)
        patched["soft_distributional_target"] = lambda p, r, d, log_prob, *rest: target(p, r, d, -log_prob, *rest)
    elif kind == "reward_sign":  # the critic learns -r
        patched["soft_distributional_target"] = lambda p, r, *rest: target(p, -r, *rest)
    elif kind == "no_bootstrap":  # the critic target forgets the future (as if every step were terminal)
        patched["soft_distributional_target"] = lambda p, r, d, *rest: target(p, r, torch.ones_like(d), *rest)
    elif kind != "none":
        raise ValueError(kind)
    for name, fn in patched.items():
        monkeypatch.setattr(losses, name, fn)


# --- contextual bandit -------------------------------------------------------------------------------
BANDIT_OBS = BANDIT_ACT = 2
BANDIT_ROWS = 128


def best_action(s: torch.Tensor) -> torch.Tensor:
    return 0.6 * torch.stack([s[:, 0], -s[:, 1]], dim=-1)


def bandit_reward(s: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return -5.0 * (a - best_action(s)).square().sum(-1)


@pytest.mark.parametrize(("kind", "learns"), [("none", True), ("reward_sign", False)])
def test_contextual_bandit_learns_the_best_action(monkeypatch: pytest.MonkeyPatch, kind: str, learns: bool) -> None:
    """One-step task r = -5 |a - a*(s)|^2, a*(s) = 0.6 (s0, -s1), uniform logged actions (full coverage).

    Every transition is terminal, so the target is the reward alone. The diffusion policy must move its
    actions onto a*(s): the mean sampled reward goes from about -8 (initial policy) to above -2.
    """
    sabotage(monkeypatch, kind)
    torch.manual_seed(0)
    cfg = DIMEConfig.preset(
        "cpu", batch_size=BANDIT_ROWS, critic_hidden=(64, 64), score_hidden=(64, 64), score_frequencies=16,
        score_time_hidden=32, diffusion_steps=8, n_atoms=51, v_min=-25.0, v_max=1.0, alpha_init=0.1,
        actor_lr=1e-3, critic_lr=1e-3,
    )
    agent = DIMEAgent(BANDIT_OBS, BANDIT_ACT, cfg, seed=0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(450):
        s = torch.rand(BANDIT_ROWS, BANDIT_OBS, generator=gen) * 2 - 1
        a = torch.rand(BANDIT_ROWS, BANDIT_ACT, generator=gen) * 2 - 1
        ones = torch.ones(BANDIT_ROWS)
        agent.update(Batch(s, a, bandit_reward(s, a), s, ones, 0 * ones, ones * float("nan"), 0 * ones))
    test_states = torch.rand(256, BANDIT_OBS, generator=torch.Generator().manual_seed(5)) * 2 - 1
    actions = torch.from_numpy(agent.act(test_states.repeat(16, 1).numpy()))
    mean_reward = bandit_reward(test_states.repeat(16, 1), actions).mean().item()
    mean_action_error = (actions.view(16, 256, 2).mean(0) - best_action(test_states)).abs().mean().item()
    if learns:
        assert mean_reward > -2.0, mean_reward
        assert mean_action_error < 0.15, mean_action_error
    else:
        assert mean_reward < -4.0, mean_reward


# --- temperature controls the spread ----------------------------------------------------------------
def train_on_fixed_q(alpha: float, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Train only the policy (authors' actor loss and optimiser settings) on Q(a) = -4 |a - (0.3, -0.2)|^2."""
    torch.manual_seed(0)
    policy = DiffusionPolicy(2, 2, n_steps=8, score_hidden=(64, 64), n_frequencies=16, time_hidden=32)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-3, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(0)
    centre = torch.tensor([0.3, -0.2])
    for _ in range(steps):
        sample = policy.sample(torch.rand(128, 2, generator=gen) * 2 - 1, generator=gen)
        q = -4.0 * (sample.action - centre).square().sum(-1)
        loss, _ = losses.actor_loss(alpha, sample.log_prob_surrogate, q)
        optimizer.zero_grad()
        loss.backward()
        for p in policy.parameters():
            p.grad.nan_to_num_(0.0).clamp_(-1.0, 1.0)
        optimizer.step()
    with torch.no_grad():
        actions = policy.sample(torch.zeros(4000, 2), generator=gen).action
    return actions.mean(0), actions.std(0)


def test_higher_temperature_gives_a_wider_trained_policy() -> None:
    centre = torch.tensor([0.3, -0.2])
    mean_cold, std_cold = train_on_fixed_q(0.01)
    mean_hot, std_hot = train_on_fixed_q(1.0)
    assert (std_hot > 1.3 * std_cold).all(), (std_hot, std_cold)
    assert (mean_cold - centre).abs().max() < 0.12  # both centred on the maximiser of Q
    assert (mean_hot - centre).abs().max() < 0.15


# --- Pendulum through the online trainer ------------------------------------------------------------
PENDULUM_STEPS = 5000
PENDULUM_THRESHOLD = -400.0


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "learns"), [("none", True), ("entropy_sign", False), ("no_bootstrap", False)])
def test_pendulum_learns_online_and_fails_when_sabotaged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kind: str, learns: bool
) -> None:
    """Online DIME on Pendulum-v1 through ``trainers.online.finetune``: cpu preset with 128-wide networks,
    1000 random steps, then UTD 2 (8000 updates).

    Intact: best evaluation (5 stochastic episodes, every 1000 steps) above -400 within 5000 env steps.
    Entropy sign flipped or bootstrapping removed: stays below.
    """
    from dime_offline.trainers.online import FinetuneConfig, finetune

    sabotage(monkeypatch, kind)
    cfg = FinetuneConfig(
        env_id="Pendulum-v1", steps=PENDULUM_STEPS, seed=0, out_dir=str(tmp_path / "run"), preset="cpu",
        agent={"learning_starts": 1000, "v_min": -1600.0, "v_max": 200.0, "critic_hidden": [128, 128],
               "score_hidden": [128, 128, 128]},
        eval_every=1000, eval_episodes=5, checkpoint_every=0, log_every=1000, tensorboard=False, quiet=True,
    )
    result = finetune(cfg)
    best = max(record.stats.return_mean for record in result.loop.evaluations)
    if learns:
        assert best > PENDULUM_THRESHOLD, [r.stats.return_mean for r in result.loop.evaluations]
    else:
        assert best < PENDULUM_THRESHOLD, [r.stats.return_mean for r in result.loop.evaluations]
