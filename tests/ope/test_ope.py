"""Off-policy evaluation (``dime_offline.ope``, ``dime-offline ope``): FQE recovers values known in
closed form, the interval and seeding behave, and bad input is one line with exit code 2."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from dime_offline_cli.main import app
from typer.testing import CliRunner

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import resolve_checkpoint_dir, save_checkpoint
from dime_offline.data.load import save_dataset
from dime_offline.data.schema import DatasetMetadata, TransitionData
from dime_offline.data.spaces import SpaceSpec
from dime_offline.errors import ConfigError
from dime_offline.ope import (
    OPEConfig,
    _replayed_actions,
    evaluate_offline,
    fitted_q_evaluation,
)

SAMPLE = Path(__file__).resolve().parents[2] / "datasets" / "samples" / "pendulum-random-tiny.parquet"
FAST = {"steps": 800, "batch_size": 64, "hidden": (32, 32), "n_atoms": 51, "lr": 3e-3, "lr_schedule": "constant", "fits": 2,
        "bootstrap": 0}
"""FQE settings that fit the synthetic tasks below in about a second."""


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """Tiny networks: one intra-op thread is faster, and far faster on a busy machine (the tests'
    shared pattern, see tests/trainers/conftest.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ZeroPolicy:
    """Always action 0 (the values below do not depend on the policy)."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.zeros((len(obs), 1), np.float32)


def synthetic(episode_rewards: list[float], length: int, *, terminated: bool = False, seed: int = 0) -> TransitionData:
    """Episodes of ``length`` steps whose reward is constant within an episode (``episode_rewards[i]``);
    the observation holds that reward (so a critic can tell the episodes apart) and a random walk."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in
                                          ("episode_id", "step", "obs", "action", "reward", "next_obs", "terminated", "truncated")}
    for episode, reward in enumerate(episode_rewards):
        walk = np.cumsum(rng.normal(0, 0.1, (length + 1, 1)), axis=0)
        chain = np.hstack([np.full((length + 1, 1), reward), walk]).astype(np.float32)
        last = np.arange(length) == length - 1
        parts["episode_id"].append(np.full(length, episode, np.int64))
        parts["step"].append(np.arange(length, dtype=np.int32))
        parts["obs"].append(chain[:-1])
        parts["next_obs"].append(chain[1:])
        parts["action"].append(rng.uniform(-1, 1, (length, 1)).astype(np.float32))
        parts["reward"].append(np.full(length, reward, np.float32))
        parts["terminated"].append(last if terminated else np.zeros(length, bool))
        parts["truncated"].append(np.zeros(length, bool) if terminated else last)
    return TransitionData(**{k: np.concatenate(v) for k, v in parts.items()},
                          metadata=DatasetMetadata(action_low=[-1.0], action_high=[1.0]))


@pytest.mark.parametrize("critic", ["scalar", "distributional"])
def test_constant_reward_without_terminations_is_worth_r_over_one_minus_gamma(critic: str) -> None:
    data = synthetic([1.0] * 12, 20)
    cfg = OPEConfig(**FAST, critic=critic, return_tail="repeat_last_reward")
    result = fitted_q_evaluation(ZeroPolicy(), data, cfg, gamma=0.9)
    assert result.value.estimate == pytest.approx(10.0, abs=0.5)
    assert result.mean_state_value.estimate == pytest.approx(10.0, abs=0.5)
    if critic == "scalar":  # no policy can earn more than the best logged reward for ever: 10
        assert result.value.estimate <= 10.0 + 1e-5 and result.mean_state_value.estimate <= 10.0 + 1e-5
    assert abs(result.last_quarter_change) < 0.5 and not any("settled" in note for note in result.notes)
    early = fitted_q_evaluation(ZeroPolicy(), data, OPEConfig(**{**FAST, "steps": 60}), gamma=0.9)
    assert any("6 target refreshes, fewer than the ~3 / (1 - gamma) = 30" in note for note in early.notes)
    # The behaviour's Monte-Carlo return with the repeated-reward tail is exact here, and with the
    # zero tail it is the 20 observed steps only.
    assert result.behaviour_value.estimate == pytest.approx(10.0, rel=1e-5)
    cut = fitted_q_evaluation(ZeroPolicy(), data, OPEConfig(**{**FAST, "steps": 1}, return_tail="zero"), gamma=0.9)
    assert cut.behaviour_value.estimate == pytest.approx((1 - 0.9**20) / 0.1, rel=1e-5)


