"""--resume: a run killed after a periodic checkpoint and resumed ends exactly as the uninterrupted
run (metrics and weights, bit for bit on CPU); stops by signal save whole steps, or the state before
an interrupted evaluation, which the resumed run then runs first; mistakes are one line."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trainer_factories as tf

from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_checkpoint, resolve_checkpoint_dir
from dime_offline.errors import ConfigError, RunInterruptedError
from dime_offline.regularizers import OfflineConfig
from dime_offline.trainers import scaffold
from dime_offline.trainers.collect import CollectConfig, collect
from dime_offline.trainers.offline import PretrainConfig, pretrain
from dime_offline.trainers.online import FinetuneConfig, finetune
from dime_offline.trainers.resume import read_resume_state

EPISODE = 25
"""Pendulum episodes are cut to this many steps (so runs cross episode ends and resume mid-episode)."""
TIMING_KEYS = ("train/updates_per_second",)
"""Metrics that measure wall time, which no resume can reproduce."""


class Killed(Exception):
    """Stands for SIGKILL: the run dies where it is, with no clean-up and no checkpoint."""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("data") / "pendulum.parquet"
    collect(CollectConfig(env_id="Pendulum-v1", steps=150, out=str(path), quiet=True, max_episode_steps=EPISODE, seed=5))
    return str(path)


def _pretrain_cfg(out: Path, data: str, **changes) -> PretrainConfig:
    cfg = PretrainConfig(
        data=data, steps=40, out_dir=str(out), seed=2, agent=dict(tf.TINY_AGENT), eval_every=15, eval_episodes=1,
        checkpoint_every=12, log_every=5, max_episode_steps=EPISODE, tensorboard=False, quiet=True,
        offline=OfflineConfig(conservative_weight=0.5, behaviour_weight=1.0, n_actions=2),
    )
    return dataclasses.replace(cfg, **changes)


def _finetune_cfg(out: Path, **changes) -> FinetuneConfig:
    cfg = FinetuneConfig(
        env_id="Pendulum-v1", steps=90, out_dir=str(out), seed=4, agent={**tf.TINY_AGENT, "learning_starts": 30},
        eval_every=40, eval_episodes=1, checkpoint_every=35, log_every=10, max_episode_steps=EPISODE,
        tensorboard=False, quiet=True,
    )
    return dataclasses.replace(cfg, **changes)


def _metrics(out: str | Path) -> list[tuple[str, ...]]:
    """metrics.csv rows without the wall-clock column and the timing metrics."""
    lines = (Path(out) / "metrics.csv").read_text().splitlines()
    rows = [tuple(line.split(",")) for line in lines]
    return [(step, key, value) for step, _, key, value in rows if key not in TIMING_KEYS]


def _state(out: str | Path) -> dict:
    """The saved agent state of a run directory's learner (``checkpoint/``, not the champion it deploys),
    or of the checkpoint directory ``out``."""
    out = Path(out)
    return torch.load(resolve_checkpoint_dir(out / "checkpoint" if (out / "checkpoint").exists() else out) / "state.pt", weights_only=True)


def _assert_same_state(a: dict, b: dict, where: str = "") -> None:
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        if isinstance(value, dict):
            _assert_same_state(value, b[key], f"{where}.{key}")
        elif isinstance(value, torch.Tensor):
            assert torch.equal(value, b[key]), f"{where}.{key}"
        else:
            assert value == b[key], f"{where}.{key}"


def _kill_at_update(monkeypatch: pytest.MonkeyPatch, number: int) -> None:
    """Make the ``number``-th agent update of the next run raise :class:`Killed`."""
    original, calls = DIMEAgent.update, {"n": 0}

    def dying_update(self, batch):
        calls["n"] += 1
        if calls["n"] == number:
            raise Killed
        return original(self, batch)

    monkeypatch.setattr(DIMEAgent, "update", dying_update)


def test_a_pretraining_killed_after_a_periodic_checkpoint_resumes_to_the_same_run(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = pretrain(_pretrain_cfg(tmp_path / "whole", data))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 30)  # after the periodic checkpoint at step 24, mid-interval
        with pytest.raises(Killed):
            pretrain(_pretrain_cfg(tmp_path / "killed", data))
    assert json.loads((resolve_checkpoint_dir(tmp_path / "killed") / "meta.json").read_text())["extra"]["gradient_steps"] == 24
    resumed = pretrain(_pretrain_cfg(tmp_path / "killed", data, resume=True))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))
    assert resumed.loop.steps == 40 and resumed.loop.updates == whole.loop.updates
    assert [(r.step, r.stats) for r in resumed.loop.evaluations] == [(r.step, r.stats) for r in whole.loop.evaluations]
    summary = json.loads((Path(resumed.out_dir) / "summary.json").read_text())
    assert summary["steps"] == 40 and summary["best"]["step"] == whole.loop.best.step
    # A finished run resumes to its result without training.
    again = pretrain(_pretrain_cfg(tmp_path / "killed", data, resume=True))
    assert again.loop.steps == 40 and _metrics(again.out_dir) == _metrics(whole.out_dir)


def test_a_fine_tuning_killed_mid_episode_resumes_to_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = finetune(_finetune_cfg(tmp_path / "whole"))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 2 * (80 - 30))  # env step 80: after the checkpoint at 70, mid-episode (70 % 25 != 0)
        with pytest.raises(Killed):
            finetune(_finetune_cfg(tmp_path / "killed"))
    resumed = finetune(_finetune_cfg(tmp_path / "killed", resume=True))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))
    assert resumed.loop.updates == whole.loop.updates


def test_a_finished_pretraining_resumed_with_more_steps_becomes_the_longer_run(tmp_path: Path, data: str) -> None:
    whole = pretrain(_pretrain_cfg(tmp_path / "whole", data))
    pretrain(_pretrain_cfg(tmp_path / "extended", data, steps=30))  # ends on an evaluation step of the 40-step run
    extended = pretrain(_pretrain_cfg(tmp_path / "extended", data, resume=True))
    assert extended.loop.steps == 40 and extended.loop.updates == whole.loop.updates
    assert _metrics(extended.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(extended.out_dir), _state(whole.out_dir))
    assert json.loads((Path(extended.out_dir) / "summary.json").read_text())["steps"] == 40
    with pytest.raises(ConfigError, match="field 'steps' is 35 .* started with 40; a resumed run can raise it, not lower it"):
        pretrain(_pretrain_cfg(tmp_path / "extended", data, steps=35, resume=True))


def test_a_finished_fine_tuning_resumed_with_more_steps_becomes_the_longer_run(tmp_path: Path) -> None:
    whole = finetune(_finetune_cfg(tmp_path / "whole"))
    finetune(_finetune_cfg(tmp_path / "extended", steps=80))  # mid-episode, on an evaluation step of the 90-step run
    extended = finetune(_finetune_cfg(tmp_path / "extended", resume=True))
    assert extended.loop.steps == 90 and extended.loop.updates == whole.loop.updates
    assert _metrics(extended.out_dir) == _metrics(whole.out_dir)  # the same ring, episode and warm-up
    _assert_same_state(_state(extended.out_dir), _state(whole.out_dir))


def test_an_extended_run_from_scratch_keeps_the_warm_up_its_length_gave_it(tmp_path: Path) -> None:
    from dime_offline.trainers.online import MAX_DEFAULT_WARMUP_SHARE, WARMUP_KEY

    agent = {k: v for k, v in tf.TINY_AGENT.items() if k != "learning_starts"}  # the default scales with --steps
    warmup = int(40 * MAX_DEFAULT_WARMUP_SHARE)
    for name, recorded in (("new", True), ("old", False)):
        first = finetune(_finetune_cfg(tmp_path / name, steps=40, agent=agent))
        meta_file = resolve_checkpoint_dir(tmp_path / name / "checkpoint") / "meta.json"
        meta = json.loads(meta_file.read_text())
        assert meta["extra"][WARMUP_KEY] == warmup
        if not recorded:  # a checkpoint from before the warm-up was recorded: its run_config's steps size it
            del meta["extra"][WARMUP_KEY]
            meta_file.write_text(json.dumps(meta))
        extended = finetune(_finetune_cfg(tmp_path / name, steps=300, agent=agent, resume=True))
        # two updates (utd) in every added step: 300 x the share (60) would have acted at random again to step 60
        assert extended.loop.updates == first.loop.updates + (300 - 40) * 2, name


def test_a_fine_tuning_finished_without_its_ring_is_not_extended(tmp_path: Path) -> None:
    finetune(_finetune_cfg(tmp_path / "old", steps=40))
    tensors_file = resolve_checkpoint_dir(tmp_path / "old" / "checkpoint") / "resume" / "tensors.pt"
    saved = torch.load(tensors_file, weights_only=True)
    del saved["tensors"]["replay"]  # as final checkpoints were written before runs could be extended
    torch.save(saved, tensors_file)
    again = finetune(_finetune_cfg(tmp_path / "old", steps=40, resume=True))  # still complete: its result
    assert again.loop.steps == 40
    with pytest.raises(ConfigError, match="cannot extend the run in .*keeps no replay ring.*--checkpoint"):
        finetune(_finetune_cfg(tmp_path / "old", steps=60, resume=True))


def test_resume_refuses_a_missing_run_a_changed_setting_and_overwrite(tmp_path: Path, data: str) -> None:
    with pytest.raises(ConfigError, match="nothing to resume: .* holds no checkpoint of a pretrain run"):
        pretrain(_pretrain_cfg(tmp_path / "none", data, resume=True))
    pretrain(_pretrain_cfg(tmp_path / "run", data, steps=12))
    with pytest.raises(ConfigError, match="field 'seed' is 3 but the run .* was started with 2"):
        pretrain(_pretrain_cfg(tmp_path / "run", data, steps=12, seed=3, resume=True))
    with pytest.raises(ConfigError, match="set only one of them"):
        pretrain(_pretrain_cfg(tmp_path / "run", data, steps=12, resume=True, overwrite=True))
    with pytest.raises(ConfigError, match="holds a pretrain run, not a finetune run"):
        finetune(_finetune_cfg(tmp_path / "run", resume=True))


def test_ctrl_c_and_sigterm_save_whole_steps_and_the_run_resumes_exactly(tmp_path: Path) -> None:
    whole = finetune(_finetune_cfg(tmp_path / "whole", checkpoint_every=0))
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"stopped-{sig.name}"
        original = DIMEAgent.update
        calls = {"n": 0}

        def update(self, batch, sig=sig, calls=calls, original=original):
            calls["n"] += 1
            if calls["n"] == 45:  # in step 54 (updates start at 32, two a step), before its second update
                os.kill(os.getpid(), sig)
            return original(self, batch)

        DIMEAgent.update = update
        try:
            with pytest.raises(RunInterruptedError, match=r"interrupted: steps 1-54 are saved") as info:
                finetune(_finetune_cfg(out, checkpoint_every=0))
        finally:
            DIMEAgent.update = original
        assert info.value.exit_code == 130
        resumed = finetune(_finetune_cfg(out, checkpoint_every=0, resume=True))
        assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
        _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))


def _signal_in_evaluation(patch: pytest.MonkeyPatch, number: int) -> None:
    """Send SIGINT to this process in the ``number``-th reported evaluation of the next run (a stage
    evaluates through its scaffold; after a fine-tuning's champion contest), at its policy's third action (so a stochastic policy has drawn noise by then)."""
    original_evaluate, original_act = scaffold.evaluate, DIMEAgent.act
    seen = {"evaluations": 0, "evaluating": False, "actions": 0}

    def evaluate(*args, **kwargs):
        if kwargs["seed"] >= scaffold.SELECTION_SEED_OFFSET:  # a champion's or select_acting's episodes: not counted
            return original_evaluate(*args, **kwargs)
        seen["evaluations"] += 1
        seen["evaluating"], seen["actions"] = True, 0
        try:
            return original_evaluate(*args, **kwargs)
        finally:
            seen["evaluating"] = False

    def act(self, obs, deterministic=False):
        if seen["evaluating"] and seen["evaluations"] == number:
            seen["actions"] += 1
            if seen["actions"] == 3:
                os.kill(os.getpid(), signal.SIGINT)
        return original_act(self, obs, deterministic)

    patch.setattr(scaffold, "evaluate", evaluate)
    patch.setattr(DIMEAgent, "act", act)


@pytest.mark.parametrize(
    ("stage", "evaluation", "step"),
    [("pretrain", 2, 30), ("pretrain", 3, 40), ("finetune", 1, 40), ("finetune", 3, 90)],
    ids=["pretrain-mid-run", "pretrain-final", "finetune-mid-run", "finetune-final"],
)
def test_a_run_stopped_during_an_evaluation_resumes_with_that_evaluation(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch, stage: str, evaluation: int, step: int
) -> None:
    """Stochastic evaluations (they draw from the agent's acting noise, which fine-tuning acts with
    too): the stop saves the state before the evaluation, and the resumed run repeats it first."""
    if stage == "pretrain":  # evaluations at 15, 30 and 40; step 30 is no log step (its partial log is dropped again)
        train = pretrain

        def cfg(out: Path, **changes):
            return _pretrain_cfg(out, data, eval_deterministic=False, log_every=7, **changes)
    else:  # evaluations at 40, 80 and 90, periodic checkpoints at 35 and 70
        train = finetune

        def cfg(out: Path, **changes):
            return _finetune_cfg(out, eval_deterministic=False, **changes)

    whole = train(cfg(tmp_path / "whole"))
    with monkeypatch.context() as patch:
        _signal_in_evaluation(patch, evaluation)
        with pytest.raises(RunInterruptedError, match=rf"steps 1-{step} are saved.*its evaluation at step {step} runs first"):
            train(cfg(tmp_path / "stopped"))
    saved = read_resume_state(resolve_checkpoint_dir(tmp_path / "stopped" / "checkpoint"))
    assert saved.loop.step == step and saved.loop.evaluation_owed
    assert [r.step for r in saved.loop.evaluations] == [r.step for r in whole.loop.evaluations[: evaluation - 1]]
    resumed = train(cfg(tmp_path / "stopped", resume=True))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    _assert_same_state(_state(resumed.out_dir), _state(whole.out_dir))
    _assert_same_state(_state(tmp_path / "stopped" / "best"), _state(tmp_path / "whole" / "best"))
    assert [(r.step, r.stats) for r in resumed.loop.evaluations] == [(r.step, r.stats) for r in whole.loop.evaluations]
    assert resumed.loop.updates == whole.loop.updates and not read_resume_state(resolve_checkpoint_dir(Path(resumed.out_dir) / "checkpoint")).loop.evaluation_owed


def test_the_resume_state_of_an_older_checkpoint_loads(tmp_path: Path, data: str) -> None:
    """Loop states written before ``evaluation_owed`` existed owe no evaluation."""
    pretrain(_pretrain_cfg(tmp_path / "run", data, steps=5))
    state_file = resolve_checkpoint_dir(tmp_path / "run" / "checkpoint") / "resume" / "state.json"
    document = json.loads(state_file.read_text())
    del document["loop"]["evaluation_owed"]
    state_file.write_text(json.dumps(document))
    loop = read_resume_state(resolve_checkpoint_dir(tmp_path / "run" / "checkpoint")).loop
    assert loop.step == 5 and loop.finished and not loop.evaluation_owed
    assert pretrain(_pretrain_cfg(tmp_path / "run", data, steps=5, resume=True)).loop.steps == 5


@pytest.mark.slow  # three CLI processes (torch imports): ~40 s on a busy 2-core machine
def test_the_cli_resumes_a_run_killed_with_sigkill(tmp_path: Path, data: str) -> None:
    """A real kill -9 of ``dime-offline pretrain`` after its first periodic checkpoint; ``--resume --out``
    alone continues it (the run's saved settings) to the uninterrupted run's metrics and weights."""
    sets = [
        "agent.critic_hidden=[32, 32]", "agent.score_hidden=[32, 32]", "agent.score_frequencies=8",
        "agent.score_time_hidden=16", "agent.diffusion_steps=4", "agent.batch_size=32", "checkpoint_every=10",
        "eval_every=0", "eval_episodes=1", "max_episode_steps=25", "log_every=5", "tensorboard=false", "torch_threads=1",
    ]
    args = [a for s in sets for a in ("--set", s)]

    def cli(*extra: str) -> subprocess.Popen:
        command = [sys.executable, "-c", "from dime_offline_cli.main import app; app()", "pretrain", *extra]
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    run = ["--data", data, "--steps", "120", "--seed", "1", *args]
    killed = cli("--out", str(tmp_path / "killed"), *run)
    pointer = tmp_path / "killed" / "checkpoint"
    while not pointer.exists() and killed.poll() is None:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read() if killed.stderr else ""
    resumed = cli("--out", str(tmp_path / "killed"), "--resume", "--json")
    assert resumed.wait() == 0, resumed.stderr.read() if resumed.stderr else ""
    whole = cli("--out", str(tmp_path / "whole"), *run, "--json")
    assert whole.wait() == 0
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")
    _assert_same_state(_state(tmp_path / "killed"), _state(tmp_path / "whole"))
    loaded = load_checkpoint(tmp_path / "killed" / "checkpoint")[0]
    assert np.isfinite(loaded.alpha)


def test_run_resumes_the_stage_that_was_stopped_and_reuses_the_finished_one(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dime_offline.trainers.pipeline import PipelineConfig, run_pipeline

    def cfg(out: str, **changes) -> PipelineConfig:
        fields = {"pretrain_steps": 12, "finetune_steps": 40, **changes}
        return PipelineConfig(
            data=data, out_dir=str(tmp_path / out), evaluations=2, eval_episodes=1,
            seed=1, quiet=True, agent={k: v for k, v in tf.TINY_AGENT.items() if k != "learning_starts"}, **fields,
        )

    whole = run_pipeline(cfg("whole"))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 12 + 2 * 15)  # fine-tuning, env step 15 (updates from step 1: a pretrained agent)
        with pytest.raises(Killed):
            run_pipeline(cfg("killed"))
    pretrained = _state(tmp_path / "killed" / "pretrain")
    resumed = run_pipeline(cfg("killed", resume=True))
    _assert_same_state(_state(tmp_path / "killed" / "pretrain"), pretrained)  # reused, not retrained
    for stage in ("pretrain", "finetune"):
        assert _metrics(tmp_path / "killed" / stage) == _metrics(tmp_path / "whole" / stage)
    _assert_same_state(_state(tmp_path / "killed" / "finetune"), _state(tmp_path / "whole" / "finetune"))
    assert resumed.online_stats == whole.online_stats and resumed.offline_stats == whole.offline_stats
    with pytest.raises(ConfigError, match="started with 40 steps, this run asks for 60; .*finetune --resume"):
        run_pipeline(cfg("killed", resume=True, finetune_steps=60))  # one stage extended: not this run's second stage


def test_cli_resume_mistakes_are_one_line_with_exit_code_2(tmp_path: Path, data: str) -> None:
    from dime_offline_cli.main import app
    from typer.testing import CliRunner

    def invoke(*args: object):
        return CliRunner().invoke(app, [str(a) for a in args])

    missing = invoke("finetune", "--env", "Pendulum-v1", "--out", tmp_path / "none", "--resume")
    assert missing.exit_code == 2 and missing.output.count("\n") == 1
    assert "nothing to resume" in missing.output and "Traceback" not in missing.output
    pretrain(_pretrain_cfg(tmp_path / "run", data, steps=5))
    changed = invoke("pretrain", "--out", tmp_path / "run", "--resume", "--steps", 3)
    assert changed.exit_code == 2 and changed.output.count("\n") == 1
    assert "field 'steps' is 3 but the run" in changed.output and "can raise it, not lower it" in changed.output
    same = invoke("pretrain", "--out", tmp_path / "run", "--resume", "--json")  # the run's saved settings
    assert same.exit_code == 0, same.output
    assert json.loads(same.stdout)["steps"] == 5
    extended = invoke("pretrain", "--out", tmp_path / "run", "--resume", "--steps", 9, "--json")
    assert extended.exit_code == 0, extended.output
    assert json.loads(extended.stdout)["steps"] == 9


def test_a_run_started_with_overwrite_resumes_from_its_saved_settings(tmp_path: Path, data: str) -> None:
    """The saved config records ``overwrite: true`` when the run replaced an older one; ``--resume
    --out`` alone must still continue it (the flag is how the run began, not part of the run), and
    ``--resume --overwrite`` together still refuse."""
    from dime_offline_cli.main import app
    from typer.testing import CliRunner

    def invoke(*args: object):
        return CliRunner().invoke(app, [str(a) for a in args])

    pretrain(_pretrain_cfg(tmp_path / "run", data, steps=3))
    pretrain(_pretrain_cfg(tmp_path / "run", data, steps=5, overwrite=True))
    assert json.loads((tmp_path / "run" / "pretrain_config.json").read_text())["overwrite"] is True
    resumed = invoke("pretrain", "--out", tmp_path / "run", "--resume", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["steps"] == 5
    both = invoke("pretrain", "--out", tmp_path / "run", "--resume", "--overwrite")
    assert both.exit_code == 2 and "overwrite would delete it" in both.output


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run stopped by an older dime-offline has no entry for settings added since (here the champion's):
    they count as their defaults, so ``--resume`` continues it instead of refusing."""
    whole = finetune(_finetune_cfg(tmp_path / "whole"))
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 100)  # after the periodic checkpoint at env step 70
        with pytest.raises(Killed):
            finetune(_finetune_cfg(tmp_path / "killed"))
    run = tmp_path / "killed"
    for path in (run / "finetune_config.json", resolve_checkpoint_dir(run / "checkpoint") / "meta.json"):
        saved = json.loads(path.read_text())
        run_config = saved["extra"]["run_config"] if "extra" in saved else saved
        for name in ("champion", "champion_margin"):
            del run_config[name]
        path.write_text(json.dumps(saved))
    resumed = finetune(_finetune_cfg(run, resume=True))
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
    with pytest.raises(ConfigError, match="field 'champion_margin' is 2.0 but the run .* was started with 1.0"):
        finetune(_finetune_cfg(run, resume=True, champion_margin=2.0))


def test_tensorboard_shows_each_step_once_after_a_resume(tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch) -> None:
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 30)  # after the checkpoint at step 24: steps 25-29 reached TensorBoard
        with pytest.raises(Killed):
            pretrain(_pretrain_cfg(tmp_path / "run", data, tensorboard=True))
    pretrain(_pretrain_cfg(tmp_path / "run", data, tensorboard=True, resume=True))
    events = event_accumulator.EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    steps = [event.step for event in events.Scalars("train/critic/loss")]
    assert steps == list(range(5, 41, 5))


