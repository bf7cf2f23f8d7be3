"""Checkpoint directories: everything needed to rebuild an agent, written atomically.

Layout of one checkpoint directory::

    config.json   the agent's resolved DIMEConfig (the agent is rebuilt from this alone)
    state.pt      agent.state_dict(): networks, optimisers, temperature, update counters
    meta.json     format/package/schema versions, git SHA, observation/action shapes and bounds,
                  env id, normalisation statistics, and free-form ``extra`` (run config, env steps)

    resume/       only in a run's periodic and interrupted checkpoints: what ``--resume`` needs
                  beyond the agent (``trainers/resume.py``); loading a policy never reads it

A run directory (``--out`` of pretrain/finetune) holds its latest checkpoint in ``checkpoint/``
and its best-evaluated one in ``best/``; every function here accepts either the checkpoint
directory itself or a run directory (its ``checkpoint/`` is used).

Each save is crash-safe (:func:`~dime_offline.io.versioned_directory`): the files go to a new
``checkpoint.v000007/``, fsynced, and ``checkpoint`` is a symbolic link switched to it in one
atomic rename, so a checkpoint can be loaded at every instant, also after a kill or power cut
mid-save; the two newest versions are kept. Checkpoints written before this layout (plain
directories) load as before and become a version at their next save.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import dime_offline
from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.dime import DIMEAgent
from dime_offline.config import from_dict, to_dict
from dime_offline.data.normalization import NormalizationStats
from dime_offline.data.schema import SCHEMA_VERSION
from dime_offline.data.spaces import SpaceSpec, check_spaces_match
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.io import (
    VERSION_DIGITS,
    atomic_path,
    newest_version,
    versioned_directory,
    versioned_entries,
)

CHECKPOINT_FORMAT_VERSION = 1
"""Version of the checkpoint directory layout; a newer one is refused with an upgrade hint."""
CONFIG_FILE = "config.json"
STATE_FILE = "state.pt"
META_FILE = "meta.json"
RUN_CHECKPOINT_SUBDIR = "checkpoint"
"""Where a run directory keeps its latest checkpoint."""
RUN_BEST_SUBDIR = "best"
"""Where a run directory keeps the checkpoint with the best evaluation."""
RUN_CHAMPION_SUBDIR = "champion"
"""Where a run directory keeps the policy it deploys when it keeps a champion (``trainers/champion.py``);
a run directory given where a checkpoint is expected stands for this policy when it exists."""
RUN_HISTORY_SUBDIR = "history"
"""Where a run directory keeps a copy of each periodic checkpoint's policy, ``history/step-000001000``
(``checkpoint_history``)."""
RESUME_SUBDIR = "resume"
"""Where a run's checkpoint keeps the state ``--resume`` needs besides the agent."""
KEPT_VERSIONS = 2
"""Versions of a checkpoint kept on disk: the newest, and the one before it for readers still
reading it while a run saves the next."""


