"""Local Minari datasets <-> canonical transitions. Nothing is ever downloaded.

Reading: a Minari episode with T steps holds T+1 observations; it becomes T rows with
``obs = observations[:-1]`` and ``next_obs = observations[1:]``, ``terminations -> terminated``,
``truncations -> truncated``, everything cast to float32. Writing goes through
``minari.create_dataset_from_buffers`` with ``EpisodeBuffer`` (no jax) and therefore needs each
episode's ``next_obs[t]`` to equal ``obs[t+1]``.

Traps handled here (``data-formats.md`` §1.5): ids without ``-vN`` are rejected before Minari sees
them (Minari would leave a stray folder that breaks ``minari list local``); Minari is imported
lazily; HDF5 storage returns ``infos=None`` (unused here); observations may be float64.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from dime_offline.data.schema import (
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    DatasetMetadata,
    TransitionData,
    empty_like_schema,
)
from dime_offline.errors import (
    ConsistencyError,
    DataError,
    DatasetNotFoundError,
    SchemaError,
)
from dime_offline.io import atomic_path

MinariFormat = Literal["hdf5", "arrow", "parquet"]

_NAME = r"[-_\w]+?"
_NAMESPACE = r"(?:[-_\w][-_\w/]*[-_\w]+/)"
MINARI_ID_RE = re.compile(rf"^{_NAMESPACE}?{_NAME}-v(?P<version>\d+)$")
"""A Minari dataset id with its mandatory version suffix, e.g. ``mujoco/halfcheetah/medium-v0``."""
_UNVERSIONED_ID_RE = re.compile(rf"^{_NAMESPACE}?[-_\w]+$")

_METADATA_KEY = METADATA_KEY.decode()
"""Key of our :class:`DatasetMetadata` JSON inside Minari's ``metadata.json`` (lossless round trips)."""


