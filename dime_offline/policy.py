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
seeded, so a deployment can be replayed exactly. A checkpoint that keeps averaged weights
(``agent.acting_average_decay`` > 0) acts with the average in every mode, the stochastic chain
included, and so does its exported graph (``DIMEAgent.adopt_acting_average``).

Speed (``backend``): the default "torch" acts through the agent, whose chain keeps its
observation-free part from the load on and runs batches of up to 4 rows through NumPy
(``nets/acting.py``); "onnxruntime" (the ``onnx`` extra) traces the policy into an ONNX graph at
load (about half a second) and runs that, faster still at every batch size measured (best-of-K
at batch 1, 16 chains and the critics, ~1.6x). Both give the same actions to float32 rounding
(measurements in docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import importlib.util
import io
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dime_offline.agent.config import DETERMINISTIC_MODES, DeterministicMode
from dime_offline.agent.dime import DIMEAgent, best_of_k_actions
from dime_offline.checkpoints import load_checkpoint
from dime_offline.data.spaces import SpaceSpec
from dime_offline.devices import check_device
from dime_offline.errors import ConfigError

GraphMode = Literal["deterministic", "noise_input"]
GRAPH_MODES: tuple[str, ...] = ("deterministic", "noise_input")
Backend = Literal["torch", "onnxruntime"]
BACKENDS: tuple[str, ...] = ("torch", "onnxruntime")
ONNXRUNTIME_HINT = "the onnxruntime backend needs the onnx extra: pip install 'dime-offline[onnx]'"


class PolicyGraph(nn.Module):
    """The policy as one traceable module (what ``export`` writes and the onnxruntime backend runs):
    raw observations in, actions in env units out (in the [-1, 1] box with ``unit_actions``).

    ``mode="deterministic"``: ``forward(obs)``, the checkpoint's deterministic action (best of K
    chains by the critics, which then travel in the graph, or the noise-free chain), exactly what
    ``load_policy(checkpoint)`` returns. ``mode="noise_input"``: ``forward(obs, noise)``, the chain
    with explicit noise (zeros: the noise-free chain; logged draws replay a stochastic deployment).
    Both modes hold the agent's acting networks (``acting_policy``, ``acting_critic``): its weight
    average when it keeps one.
    """

    def __init__(
        self, agent: DIMEAgent, spaces: SpaceSpec, mode: GraphMode = "deterministic", unit_actions: bool = False
    ) -> None:
        super().__init__()
        if mode not in GRAPH_MODES:
            raise ConfigError(f"unknown export mode '{mode}' (known: {', '.join(GRAPH_MODES)})")
        self.mode = mode
        self.unit_actions = unit_actions
        self.policy = _frozen_float32(agent.acting_policy)
        self.policy.matmul_dtype = torch.float32
        self.critic: nn.Module | None = None
        if mode == "deterministic" and agent.cfg.deterministic_act == "best_of_k":
            critic = _frozen_float32(agent.acting_critic)
            critic.set_matmul_dtype(torch.float32)
            self.critic = critic
            self.register_buffer("candidate_noise", agent.candidate_noise(agent.cfg.act_candidates).cpu())
        if agent.obs_normalizer is None:
            mean, std = torch.zeros(spaces.obs_dim), torch.ones(spaces.obs_dim)
        else:
            mean, std = (t.detach().cpu().float() for t in agent.obs_normalizer)
        low = torch.tensor(spaces.action_low, dtype=torch.float32)
        high = torch.tensor(spaces.action_high, dtype=torch.float32)
        self.register_buffer("obs_mean", mean.clone())
        self.register_buffer("obs_std", std.clone())
        self.register_buffer("action_low", low)
        self.register_buffer("half_range", (high - low) / 2.0)

    @property
    def noise_rows(self) -> int:
        """N + 1: the rows of the ``noise`` input."""
        return self.policy.n_steps + 1

    def forward(self, obs: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        x = (obs - self.obs_mean) / self.obs_std
        if self.mode == "noise_input":
            assert noise is not None
            unit = self.policy.action_from_noise(x, noise)
        elif self.critic is not None:
            unit = best_of_k_actions(self.policy, self.critic, x, self.candidate_noise)
        else:
            unit = self.policy.action_from_noise(x, x.new_zeros((self.noise_rows, x.shape[0], self.half_range.shape[0])))
        unit = unit.clamp(-1.0, 1.0)
        return unit if self.unit_actions else self.action_low + (unit + 1.0) * self.half_range


def _frozen_float32(module: nn.Module) -> Any:
    """A float32 CPU copy in eval mode without gradients (the graph must not share or train weights)."""
    return copy.deepcopy(module).cpu().float().eval().requires_grad_(False)



class DeployedPolicy:
    """``policy(obs) -> action`` in environment units (see the module docstring).

    Args:
        agent: the trained agent (its observation normaliser is applied inside ``act``); one that keeps
            averaged weights adopts them as its live ones (it acts with the average in every mode).
        spaces: observation width and action bounds the policy was trained for.
        deterministic: a deterministic action (True) or a sample of the stochastic chain (False).
        seed: seeds the stochastic chain's noise.
        env_id: the environment the checkpoint names, if any (informational).
        mode: the deterministic mode, "noise_free" or "best_of_k" (None: the checkpoint's).
        backend: "torch" (the agent acts) or "onnxruntime" (a traced ONNX graph of the same policy;
            the ``onnx`` extra, CPU only). See the module docstring.
    """

    def __init__(
        self, agent: DIMEAgent, spaces: SpaceSpec, *, deterministic: bool = True, seed: int = 0, env_id: str | None = None,
        mode: DeterministicMode | None = None, backend: Backend = "torch",
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"unknown policy backend '{backend}' (known: {', '.join(BACKENDS)})")
        if mode is not None:
            if mode not in DETERMINISTIC_MODES:
                raise ConfigError(f"unknown deterministic mode '{mode}' (known: {', '.join(DETERMINISTIC_MODES)})")
            agent.set_deterministic_act(mode)
        agent.act_generator.manual_seed(seed)
        agent.adopt_acting_average()  # a deployed policy acts with the average in every mode
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
        self.backend = backend
        self._graphs = _OnnxRuntimeGraphs(agent, spaces) if backend == "onnxruntime" else None
        if self._graphs is not None:
            self._graphs.session("deterministic" if deterministic else "noise_input")  # fail at load, not at the first call

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Actions (A,) for one observation (O,), or (B, A) for a batch (B, O); float32, env units."""
        x = np.asarray(obs, dtype=np.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.spaces.obs_dim:
            raise ConfigError(
                f"observation of shape {x.shape}: this policy expects ({self.spaces.obs_dim},) or (batch, {self.spaces.obs_dim})"
            )
        if not np.isfinite(x).all():
            raise ConfigError("observation holds NaN or infinite values; the policy needs finite inputs")
        unit = self.act(x)
        return self._low + (unit + 1.0) * self._half_range

    def act(self, obs: np.ndarray, deterministic: bool | None = None) -> np.ndarray:
        """The trainers' ``Policy`` protocol: actions in [-1, 1] for raw observations (B, O)."""
        deterministic = self.deterministic if deterministic is None else deterministic
        if self._graphs is None:
            return self.agent.act(obs, deterministic=deterministic)
        return self._graphs.unit_actions(np.asarray(obs, dtype=np.float32), deterministic, self.agent.act_generator)


class _OnnxRuntimeGraphs:
    """The policy's :class:`PolicyGraph` in [-1, 1] units, traced to ONNX in memory and run by onnxruntime:
    one session per graph mode, built on first use."""

    def __init__(self, agent: DIMEAgent, spaces: SpaceSpec) -> None:
        missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigError(f"{ONNXRUNTIME_HINT} (missing: {', '.join(missing)})")
        if agent.device.type != "cpu":
            raise ConfigError(f"the onnxruntime backend runs on the CPU; load the policy with device='cpu', not '{agent.device}'")
        self.agent, self.spaces = agent, spaces
        self._sessions: dict[str, Any] = {}

    def session(self, mode: GraphMode) -> Any:
        """The onnxruntime session of ``mode``'s graph."""
        if mode not in self._sessions:
            import onnxruntime

            graph = PolicyGraph(self.agent, self.spaces, mode, unit_actions=True)
            inputs = (torch.zeros(1, self.spaces.obs_dim),)
            if mode == "noise_input":
                inputs += (torch.zeros(graph.noise_rows, 1, self.spaces.action_dim),)
            names = ["obs", "noise"][: len(inputs)]
            buffer = io.BytesIO()
            # The TorchScript-based exporter: ~0.5 s for this graph, against ~7 s through dynamo.
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(graph, inputs, buffer, dynamo=False, input_names=names, output_names=["action"],
                                  dynamic_axes={"obs": {0: "batch"}, "noise": {1: "batch"}, "action": {0: "batch"}})
            options = onnxruntime.SessionOptions()
            # One thread: at 1-16 rows a second one costs more to wake than it saves, and must not spin
            # against the caller's own threads.
            options.intra_op_num_threads = options.inter_op_num_threads = 1
            self._sessions[mode] = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        return self._sessions[mode]

    def unit_actions(self, obs: np.ndarray, deterministic: bool, generator: torch.Generator) -> np.ndarray:
        """Actions in [-1, 1] as ``DIMEAgent.act`` gives them: (O,) -> (d,), (B, O) -> (B, d); a stochastic
        call draws its noise from ``generator`` as the agent's chain does (x_0 first, then the steps)."""
        single = obs.ndim == 1
        x = obs[None] if single else obs
        if deterministic:
            (action,) = self.session("deterministic").run(None, {"obs": x})
        else:
            batch, d = x.shape[0], self.spaces.action_dim
            x0 = torch.randn(batch, d, generator=generator)
            steps = torch.randn(self.agent.policy.n_steps, batch, d, generator=generator)
            noise = torch.cat([x0[None], steps]).numpy()
            (action,) = self.session("noise_input").run(None, {"obs": x, "noise": noise})
        return action[0] if single else action


def load_policy(
    path: str | Path, *, deterministic: bool = True, seed: int = 0, device: str = "cpu", mode: DeterministicMode | None = None,
    backend: Backend = "torch",
) -> DeployedPolicy:
    """The policy of a run directory or checkpoint directory, ready to act in env units (``mode``: the
    deterministic mode, None for the checkpoint's; ``backend``: "torch" or "onnxruntime", see the
    module docstring).

    Raises:
        CheckpointError: ``path`` holds no readable checkpoint.
        ConfigError: ``device`` is not usable here, or the onnxruntime backend's packages are missing
            (the hint names the extra).
    """
    check_device(device)
    agent, _, meta = load_checkpoint(path, device=device)
    return DeployedPolicy(
        agent, meta.spaces, deterministic=deterministic, seed=seed, env_id=meta.env_id, mode=mode, backend=backend
    )
