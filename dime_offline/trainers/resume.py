"""``--resume``: what a run's checkpoint holds besides the agent, and how a run continues from it.

A run's periodic checkpoints, the one written when SIGINT/SIGTERM stops it and its final one hold a
``resume/`` folder next to the slim checkpoint files (``load_policy``, ``export`` and ``evaluate``
never read it):

    resume/state.json   the loop (steps, updates, evaluations, step metrics not yet logged, wall
                        time), where metrics.csv stood, Python's and numpy's RNG states, and the
                        stage's own facts (fine-tuning: the running episode)
    resume/tensors.pt   torch's global RNG state, the batch sampler's and the regularisers' generators,
                        and the stage's tensors (fine-tuning: the online replay ring, unless the run
                        is finished, and the running episode's actions)

A resumed run rebuilds everything the way the first session did (data, environment, agent), then
loads the agent's ``state.pt`` and this state on top, cuts ``metrics.csv`` back to where it stood
at the checkpoint and continues TensorBoard from the next step; from a periodic checkpoint, or one
written when a signal stopped the run (after a whole step, or before an evaluation, which the
resumed loop then runs first: ``LoopState.evaluation_owed``), the result is the uninterrupted
run's, bit for bit on CPU (wall-clock columns aside).
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from dime_offline.checkpoints import (
    RESUME_SUBDIR,
    RUN_CHECKPOINT_SUBDIR,
    CheckpointMeta,
    read_checkpoint_meta,
    resolve_checkpoint_dir,
)
from dime_offline.config import from_dict, load_run_config, to_dict
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.tracking import MetricsPosition, Tracker
from dime_offline.trainers.loop import LoopState

C = TypeVar("C")

RESUME_FORMAT_VERSION = 1
RESUME_STATE_FILE = "state.json"
RESUME_TENSORS_FILE = "tensors.pt"
FREE_ON_RESUME = (
    "resume", "overwrite", "quiet", "max_wall_seconds", "torch_threads", "tensorboard", "trackers", "checkpoint_history",
)
"""Run-config fields a resumed run may set differently from the first session (they change
neither the steps nor their numbers); every other field must match, except ``steps``, which may rise
(:data:`EXTENSIBLE_ON_RESUME`)."""
EXTENSIBLE_ON_RESUME = ("steps",)
"""Run-config fields a resumed run may raise: ``--resume --steps N`` with N above the run's own extends
it, a finished run included, from its last checkpoint; the steps it already took stay as they were.
What a stage sizes by its length follows the new one from there on (fine-tuning: an
``offline_fraction_final`` anneal, an ``acting_average_share`` decay); what it fixed at the start
stays (the warm-up)."""


@dataclass
class ResumeState:
    """Everything besides the agent that a resumed run restores."""

    loop: LoopState
    """The loop after the checkpoint's step."""
    metrics: MetricsPosition | None = None
    """Where metrics.csv stood."""
    generators: dict[str, Any] = field(default_factory=dict)
    """Torch generator states by name (``{"device", "state"}`` or None for one not used yet)."""
    numpy_generators: dict[str, Any] = field(default_factory=dict)
    """``numpy.random.Generator`` bit-generator states by name."""
    stage: dict[str, Any] = field(default_factory=dict)
    """The stage's own JSON facts."""
    tensors: dict[str, Any] = field(default_factory=dict)
    """The stage's own tensors."""
    global_rngs: dict[str, Any] = field(default_factory=dict)
    """Python's, numpy's and torch's global RNG states (captured when written)."""


@dataclass
class ResumePoint:
    """A run's last checkpoint, opened for a resume."""

    directory: Path
    """The checkpoint (version) directory."""
    meta: CheckpointMeta
    state: ResumeState


def generator_state(generator: Any) -> dict[str, Any] | None:
    """The state of a ``torch.Generator`` or of a regulariser's lazily made one (None if unused)."""
    if generator is None:
        return None
    if isinstance(generator, torch.Generator):
        return {"device": str(generator.device), "state": generator.get_state()}
    return generator.state()


