"""Build gymnasium environments in the agent's conventions and check them against artefacts.

``make_env`` accepts any registered gymnasium id whose action space is a finite Box (MuJoCo v4/v5,
classic control, our process twin, which ``dime_offline/envs/__init__.py`` registers when this
package is imported). It returns an env whose action space is [-1, 1]^A (see
:class:`~dime_offline.envs.wrappers.UnitBoxAction`) and whose observations are flat float vectors
in raw units.

:func:`spaces_of` reads an environment's :class:`~dime_offline.data.spaces.SpaceSpec`, the
fingerprint that checkpoints and datasets carry, for ``check_spaces_match``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from dime_offline.data import spaces
from dime_offline.envs.wrappers import UnitBoxAction
from dime_offline.errors import ConfigError, EnvironmentMismatchError


def make_env(
    env_id: str,
    seed: int | None = None,
    *,
    max_episode_steps: int | None = None,
    **env_kwargs: Any,
) -> UnitBoxAction:
    """A seeded env with actions in [-1, 1]^A and flat observations.

    Args:
        env_id: a registered gymnasium id, e.g. ``"HalfCheetah-v4"`` or ``"Pendulum-v1"``.
        seed: seeds the env's RNG (through one ``reset(seed=...)``) and its action space, so the
            caller's later ``reset()`` calls without a seed continue a reproducible stream.
        max_episode_steps: overrides the registered time limit (truncation, never termination).
        env_kwargs: passed to ``gym.make``.

    Raises:
        ConfigError: the id is not registered or needs a missing dependency.
        EnvironmentMismatchError: the action space is not a finite Box, or the observation space
            cannot be flattened into a float vector.
    """
    base = _gym_make(env_id, max_episode_steps=max_episode_steps, **env_kwargs)
    try:
        env = UnitBoxAction(_flatten_observations(base, env_id))
    except EnvironmentMismatchError as err:
        base.close()
        raise EnvironmentMismatchError(f"environment '{env_id}': {err.message}") from None
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def recorded_env_id(env_id: str | None, recorded_by: str) -> str:
    """An environment id read from a file (a checkpoint's or dataset's metadata), taken only when it
    is already registered: gymnasium imports the module named by an id of the form
    ``module:Env-v0``, which would run code chosen by the file. Other ids need an explicit ``--env``."""
    if not env_id:
        raise ConfigError(f"no environment id given and {recorded_by} records none (e.g. --env HalfCheetah-v4)")
    if env_id not in gym.registry:
        raise ConfigError(
            f"{recorded_by} records environment '{env_id}', which is not a registered gymnasium id;"
            " name the environment with --env"
        )
    return env_id


def _gym_make(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    if not env_id:
        raise ConfigError("no environment id given (e.g. --env HalfCheetah-v4)")
    try:
        return gym.make(env_id, **{k: v for k, v in kwargs.items() if v is not None})
    except gym.error.DependencyNotInstalled as exc:
        raise ConfigError(f"environment '{env_id}' needs a dependency that is not installed: {exc}") from None
    except gym.error.Error as exc:
        # NameNotFound / VersionNotFound / NamespaceNotFound / DeprecatedEnv carry gymnasium's
        # own "did you mean" hint; keep it.
        raise ConfigError(f"unknown environment id '{env_id}': {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"environment '{env_id}' rejected its arguments: {exc}") from None


def _flatten_observations(env: gym.Env[Any, Any], env_id: str) -> gym.Env[Any, Any]:
    space = env.observation_space
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return env
    if isinstance(space, (gym.spaces.Box, gym.spaces.Dict, gym.spaces.Tuple)) and _all_boxes(space):
        return gym.wrappers.FlattenObservation(env)
    raise EnvironmentMismatchError(
        f"observation space is {space}; dime-offline needs Box observations (or a Dict/Tuple of Boxes)"
    )


def _all_boxes(space: gym.Space[Any]) -> bool:
    if isinstance(space, gym.spaces.Box):
        return True
    if isinstance(space, gym.spaces.Dict):
        return all(_all_boxes(s) for s in space.spaces.values())
    if isinstance(space, gym.spaces.Tuple):
        return all(_all_boxes(s) for s in space.spaces)
    return False


def spaces_of(env: gym.Env[Any, Any]) -> spaces.SpaceSpec:
    """The spec of an env built by :func:`make_env` (bounds before the [-1, 1] rescale)."""
    low = env.get_wrapper_attr("env_low")
    high = env.get_wrapper_attr("env_high")
    obs_space = env.observation_space
    obs_low = obs_high = None
    if isinstance(obs_space, gym.spaces.Box) and obs_space.is_bounded("both"):
        obs_low = tuple(float(x) for x in np.asarray(obs_space.low).reshape(-1))
        obs_high = tuple(float(x) for x in np.asarray(obs_space.high).reshape(-1))
    return spaces.SpaceSpec(
        obs_dim=int(gym.spaces.flatdim(obs_space)),
        action_dim=len(low),
        action_low=tuple(float(x) for x in low),
        action_high=tuple(float(x) for x in high),
        obs_low=obs_low,
        obs_high=obs_high,
    )