def test_a_step_into_a_terminal_state_is_worth_its_reward() -> None:
    data = synthetic([-3.0] * 200, 1, terminated=True)
    # A terminal reward enters the support once: [-3.75, 0.75] (without the terminal mask it had
    # room for -3 / (1 - gamma), [-375, 75], where -3 is a small step; the longer fit and the
    # decaying learning rate were sized for that). 200 rows: with 40 the critic fitted them within
    # 0.05 but read -3.4 at the policy's action between them.
    cfg = OPEConfig(**{**FAST, "steps": 2000, "lr_schedule": "cosine"})
    result = fitted_q_evaluation(ZeroPolicy(), data, cfg, gamma=0.99)
    assert result.value.estimate == pytest.approx(-3.0, abs=0.3)
    assert result.behaviour_value.estimate == pytest.approx(-3.0)
    assert result.support == pytest.approx((-3.75, 0.75))


def test_interval_covers_the_estimate_and_the_truth_and_a_seed_reproduces_the_run() -> None:
    rewards = list(np.linspace(-1.0, 1.0, 16))
    data = synthetic(rewards, 10)
    cfg = OPEConfig(**{**FAST, "bootstrap": 8}, return_tail="repeat_last_reward")
    result = fitted_q_evaluation(ZeroPolicy(), data, cfg, gamma=0.8)
    value = result.value
    assert value.lo is not None and value.hi is not None
    assert value.lo <= value.estimate <= value.hi and value.hi - value.lo > 0.1
    assert 0 < result.fit_spread < 0.5  # two initialisations, nearly the same value
    truth = float(np.mean(rewards)) / (1 - 0.8)  # 0: resampling episodes moves it by ~0.6 either way
    assert value.estimate == pytest.approx(truth, abs=0.4)
    assert value.lo - 0.2 <= truth <= value.hi + 0.2
    # The policy equals the behaviour in value here, so the paired difference is centred near 0.
    assert result.improvement.lo <= 0.3 and result.improvement.hi >= -0.3

    again = fitted_q_evaluation(ZeroPolicy(), data, cfg, gamma=0.8).to_dict()
    first = result.to_dict()
    first.pop("wall_seconds"), again.pop("wall_seconds")
    assert first == again
    other = fitted_q_evaluation(ZeroPolicy(), data, OPEConfig(**{**FAST, "bootstrap": 8, "seed": 1}), gamma=0.8)
    assert other.value.estimate != result.value.estimate


class Gain:
    """Steers the state towards 0 with a proportional gain (a negative gain steers away)."""

    def __init__(self, gain: float) -> None:
        self.gain = gain

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return np.clip(-self.gain * obs[:, :1], -1.0, 1.0).astype(np.float32)


def _drift(x: np.ndarray, action: np.ndarray) -> np.ndarray:
    """A point that the action moves by up to 0.2 per step, inside [-2, 2]; the reward is -x^2."""
    return np.clip(x + 0.2 * action, -2.0, 2.0)


def drift_episodes(episodes: int, length: int, seed: int = 0) -> TransitionData:
    """Logged episodes of :func:`_drift` under uniformly random actions from uniform initial states."""
    rng = np.random.default_rng(seed)
    x = np.zeros((episodes, length + 1), np.float32)
    x[:, 0] = rng.uniform(-2.0, 2.0, episodes)
    actions = rng.uniform(-1.0, 1.0, (episodes, length)).astype(np.float32)
    for t in range(length):
        x[:, t + 1] = _drift(x[:, t], actions[:, t])
    last = np.tile(np.arange(length) == length - 1, episodes)
    return TransitionData(
        episode_id=np.repeat(np.arange(episodes), length), step=np.tile(np.arange(length, dtype=np.int32), episodes),
        obs=x[:, :-1].reshape(-1, 1), action=actions.reshape(-1, 1), reward=-np.square(x[:, :-1]).reshape(-1),
        next_obs=x[:, 1:].reshape(-1, 1), terminated=np.zeros(episodes * length, bool), truncated=last,
        metadata=DatasetMetadata(action_low=[-1.0], action_high=[1.0]),
    )