def test_a_fine_tuning_of_an_agent_in_memory_resumes_without_a_warm_up(
    tmp_path: Path, data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with ``finetune(cfg, agent=...)`` (no checkpoint path in the config): the resumed run
    knows from the checkpoint that the agent was pretrained and takes no random warm-up."""
    pretrained = pretrain(_pretrain_cfg(tmp_path / "pre", data, steps=5)).agent
    agent = {**tf.TINY_AGENT, "learning_starts": 45}  # a scratch run's warm-up would cover the resumed steps
    cfg = _finetune_cfg(tmp_path / "ft", steps=50, checkpoint_every=35, eval_every=0, agent=agent)
    whole = finetune(dataclasses.replace(cfg, out_dir=str(tmp_path / "whole")), agent=copy.deepcopy(pretrained))
    first_update_step = whole.loop.steps - whole.loop.updates // 2 + 1  # updates start once the store holds a batch
    assert first_update_step == tf.TINY_AGENT["batch_size"]  # no warm-up
    with monkeypatch.context() as patch:
        _kill_at_update(patch, 2 * (40 - first_update_step) + 1)  # env step 40, after the checkpoint at 35
        with pytest.raises(Killed):
            finetune(cfg, agent=copy.deepcopy(pretrained))
    resumed = finetune(dataclasses.replace(cfg, resume=True))
    assert resumed.loop.updates == whole.loop.updates
    assert _metrics(resumed.out_dir) == _metrics(whole.out_dir)
