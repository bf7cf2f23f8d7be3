"""A trained policy as a plain function from observations to actions, in the environment's units.

What a control system needs from a run, without the training machinery::

    from dime_offline import load_policy
    policy = load_policy("runs/ft")              # a run directory or a checkpoint directory
    action = policy(obs)                         # (O,) -> (A,), or (B, O) -> (B, A), env units

Observations go in raw (the checkpoint's normalisation is applied inside) and actions come out
rescaled from the policy's [-1, 1] to the action bounds the checkpoint recorded. By default the
policy is deterministic: the action is a function of the observation alone, chosen as the
checkpoint's ``deterministic_act`` says (``mode`` overrides it): "noise_free" runs the denoising
chain from the prior mean without injected noise, "best_of_k" takes, of K chains on fixed noise,
the action the critics value most. ``deterministic=False``
samples DIME's stochastic chain, as training and the authors' evaluation do; its noise stream is
seeded, so a deployment can be replayed exactly.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from dime_offline.agent.dime import DIMEAgent
from dime_offline.checkpoints import load_checkpoint
from dime_offline.data.spaces import SpaceSpec
from dime_offline.devices import check_device
from dime_offline.errors import ConfigError

DeterministicMode = Literal["noise_free", "best_of_k"]
DETERMINISTIC_MODES: tuple[str, ...] = ("noise_free", "best_of_k")


class DeployedPolicy:
    """``policy(obs) -> action`` in environment units (see the module docstring).

    Args:
        agent: the trained agent (its observation normaliser is applied inside ``act``).
        spaces: observation width and action bounds the policy was trained for.
        deterministic: a deterministic action (True) or a sample of the stochastic chain (False).
        seed: seeds the stochastic chain's noise.
        env_id: the environment the checkpoint names, if any (informational).
        mode: the deterministic mode, "noise_free" or "best_of_k" (None: the checkpoint's).
    """

    def __init__(
        self, agent: DIMEAgent, spaces: SpaceSpec, *, deterministic: bool = True, seed: int = 0, env_id: str | None = None,
        mode: DeterministicMode | None = None,
    ) -> None:
        if mode is not None:
            if mode not in DETERMINISTIC_MODES:
                raise ConfigError(f"unknown deterministic mode '{mode}' (known: {', '.join(DETERMINISTIC_MODES)})")
            agent.cfg = dataclasses.replace(agent.cfg, deterministic_act=mode)
        agent.act_generator.manual_seed(seed)
        # float32 throughout: a deployed action must not depend on the batch size or on bf16 rounding
        # (and must match the exported graph, which is float32).
        agent.critic.set_matmul_dtype(torch.float32)
        agent.policy.matmul_dtype = torch.float32
        # A deployed policy does not train: its chain's observation-free part is computed once, here,
        # and acting skips the check that the parameters are unchanged (nets/acting.py).
        if agent.device.type == "cpu":
            agent.acting_constants.get(agent.policy)
            agent.acting_constants.freeze()
        self.agent = agent
        self.spaces = spaces
        self.deterministic = deterministic
        self.env_id = env_id
        self._low = np.asarray(spaces.action_low, dtype=np.float32)
        self._half_range = (np.asarray(spaces.action_high, dtype=np.float32) - self._low) / 2.0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions (A,) for one observation (O,), or (B, A) for a batch (B, O); float32, env units."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.spaces.obs_dim:
            raise ConfigError(
                f"observation of shape {x.shape}: this policy expects ({self.spaces.obs_dim},) or (batch, {self.spaces.obs_dim})"
            )
        if not np.isfinite(x).all():
            raise ConfigError("observation holds NaN or infinite values; the policy needs finite inputs")
        unit = self.agent.act(x, deterministic=self.deterministic)
        return self._low + (unit + 1.0) * self._half_range

    def act(self, obs: np.ndarray, deterministic: bool | None = None) -> np.ndarray:
        """The trainers' ``Policy`` protocol: actions in [-1, 1] for raw observations (B, O)."""
        return self.agent.act(obs, deterministic=self.deterministic if deterministic is None else deterministic)


def load_policy(
    path: str | Path, *, deterministic: bool = True, seed: int = 0, device: str = "cpu", mode: DeterministicMode | None = None
) -> DeployedPolicy:
    """The policy of a run directory or checkpoint directory, ready to act in env units (``mode``: the
    deterministic mode, None for the checkpoint's).

    Raises:
        CheckpointError: ``path`` holds no readable checkpoint.
        ConfigError: ``device`` is not usable here.
    """
    check_device(device)
    agent, _, meta = load_checkpoint(path, device=device)
    return DeployedPolicy(agent, meta.spaces, deterministic=deterministic, seed=seed, env_id=meta.env_id, mode=mode)