def test_policies_of_clearly_different_quality_are_ranked_as_their_true_values() -> None:
    """Four policies, 3 to 30 apart in true value (exact rollouts from the data's initial states):
    FQE from random-action data must order them as their true values and come within 30 % (the two
    that push to the edge are underestimated by 20-25 %: the data rarely stays there)."""
    data = drift_episodes(40, 25)
    initial = data.obs[data.episode_starts(), 0]
    gains, gamma = (2.0, 0.1, -0.5, -2.0), 0.9
    truths, estimates = [], []
    for gain in gains:
        x, truth = initial.copy(), 0.0
        for t in range(150):  # 0.9^150 < 1e-6
            truth += gamma**t * float(np.mean(-np.square(x)))
            x = _drift(x, Gain(gain).act(x[:, None])[:, 0])
        truths.append(truth)
        estimate = fitted_q_evaluation(Gain(gain), data, OPEConfig(**{**FAST, "fits": 1}), gamma=gamma).value.estimate
        estimates.append(estimate)
    assert np.all(np.diff(truths) < -2.0)  # clearly different: about -3.5, -10, -26, -30
    assert np.all(np.diff(estimates) < 0), (truths, estimates)
    assert np.allclose(estimates, truths, rtol=0.3), (truths, estimates)


class PreviousObservation:
    """A policy with memory: it acts on the observation one step earlier (its own after a reset),
    as a PI loop's proportional-on-measurement term does."""

    def __init__(self) -> None:
        self.previous: np.ndarray | None = None

    def reset(self) -> None:
        self.previous = None

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        remembered = obs if self.previous is None or len(self.previous) != len(obs) else self.previous
        self.previous = obs.copy()
        return (remembered[:, :1] / 2.0).astype(np.float32)


def test_a_policy_with_memory_is_replayed_along_the_logged_episodes() -> None:
    """Its action at a logged state remembers the episode's previous state (none at the start),
    and at a successor state the transition's own state, also after an episode's last step; the
    episodes differ in length (an ended one waits in the batch)."""
    full = drift_episodes(5, 6)
    keep = np.ones(len(full), bool)
    keep[[9, 10, 11, 19, 20, 21, 22, 23]] = False  # episode 1 keeps 3 steps, episode 3 one
    data = full.select(keep)
    assert data.episode_lengths().tolist() == [6, 3, 6, 1, 6]
    at_states, at_next = _replayed_actions(PreviousObservation(), data, deterministic=True)
    starts = data.episode_starts()
    remembered = np.roll(data.obs, 1, axis=0)
    remembered[starts] = data.obs[starts]
    np.testing.assert_array_equal(at_states, remembered / 2.0)
    np.testing.assert_array_equal(at_next, data.obs / 2.0)
    # A memoryless reading (every row's own state) differs: the test sees the replay.
    assert not np.allclose(at_states, data.obs / 2.0)


