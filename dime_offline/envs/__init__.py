"""Environments: gymnasium construction helpers and the CSTR process twin.

Importing this package registers the twin as ``dime_offline/CSTR-v0`` (numpy-only, see
:mod:`dime_offline.envs.cstr`), so ``gymnasium.make("dime_offline/CSTR-v0")`` works afterwards.
The env truncates itself at its ``horizon`` (no TimeLimit wrapper is registered).
"""

from __future__ import annotations

import gymnasium as gym

CSTR_ENV_ID = "dime_offline/CSTR-v0"
"""Gymnasium id of the jacketed CSTR twin."""

if CSTR_ENV_ID not in gym.registry:
    gym.register(id=CSTR_ENV_ID, entry_point="dime_offline.envs.cstr:CSTREnv")

__all__ = ["CSTR_ENV_ID"]