def minari_root() -> Path:
    """The local Minari datasets root: ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def looks_like_minari_id(text: str) -> bool:
    """True for ``name-vN`` / ``namespace/name-vN`` strings that are not explicit paths."""
    return not text.startswith((".", "/", "~")) and MINARI_ID_RE.match(text) is not None


def check_minari_id(dataset_id: str) -> str:
    """Return ``dataset_id`` if it has a version suffix; raise :class:`DataError` otherwise.

    Done before any Minari call: an unversioned id makes Minari 0.5 create a stray folder
    and then fail with a ``TypeError``.
    """
    if MINARI_ID_RE.match(dataset_id):
        return dataset_id
    if _UNVERSIONED_ID_RE.match(dataset_id):
        raise DataError(
            f"Minari dataset id '{dataset_id}' has no version suffix; use e.g. '{dataset_id}-v0'",
            file=dataset_id,
        )
    raise DataError(
        f"'{dataset_id}' is not a Minari dataset id of the form (namespace/)name-vN", file=dataset_id
    )


def resolve_minari_data_dir(source: str | os.PathLike[str]) -> Path:
    """The ``data/`` folder of a local Minari dataset given by id, dataset folder or data folder."""
    path = Path(source).expanduser()
    if path.exists():
        if (path / "data" / "metadata.json").is_file():
            return path / "data"
        if (path / "metadata.json").is_file():
            return path
        raise DatasetNotFoundError(
            "not a Minari dataset folder (expected data/metadata.json or metadata.json inside)", file=str(path)
        )
    text = os.fspath(source)
    dataset_id = check_minari_id(text)
    data_dir = minari_root() / dataset_id / "data"
    if not (data_dir / "metadata.json").is_file():
        raise DatasetNotFoundError(
            f"Minari dataset '{dataset_id}' is not available locally (looked in {data_dir});"
            " nothing is downloaded: create it locally or pass the dataset folder",
            file=text,
        )
    return data_dir


def _import_minari() -> Any:
    try:
        import minari
    except ImportError as exc:  # pragma: no cover - minari is a regular dependency
        raise DataError(f"Minari support needs the 'minari' package ({exc}); pip install 'minari[hdf5]'") from None
    return minari


def _box_bounds(space: Any, what: str, source: str) -> tuple[list[float] | None, list[float] | None, int]:
    """Flattened finite bounds (None where unbounded) and the flat width of a Box space."""
    from gymnasium import spaces

    if not isinstance(space, spaces.Box):
        raise SchemaError(
            f"{what} space is {type(space).__name__}; only Box (continuous vector) spaces are supported",
            file=source, column="action" if what == "action" else "obs",
        )
    low = np.asarray(space.low, dtype=np.float64).reshape(-1)
    high = np.asarray(space.high, dtype=np.float64).reshape(-1)
    if np.isfinite(low).all() and np.isfinite(high).all():
        return low.tolist(), high.tolist(), int(low.size)
    return None, None, int(low.size)


def read_minari(source: str | os.PathLike[str]) -> tuple[TransitionData, list[str]]:
    """Read a local Minari dataset (id, dataset folder or ``data/`` folder) into canonical rows.

    Returns the (unvalidated) transitions and notes about what was skipped or adjusted.
    Zero-step episodes are skipped and reported. Episode ids are Minari's episode ids.
    """
    data_dir = resolve_minari_data_dir(source)
    name = os.fspath(source)
    minari = _import_minari()
    try:
        dataset = minari.MinariDataset(data_dir)
    except Exception as exc:  # Minari raises assorted errors (KeyError, OSError, ValueError) on bad folders
        raise DataError(f"cannot open Minari dataset: {type(exc).__name__}: {exc}", file=str(data_dir)) from None
    raw_meta = dataset.storage.metadata
    action_low, action_high, action_dim = _box_bounds(dataset.action_space, "action", name)
    obs_low, obs_high, obs_dim = _box_bounds(dataset.observation_space, "observation", name)
    metadata = _metadata_from_minari(raw_meta, dataset, name)
    metadata = dataclasses.replace(
        metadata, action_low=action_low, action_high=action_high, obs_low=obs_low, obs_high=obs_high
    )

    notes: list[str] = []
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("episode_id", "step", "obs", "action", "reward",
                                                          "next_obs", "terminated", "truncated")}
    skipped: list[int] = []
    try:
        episodes = list(dataset.iterate_episodes())
    except Exception as exc:  # corrupt storage surfaces as OSError/KeyError/ValueError from h5py/pyarrow
        raise DataError(f"cannot read Minari episodes: {type(exc).__name__}: {exc}", file=str(data_dir)) from None
    for episode in episodes:
        steps = int(np.asarray(episode.actions).shape[0])
        if steps == 0:
            skipped.append(int(episode.id))
            continue
        observations = np.asarray(episode.observations, dtype=np.float32).reshape(steps + 1, -1)
        parts["episode_id"].append(np.full(steps, int(episode.id), np.int64))
        parts["step"].append(np.arange(steps, dtype=np.int32))
        parts["obs"].append(observations[:-1])
        parts["next_obs"].append(observations[1:])
        parts["action"].append(np.asarray(episode.actions, dtype=np.float32).reshape(steps, -1))
        parts["reward"].append(np.asarray(episode.rewards, dtype=np.float32).reshape(steps))
        parts["terminated"].append(np.asarray(episode.terminations, dtype=bool).reshape(steps))
        parts["truncated"].append(np.asarray(episode.truncations, dtype=bool).reshape(steps))
    if skipped:
        notes.append(f"skipped {len(skipped)} zero-step Minari episode(s) (ids {_few(skipped)})")
    if not parts["obs"]:
        return empty_like_schema(obs_dim, action_dim, metadata), notes
    data = TransitionData(**{k: np.concatenate(v) for k, v in parts.items()}, metadata=metadata)
    return data, notes


def _few(values: list[int], limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def _metadata_from_minari(raw: dict[str, Any], dataset: Any, name: str) -> DatasetMetadata:
    """Our metadata when the dataset was written by us, else what Minari's metadata tells."""
    if raw.get(_METADATA_KEY):
        return DatasetMetadata.from_json(raw[_METADATA_KEY], file=name)
    env_spec = dataset.spec.env_spec
    extra = {
        key: raw[key] for key in ("algorithm_name", "description", "minari_version", "code_permalink")
        if raw.get(key) is not None
    }
    return DatasetMetadata(
        source=f"minari:{raw.get('dataset_id', name)}",
        env_id=env_spec.id if env_spec is not None else None,
        ref_min_score=_float_or_none(raw.get("ref_min_score")),
        ref_max_score=_float_or_none(raw.get("ref_max_score")),
        extra=extra,
    )


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


@contextlib.contextmanager
def _datasets_root(root: Path) -> Iterator[None]:
    """Point Minari at ``root`` for the duration (Minari reads the variable at call time; not thread-safe)."""
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _episode_buffers(data: TransitionData) -> list[Any]:
    """One EpisodeBuffer per episode: T+1 observations = obs rows plus the last next_obs."""
    from minari.data_collector import EpisodeBuffer

    buffers = []
    starts = data.episode_starts()
    stops = np.concatenate([starts[1:], [len(data)]])
    for start, stop in zip(starts.tolist(), stops.tolist()):
        buffers.append(
            EpisodeBuffer(
                observations=np.concatenate([data.obs[start:stop], data.next_obs[stop - 1:stop]]),
                actions=data.action[start:stop],
                rewards=data.reward[start:stop],
                terminations=data.terminated[start:stop],
                truncations=data.truncated[start:stop],
            )
        )
    return buffers