def test_config_fields_are_checked() -> None:
    for bad in ({"gamma": 1.0}, {"bootstrap": -1}, {"confidence": 1.0}, {"policy_mode": "greedy"}, {"steps": 0},
                {"critic": "quantile"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            OPEConfig(checkpoint="x", data="y", **bad)


# ----------------------------------------------------------------------------- the command
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny Pendulum agent: the command only needs a policy that acts."""
    cfg = DIMEConfig.preset("cpu", critic_hidden=(32, 32), score_hidden=(32, 32), score_frequencies=8,
                            score_time_hidden=16, diffusion_steps=4, act_candidates=4)
    spaces = SpaceSpec(obs_dim=3, action_dim=1, action_low=(-2.0,), action_high=(2.0,))
    directory = tmp_path_factory.mktemp("ope") / "checkpoint"
    return save_checkpoint(directory, DIMEAgent(3, 1, cfg), cfg, None, spaces=spaces, env_id="Pendulum-v1")


def _invoke(*args: object):
    return CliRunner().invoke(app, ["ope", *(str(a) for a in args)])


def _error_line(result) -> str:
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


def test_the_command_prints_one_json_object_and_writes_the_same_summary(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "ope"
    result = _invoke("--checkpoint", checkpoint, "--data", SAMPLE, "--steps", 30, "--out", out, "--json",
                     "--set", "bootstrap=3", "--set", "hidden=[16, 16]")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["acting"] == "best_of_k" and summary["gamma"] == 0.99 and summary["steps"] == 30
    assert summary["critic"] == "scalar"
    assert summary["transitions"] == 2000 and summary["episodes"] == 10
    value = summary["value"]
    assert value["lo"] <= value["hi"] and np.isfinite(value["estimate"])
    assert summary["behaviour"]["value"]["estimate"] < 0  # Pendulum's rewards are costs
    written = json.loads((out / "ope.json").read_text())
    written.pop("wall_seconds"), summary.pop("wall_seconds")
    assert written == summary
    assert json.loads((out / "ope_config.json").read_text())["hidden"] == [16, 16]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging leftovers

    human = _invoke("--checkpoint", checkpoint, "--data", SAMPLE, "--steps", 5, "--set", "bootstrap=2",
                    "--set", "policy_mode=stochastic", "--set", "hidden=[16, 16]")
    assert human.exit_code == 0, human.output
    assert "(stochastic actions)" in human.stdout and "policy value from the initial states" in human.stdout
    assert "to choose between policies, compare the lower ends" in human.stdout
    assert "logged behaviour" in human.stdout and "note: 0 target refreshes" in human.stdout


def test_several_checkpoints_are_ranked_best_first_by_the_lower_end(checkpoint: Path, tmp_path: Path) -> None:
    cfg = DIMEConfig.preset("cpu", critic_hidden=(32, 32), score_hidden=(32, 32), score_frequencies=8,
                            score_time_hidden=16, diffusion_steps=4, act_candidates=4)
    spaces = SpaceSpec(obs_dim=3, action_dim=1, action_low=(-2.0,), action_high=(2.0,))
    other = save_checkpoint(tmp_path / "other", DIMEAgent(3, 1, cfg, seed=7), cfg, None, spaces=spaces, env_id="Pendulum-v1")
    fast = ("--steps", 20, "--set", "bootstrap=3", "--set", "hidden=[16, 16]")
    out = tmp_path / "ranked"
    result = _invoke("--checkpoint", checkpoint, "--checkpoint", other, "--data", SAMPLE, "--out", out, "--json", *fast)
    assert result.exit_code == 0, result.output
    ranking = json.loads(result.stdout)["ranking"]
    assert sorted(r["checkpoint"] for r in ranking) == sorted(str(resolve_checkpoint_dir(c)) for c in (checkpoint, other))
    lower_ends = [r["value"]["lo"] for r in ranking]
    assert lower_ends == sorted(lower_ends, reverse=True)
    written = json.loads((out / "ranking.json").read_text())
    assert written["ranked_by"] == "lower end of the 90 % interval"
    assert [p["lo"] for p in written["policies"]] == lower_ends
    assert sorted(p.name for p in out.iterdir()) == ["0-checkpoint", "1-other", "ranking.json"]
    assert json.loads((out / "1-other" / "ope.json").read_text())["value"] in [r["value"] for r in ranking]

    human = _invoke("--checkpoint", checkpoint, "--checkpoint", other, "--data", SAMPLE, *fast)
    assert human.exit_code == 0, human.output
    assert "2 policies, best first by the lower end of the 90 % interval" in human.stdout
    assert [line[:3] for line in human.stdout.splitlines() if line[:1].isdigit()] == ["1. ", "2. "]
    assert human.stdout.count("target refreshes, fewer than") == 2  # each fit's notes, named by checkpoint

    # A missing checkpoint stops the ranking before any fit: nothing written.
    missing = _invoke("--checkpoint", checkpoint, "--checkpoint", tmp_path / "missing", "--data", SAMPLE,
                      "--out", tmp_path / "none", *fast)
    assert "missing" in _error_line(missing) and not (tmp_path / "none" / "0-checkpoint").exists()


def test_bad_input_is_one_line_with_exit_code_2(checkpoint: Path, tmp_path: Path) -> None:
    line = _error_line(_invoke("--checkpoint", tmp_path / "missing", "--data", SAMPLE))
    assert "missing" in line and "checkpoint not found" in line
    wide = synthetic([1.0] * 3, 5)  # 2 observation features, the checkpoint expects 3
    path, _ = save_dataset(wide, tmp_path / "wide.parquet")
    line = _error_line(_invoke("--checkpoint", checkpoint, "--data", path))
    assert "wide.parquet" in line and "observation dim 2, expected 3" in line
    line = _error_line(_invoke("--checkpoint", checkpoint, "--data", tmp_path / "nothing.parquet"))
    assert "nothing.parquet" in line
    line = _error_line(_invoke("--checkpoint", checkpoint, "--data", SAMPLE, "--set", "gamma=1.5"))
    assert "gamma" in line
    line = _error_line(_invoke("--checkpoint", checkpoint, "--data", SAMPLE, "--set", "bogus=1"))
    assert "bogus" in line
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _error_line(_invoke("--checkpoint", checkpoint, "--data", SAMPLE, "--out", blocker / "ope"))
    assert "a-file" in line  # refused before any fitting


def test_evaluate_offline_needs_a_checkpoint_and_data() -> None:
    with pytest.raises(ConfigError, match="checkpoint"):
        evaluate_offline(OPEConfig(data="x"))