@dataclass
class CheckpointMeta:
    """The facts ``meta.json`` holds about a checkpoint."""

    spaces: SpaceSpec
    """Observation/action shapes and bounds (env units) the agent was built for."""
    env_id: str | None = None
    """Gymnasium id of the environment the agent was trained or meant for, if any."""
    normalization: NormalizationStats | None = None
    """Observation/reward statistics the agent normalises with (None: raw observations)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form facts: the stage and its resolved run config, env steps, dataset path..."""
    format_version: int = CHECKPOINT_FORMAT_VERSION
    """Checkpoint layout version."""
    package_version: str = dime_offline.__version__
    """dime-offline version that wrote the checkpoint."""
    schema_version: int = SCHEMA_VERSION
    """Canonical dataset schema version at writing time."""
    git_sha: str | None = None
    """Commit of the dime-offline source tree that wrote it, when it is a git checkout."""
    created_utc: str = ""
    """ISO-8601 UTC time of writing."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "package_version": self.package_version,
            "schema_version": self.schema_version,
            "git_sha": self.git_sha,
            "created_utc": self.created_utc,
            "env_id": self.env_id,
            "spaces": self.spaces.to_dict(),
            "normalization": None if self.normalization is None else self.normalization.to_dict(),
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str) -> CheckpointMeta:
        version = data.get("format_version")
        if not isinstance(version, int):
            raise CheckpointError("meta.json has no integer format_version", file=file)
        if version > CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format {version} is newer than this dime-offline reads ({CHECKPOINT_FORMAT_VERSION});"
                f" it was written by dime-offline {data.get('package_version')}: upgrade dime-offline",
                file=file,
            )
        try:
            norm = data.get("normalization")
            return cls(
                spaces=SpaceSpec.from_dict(data["spaces"]),
                env_id=data.get("env_id"),
                normalization=None if norm is None else NormalizationStats.from_dict(norm),
                extra=dict(data.get("extra") or {}),
                format_version=version,
                package_version=str(data.get("package_version", "unknown")),
                schema_version=int(data.get("schema_version", SCHEMA_VERSION)),
                git_sha=data.get("git_sha"),
                created_utc=str(data.get("created_utc", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"meta.json is incomplete or invalid ({exc!r})", file=file) from None


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """The checkpoint directory for ``path``: itself, or a run directory's policy: its ``champion/``
    when the run kept one (the policy it deploys), else its ``checkpoint/``.

    A versioned checkpoint resolves to the version its link names at this moment, so a reader
    sees one version throughout even while a run saves the next; when the link is missing (a crash
    mid-migration of an old layout) the newest complete version is used.
    """
    path = Path(path)
    candidates = (path, path / RUN_CHAMPION_SUBDIR, path / RUN_CHECKPOINT_SUBDIR)
    for candidate in candidates:
        if (candidate / META_FILE).is_file():
            return _pinned(candidate)
    for candidate in candidates:
        newest = newest_version(candidate)
        if newest is not None and (newest / META_FILE).is_file():
            return newest
    if not path.exists():
        raise CheckpointError("checkpoint not found (no such directory)", file=str(path))
    raise CheckpointError(
        f"not a checkpoint: neither {META_FILE} nor {RUN_CHECKPOINT_SUBDIR}/{META_FILE} exists", file=str(path)
    )


def _pinned(directory: Path) -> Path:
    """The directory a versioned checkpoint's link names now (a plain directory is returned as it is)."""
    if not directory.is_symlink():
        return directory
    target = Path(os.readlink(directory))
    return target if target.is_absolute() else directory.parent / target


def stable_path(directory: str | Path) -> Path:
    """The name users see and keep for a resolved checkpoint: ``run/checkpoint`` for its version
    ``run/checkpoint.v000007`` (which a later save prunes), any other directory as it is."""
    directory = Path(directory)
    name, sep, number = directory.name.rpartition(".v")
    return directory.with_name(name) if sep and name and number.isdigit() and len(number) >= VERSION_DIGITS else directory


def run_checkpoint_entries(out: str | Path) -> list[Path]:
    """Every path the checkpoints of run directory ``out`` occupy (links, versions, temporaries)."""
    return [entry for name in (RUN_CHECKPOINT_SUBDIR, RUN_BEST_SUBDIR, RUN_CHAMPION_SUBDIR) for entry in versioned_entries(Path(out) / name)]