def restore_generator(generator: Any, state: dict[str, Any] | None) -> None:
    """Inverse of :func:`generator_state` on the same kind of generator."""
    if generator is None:
        return
    if isinstance(generator, torch.Generator):
        if state is not None:
            generator.set_state(state["state"])
    else:
        generator.load_state(state)


def resume_writer(
    loop: LoopState,
    tracker: Tracker,
    step: int,
    *,
    generators: Mapping[str, Any],
    stage: Mapping[str, Any] | None = None,
    tensors: Mapping[str, Any] | None = None,
) -> Callable[[Path], None]:
    """A function that writes the resume state of a checkpoint at ``step`` into a folder (see the
    module docstring); everything is captured now, when the checkpoint is taken. ``generators``:
    torch generators, regularisers' generators and numpy Generators by name."""
    numpy_generators = {name: g for name, g in generators.items() if isinstance(g, np.random.Generator)}
    state = ResumeState(
        loop=LoopState.from_dict(json.loads(json.dumps(loop.to_dict()))),  # a snapshot
        metrics=tracker.position(step),
        generators={name: generator_state(g) for name, g in generators.items() if name not in numpy_generators},
        numpy_generators={name: g.bit_generator.state for name, g in numpy_generators.items()},
        stage=dict(stage or {}),
        tensors=dict(tensors or {}),
        global_rngs=_global_rngs(),
    )
    return lambda directory: write_resume_state(directory, state)


def write_resume_state(directory: Path, state: ResumeState) -> None:
    """Write ``state`` into ``directory`` (the checkpoint's ``resume/``)."""
    rngs = state.global_rngs
    document = {
        "format_version": RESUME_FORMAT_VERSION,
        "loop": state.loop.to_dict(),
        "metrics": None if state.metrics is None else dataclasses.asdict(state.metrics),
        "numpy_generators": state.numpy_generators,
        "stage": state.stage,
        "python_random": rngs["python"],
        "numpy_random": rngs["numpy"],
    }
    (directory / RESUME_STATE_FILE).write_text(json.dumps(document) + "\n")
    torch.save(
        {"torch_random": rngs["torch"], "generators": state.generators, "tensors": state.tensors},
        directory / RESUME_TENSORS_FILE,
    )