def write_minari(
    data: TransitionData,
    target: str | os.PathLike[str],
    *,
    dataset_id: str | None = None,
    data_format: MinariFormat = "hdf5",
) -> tuple[Path, list[str]]:
    """Write ``data`` as a Minari dataset, atomically; returns the dataset folder and notes.

    ``target`` is a Minari id (a ``str`` such as ``dime/pendulum/random-v0``, written under the
    datasets root) or a folder path (a :class:`~pathlib.Path`, or a string starting with ``.``,
    ``/`` or ``~``). For a folder, the id stored inside is ``dataset_id`` or derived from the folder
    name. An existing dataset is never overwritten (Minari datasets are immutable).
    Raises :class:`ConsistencyError` if an episode's ``next_obs`` is not the next row's ``obs``.
    """
    if isinstance(target, str) and not target.startswith((".", "/", "~")) and (
        MINARI_ID_RE.match(target) or _UNVERSIONED_ID_RE.match(target)
    ):
        dataset_id = check_minari_id(target)
        final = minari_root() / dataset_id
    else:
        final = Path(target).expanduser()
        dataset_id = check_minari_id(dataset_id or _id_from_folder(final.name))
    if final.exists():
        raise DataError("a Minari dataset already exists here; Minari datasets are immutable, remove it first",
                        file=str(final))
    try:
        data.validate(check_continuity=True)
    except ConsistencyError as err:
        raise ConsistencyError(
            f"{err.message}; Minari stores one observation sequence per episode, so next_obs must equal the"
            " next row's obs (split the episode there or write Parquet instead)",
            file=str(final), column=err.column, row=err.row,
        ) from None
    notes = [f"{name} is not stored in Minari datasets (dropped)"
             for name in OPTIONAL_COLUMNS if getattr(data, name) is not None]
    minari = _import_minari()
    import gymnasium as gym

    meta = data.metadata
    action_space = gym.spaces.Box(
        low=np.asarray(meta.action_low if meta.action_low is not None else [-np.inf] * data.action_dim, np.float32),
        high=np.asarray(meta.action_high if meta.action_high is not None else [np.inf] * data.action_dim, np.float32),
        dtype=np.float32,
    )
    observation_space = gym.spaces.Box(
        low=np.asarray(meta.obs_low if meta.obs_low is not None else [-np.inf] * data.obs_dim, np.float32),
        high=np.asarray(meta.obs_high if meta.obs_high is not None else [np.inf] * data.obs_dim, np.float32),
        dtype=np.float32,
    )
    # Minari rolls out a random policy to fill a missing ref_min_score: only pass complete pairs.
    refs = meta.ref_min_score is not None and meta.ref_max_score is not None
    with atomic_path(final) as staging:
        staging_root = (staging.parent / "minari-root").resolve()  # Minari mishandles relative roots
        with _datasets_root(staging_root), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Minari nags about unset author/permalink
            minari.create_dataset_from_buffers(
                dataset_id,
                buffer=_episode_buffers(data),
                env=_registered_spec(meta.env_id),
                observation_space=observation_space,
                action_space=action_space,
                algorithm_name="dime-offline",
                code_permalink="https://github.com/dime-offline/dime-offline",
                author="dime-offline",
                author_email="unknown",
                description=f"Converted by dime-offline from {meta.source or 'canonical transitions'}",
                ref_min_score=meta.ref_min_score if refs else None,
                ref_max_score=meta.ref_max_score if refs else None,
                data_format=data_format,
            )
            created = staging_root / dataset_id
            minari.MinariDataset(created / "data").storage.update_metadata({_METADATA_KEY: meta.to_json()})
        os.replace(created, staging)
    _write_namespace_markers(dataset_id, final)
    return final, notes


def _id_from_folder(folder_name: str) -> str:
    if MINARI_ID_RE.match(folder_name):
        return folder_name
    return re.sub(r"[^-_\w]", "_", folder_name) + "-v0"


def _registered_spec(env_id: str | None) -> Any:
    """The gymnasium EnvSpec of ``env_id`` when it is registered (kept in Minari's metadata), else None."""
    if env_id is None:
        return None
    import gymnasium as gym

    return gym.spec(env_id) if env_id in gym.registry else None


def _write_namespace_markers(dataset_id: str, final: Path) -> None:
    """Give each namespace folder above a dataset under the root its ``namespace_metadata.json``.

    ``minari list local`` expects one per namespace level; folders outside the root need none.
    """
    root = minari_root()
    try:
        final.relative_to(root)
    except ValueError:
        return
    parts = dataset_id.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        marker = root.joinpath(*parts[:depth]) / "namespace_metadata.json"
        if not marker.exists():
            marker.write_text("{}")