def save_checkpoint(
    directory: str | Path,
    agent: DIMEAgent,
    cfg: DIMEConfig,
    norm_stats: NormalizationStats | None,
    extra: dict[str, Any] | None = None,
    *,
    spaces: SpaceSpec,
    env_id: str | None = None,
    resume_writer: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``agent`` (built from ``cfg``) to ``directory`` atomically; returns the directory.

    ``norm_stats`` must be the statistics the agent normalises observations with (None when it
    uses raw observations). ``extra`` must be JSON-serialisable. ``resume_writer``, when given,
    fills the ``resume/`` folder (created for it), which is swapped in with the rest.
    """
    directory = Path(directory)
    meta = CheckpointMeta(
        spaces=spaces,
        env_id=env_id,
        normalization=norm_stats,
        extra=dict(extra or {}),
        git_sha=_git_sha(),
        created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    with versioned_directory(directory, keep=KEPT_VERSIONS) as tmp:
        (tmp / CONFIG_FILE).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
        (tmp / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
        try:
            torch.save(agent.state_dict(), tmp / STATE_FILE)
            if resume_writer is not None:
                (tmp / RESUME_SUBDIR).mkdir()
                resume_writer(tmp / RESUME_SUBDIR)  # torch.save again
        except RuntimeError as exc:  # torch's writer reports a full disk or a failed write this way
            raise CheckpointError(f"cannot write the checkpoint, the previous one is kept ({exc})", file=str(directory)) from None
    return directory


def history_path(out: str | Path, step: int) -> Path:
    """Where run directory ``out`` keeps the policy of its checkpoint at ``step``."""
    return Path(out) / RUN_HISTORY_SUBDIR / f"step-{step:09d}"


def keep_in_history(directory: str | Path, out: str | Path, step: int) -> Path:
    """Copy the policy of checkpoint ``directory`` (weights, config and meta; not the resume state) to
    :func:`history_path`, atomically (an existing copy of that step is replaced); returns the copy."""
    source = resolve_checkpoint_dir(directory)
    target = history_path(out, step)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        for name in (CONFIG_FILE, META_FILE, STATE_FILE):
            shutil.copyfile(source / name, tmp / name)
    return target


def read_checkpoint_meta(path: str | Path) -> CheckpointMeta:
    """Read only ``meta.json`` (cheap: no tensors), e.g. to check an env before loading."""
    directory = resolve_checkpoint_dir(path)
    file = directory / META_FILE
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read meta.json ({exc})", file=str(file)) from None
    if not isinstance(data, dict):
        raise CheckpointError("meta.json does not hold a JSON object", file=str(file))
    return CheckpointMeta.from_dict(data, file=str(file))


def check_checkpoint_fits(path: str | Path, env_spaces: SpaceSpec, env_id: str) -> CheckpointMeta:
    """Read the checkpoint's meta and refuse, with one line, an env whose shapes or bounds differ."""
    meta = read_checkpoint_meta(path)
    check_spaces_match(meta.spaces, env_spaces, expected_from=f"checkpoint {path}", actual_from=f"environment '{env_id}'")
    return meta


LEGACY_DETERMINISTIC_ACT = "stochastic"
"""A ``deterministic_act`` that checkpoints before 0.2 hold (deterministic requests were sampled); it
loads as "noise_free", so a deterministic request is never answered with a sample."""


def load_checkpoint(path: str | Path, *, device: str = "cpu") -> tuple[DIMEAgent, DIMEConfig, CheckpointMeta]:
    """Rebuild the agent saved at ``path`` (a checkpoint or run directory) from its config alone.

    Raises :class:`CheckpointError` (one line) when a file is missing or unreadable, the format
    is newer than this package, or the weights do not fit the config.
    """
    directory = resolve_checkpoint_dir(path)
    meta = read_checkpoint_meta(directory)
    config_file = directory / CONFIG_FILE
    try:
        saved = json.loads(config_file.read_text())
        if isinstance(saved, dict) and saved.get("deterministic_act") == LEGACY_DETERMINISTIC_ACT:
            saved["deterministic_act"] = "noise_free"  # see DIMEConfig.deterministic_act
        cfg = from_dict(DIMEConfig, saved)
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read config.json ({exc})", file=str(config_file)) from None
    except ConfigError as exc:
        raise CheckpointError(f"config.json does not fit this dime-offline: {exc.message}", file=str(config_file)) from None
    agent = DIMEAgent(meta.spaces.obs_dim, meta.spaces.action_dim, cfg, device=device)
    load_agent_state(directory, agent)
    return agent, cfg, meta


def load_agent_state(directory: Path, agent: DIMEAgent) -> None:
    """Load the checkpoint's ``state.pt`` into ``agent`` (built with the same network shapes): weights,
    optimisers, temperature, counters, RNG streams and the observation normaliser. One-line
    :class:`CheckpointError` for a missing, damaged or mismatched file."""
    state_file = directory / STATE_FILE
    try:
        state = torch.load(state_file, map_location=agent.device, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError("state.pt is missing", file=str(state_file)) from None
    except (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError) as exc:  # a damaged file
        raise CheckpointError(f"state.pt is unreadable or corrupt ({type(exc).__name__})", file=str(state_file)) from None
    try:
        agent.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"state.pt does not match config.json: {first_line}", file=str(state_file)) from None


def _git_sha() -> str | None:
    """HEAD of the dime-offline git checkout this package runs from, or None (installed wheel)."""
    source = Path(dime_offline.__file__).resolve().parent
    try:
        result = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "--show-toplevel", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        return None
    toplevel, sha = lines
    # A wheel installed inside some other repository must not report that repository's commit.
    return sha if Path(toplevel).resolve() / "dime_offline" == source and len(sha) == 40 else None