def read_resume_state(directory: Path) -> ResumeState:
    """Read the ``resume/`` folder of checkpoint ``directory`` (one-line CheckpointError if damaged)."""
    folder = directory / RESUME_SUBDIR
    state_file, tensors_file = folder / RESUME_STATE_FILE, folder / RESUME_TENSORS_FILE
    try:
        document = json.loads(state_file.read_text())
        tensors = torch.load(tensors_file, map_location="cpu", weights_only=True)
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:
        raise CheckpointError(f"the resume state is unreadable ({type(exc).__name__}: {exc})", file=str(folder)) from None
    try:
        if document["format_version"] != RESUME_FORMAT_VERSION:
            raise ValueError(f"format {document['format_version']}, this dime-offline reads {RESUME_FORMAT_VERSION}")
        metrics = document["metrics"]
        return ResumeState(
            loop=LoopState.from_dict(document["loop"]),
            metrics=None if metrics is None else MetricsPosition(**metrics),
            generators=dict(tensors["generators"]),
            numpy_generators=dict(document["numpy_generators"]),
            stage=dict(document["stage"]),
            tensors=dict(tensors["tensors"]),
            global_rngs={"python": document["python_random"], "numpy": document["numpy_random"], "torch": tensors["torch_random"]},
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the resume state is incomplete or invalid ({exc!r})", file=str(folder)) from None


def open_resume(cfg: Any, stage: str) -> ResumePoint | None:
    """The checkpoint that ``cfg`` (a run config with ``resume``, ``overwrite`` and ``out_dir``)
    continues, checked: None when ``cfg.resume`` is off; a one-line ConfigError when the run
    directory holds no resumable checkpoint of this stage or ``cfg`` differs from the run's own
    settings in anything but :data:`FREE_ON_RESUME` (and a raised :data:`EXTENSIBLE_ON_RESUME`).
    A finished run given more steps than it took is open again."""
    if not cfg.resume:
        return None
    out = Path(cfg.out_dir)
    if cfg.overwrite:
        raise ConfigError(f"resume continues the run in {out} and overwrite would delete it: set only one of them")
    try:
        directory = resolve_checkpoint_dir(out / RUN_CHECKPOINT_SUBDIR)
    except CheckpointError:
        raise ConfigError(f"nothing to resume: {out} holds no checkpoint of a {stage} run (start it without resume)") from None
    meta = read_checkpoint_meta(directory)
    if meta.extra.get("stage") != stage:
        raise ConfigError(f"cannot resume: {out} holds a {meta.extra.get('stage')} run, not a {stage} run")
    if not (directory / RESUME_SUBDIR).is_dir():
        raise ConfigError(f"cannot resume: the checkpoint in {out} has no resume state (written by an older dime-offline)")
    check_same_run(cfg, meta.extra.get("run_config") or {}, out)
    point = ResumePoint(directory, meta, read_resume_state(directory))
    loop = point.state.loop
    if loop.finished and cfg.steps > loop.step:  # extended: the steps left are the new ones
        point.state.loop = dataclasses.replace(loop, finished=False, stopped_by_target=False)
    return point


def holds_checkpoint(out: str | Path) -> bool:
    """Whether run directory ``out`` holds a checkpoint (so a resume has something to start from)."""
    try:
        resolve_checkpoint_dir(Path(out) / RUN_CHECKPOINT_SUBDIR)
    except CheckpointError:
        return False
    return True


def check_same_run(cfg: Any, saved: Mapping[str, Any], out: Path) -> None:
    """Refuse, with one line naming the first field that differs, a config that is not the run's own.
    The saved config is read as a config file is, so a field it lacks (added to dime-offline after the
    run started) counts as its default."""
    current = json.loads(json.dumps(to_dict(cfg)))
    started = json.loads(json.dumps(to_dict(from_dict(type(cfg), dict(saved)))))
    for name in sorted(current):
        if name in EXTENSIBLE_ON_RESUME and current[name] > started[name]:
            continue
        if name not in FREE_ON_RESUME and current[name] != started[name]:
            if name in EXTENSIBLE_ON_RESUME:
                raise ConfigError(
                    f"cannot resume: field '{name}' is {current[name]!r} but the run in {out} was started with"
                    f" {started[name]!r}; a resumed run can raise it, not lower it"
                )
            raise ConfigError(
                f"cannot resume: field '{name}' is {current[name]!r} but the run in {out} was started with"
                f" {started[name]!r}; resume with the run's own settings, or start a new run"
            )


def restore_global_rngs(state: ResumeState) -> None:
    """Put Python's, numpy's and torch's global RNGs where they were at the checkpoint."""
    rngs = state.global_rngs
    version, internal, gauss = rngs["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = rngs["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(rngs["torch"])


def _global_rngs() -> dict[str, Any]:
    name, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [name, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def load_resumable_run_config(
    cls: type[C], saved_config_name: str, path: str | None = None, overrides: list[str] | None = None, **fields: Any
) -> C:
    """:func:`load_run_config`, except that a resume without a config file starts from the run
    directory's saved config (``saved_config_name`` in ``out_dir``), so ``--resume --out DIR`` alone
    continues a run; flags and overrides still apply on top (and must agree with the run). The saved
    ``overwrite`` is how the run was first started, not part of the run: it does not carry over."""
    cfg = load_run_config(cls, path, overrides, **fields)
    saved = Path(cfg.out_dir) / saved_config_name  # type: ignore[attr-defined]
    if getattr(cfg, "resume", False) and path is None and saved.is_file():
        cfg = load_run_config(cls, str(saved), overrides, **{**fields, "overwrite": cfg.overwrite})  # type: ignore[attr-defined]
    return cfg


def regularizer_generators(agent: Any) -> dict[str, Any]:
    """The agent's regularisers' generators by name (None where a regulariser is absent)."""
    return {
        name: getattr(getattr(agent, name), "generator", None) for name in ("critic_regularizer", "actor_regularizer")
    }


def restore_generators(generators: Mapping[str, Any], state: ResumeState) -> None:
    """Restore every named generator, numpy's included, from ``state``; then the global RNGs."""
    for name, generator in generators.items():
        if isinstance(generator, np.random.Generator):
            generator.bit_generator.state = state.numpy_generators[name]
        else:
            restore_generator(generator, state.generators.get(name))
    restore_global_rngs(state)


@dataclass
class RunningEpisode:
    """The training episode in progress in an online run's environment, and how to rebuild the
    environment's state in a resumed run: the state of the env's RNG just before the episode's
    reset, and the actions since, replayed on a fresh env of the same id (exact for environments
    that are deterministic given their RNG, as gymnasium's and MuJoCo's are)."""

    obs: np.ndarray
    """The observation the next action answers."""
    reset_rng: dict[str, Any]
    """The env RNG's bit-generator state before the episode's reset."""
    episode_return: float = 0.0
    length: int = 0
    actions: list[np.ndarray] = field(default_factory=list)
    """The actions taken in the episode so far, as the env received them."""

    @classmethod
    def start(cls, env: Any) -> RunningEpisode:
        """Reset ``env`` (no seed: its RNG stream continues) and begin an episode."""
        reset_rng = env.unwrapped.np_random.bit_generator.state
        obs, _ = env.reset()
        return cls(obs=obs, reset_rng=reset_rng)

    def advance(self, env: Any, action: np.ndarray, next_obs: np.ndarray, reward: float, done: bool) -> list[tuple[float, int]]:
        """Record one env step; when it ends the episode, reset ``env`` and return ``[(return, length)]``."""
        self.actions.append(np.array(action, copy=True))
        self.episode_return += reward
        self.length += 1
        if not done:
            self.obs = next_obs
            return []
        finished = [(self.episode_return, self.length)]
        fresh = RunningEpisode.start(env)
        self.obs, self.reset_rng, self.episode_return, self.length, self.actions = fresh.obs, fresh.reset_rng, 0.0, 0, []
        return finished

    def facts(self) -> dict[str, Any]:
        """The JSON part of the resume state."""
        return {"episode_return": self.episode_return, "episode_length": self.length, "env_reset_rng": self.reset_rng}

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensor part of the resume state."""
        actions = np.stack(self.actions) if self.actions else np.zeros((0,), np.float32)
        return {"episode_obs": torch.from_numpy(np.array(self.obs)), "episode_actions": torch.from_numpy(actions)}

    @classmethod
    def replay(cls, env: Any, state: ResumeState, *, notice: Callable[[str], None]) -> RunningEpisode:
        """The saved running episode, rebuilt in ``env`` (fresh, of the same id); an env that does not
        come back to the saved observation starts a new episode, with a notice."""
        env.unwrapped.np_random.bit_generator.state = state.stage["env_reset_rng"]
        episode = cls.start(env)
        for action in state.tensors["episode_actions"].numpy():
            episode.obs, *_ = env.step(action)
            episode.actions.append(action)
        saved = state.tensors["episode_obs"].numpy()
        if np.asarray(episode.obs).dtype == saved.dtype and np.array_equal(episode.obs, saved):
            episode.episode_return = float(state.stage["episode_return"])
            episode.length = int(state.stage["episode_length"])
            return episode
        notice(
            "note: the environment did not come back to the running episode's state (it is not deterministic given"
            " its seed); the resumed run starts a new episode, so it will differ from an uninterrupted run"
        )
        return cls.start(env)
