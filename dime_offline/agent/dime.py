"""DIMEAgent: the diffusion policy, the CrossQ-style distributional critics, the temperature and their
optimisers, with ``update(batch)`` reading top to bottom like the algorithm.

One ``update`` is one critic update; every ``policy_delay``-th one (3, 6, 9, ...) is followed by an actor
update and a temperature update on the same minibatch. The trainer calls ``update`` ``utd`` times per
environment step.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from dime_offline.agent import losses
from dime_offline.agent.config import DIMEConfig, DeterministicMode
from dime_offline.agent.regularization import (
    ActorRegularizer,
    ActorStepContext,
    CriticRegularizer,
    CriticStepContext,
)
from dime_offline.errors import TrainingDivergedError
from dime_offline.nets.acting import ActingConstants, ActingConstantsCache
from dime_offline.nets.critic import DistributionalCritic, repeat_last_atom
from dime_offline.nets.diffusion import ChainSample, DiffusionPolicy
from dime_offline.nets.precision import MatmulPrecision, resolve_matmul_dtype
from dime_offline.types import Batch

# Standard deviations below this are treated as this (constant observation features).
_MIN_OBS_STD = 1e-6
CANDIDATE_NOISE_SEED = 20250713
"""Seeds the fixed noise of the 'best_of_k' deterministic mode (any constant: it only has to stay fixed)."""
NEW_ATOM_LOGIT_GAP = 1.0
"""How far below the top atom's logit each atom appended by :meth:`DIMEAgent.extend_value_support`
starts, per atom. A state's new atoms then hold its top atom's mass p times e^-1, e^-2, ...: a state
with no mass on the top atom keeps its value, one whose value was clipped at v_max moves up, by at
most p (0.58 (v_max - Q) + 0.92 atoms). A wider gap keeps values closer but leaves the new atoms
too far down to learn: on a bandit whose true value lies above v_max the critic's mean value dipped
after each extension and needed thousands of updates to recover at a gap of 10, none at 1."""


def best_of_k_actions(
    policy: DiffusionPolicy, critic: DistributionalCritic, obs: torch.Tensor, noise: torch.Tensor,
    constants: ActingConstants | None = None,
) -> torch.Tensor:
    """Of K chains per state, the action with the highest mean expected Q: (B, O) -> (B, d) in [-1, 1].

    ``noise`` (N + 1, K, 1, d): the same K draws for every state (see
    :meth:`DiffusionPolicy.action_from_noise`), so the choice depends on the observation alone. The
    critics must be in eval mode. ``constants``: the policy's cached acting constants, if any.
    Written with shape-generic ops only, so it also exports.
    """
    steps, k, _, act_dim = noise.shape
    batch = obs.shape[0]
    states = obs.repeat(k, 1)  # row j B + b: state b, candidate j
    actions = policy.action_from_noise(
        states, noise.expand(-1, -1, batch, -1).reshape(steps, k * batch, act_dim), constants
    )
    actions = actions.clamp(-1.0, 1.0).view(k, batch, act_dim)
    q = critic.expected_q(states, actions.reshape(k * batch, act_dim)).mean(0).view(k, batch)
    best = q.argmax(0).view(1, batch, 1).expand(1, batch, act_dim)
    return actions.gather(0, best)[0]


def _normalizer_tensors(normalizer: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(mean, std) float32 tensors from an object with ``mean``/``std``, a mapping, or a (mean, std) pair."""
    if normalizer is None:
        return None
    if isinstance(normalizer, dict):
        mean, std = normalizer["mean"], normalizer["std"]
    elif isinstance(normalizer, (tuple, list)):
        mean, std = normalizer
    else:
        mean, std = normalizer.mean, normalizer.std
    as_tensor = lambda v: torch.as_tensor(np.asarray(v, dtype=np.float32), device=device)
    return as_tensor(mean), as_tensor(std).clamp_min(_MIN_OBS_STD)


def frozen_copy(module: torch.nn.Module) -> Any:
    """A copy of ``module`` in eval mode without gradients (an acting average: updated by lerp, never trained)."""
    return copy.deepcopy(module).eval().requires_grad_(False)


def _state_tensors(*modules: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter and buffer of ``modules``, in an order equal for copies of the same modules."""
    return [t.detach() for module in modules for t in (*module.parameters(), *module.buffers())]


@torch.no_grad()
def move_average(average: Sequence[torch.nn.Module], live: Sequence[torch.nn.Module], decay: float) -> None:
    """Move the modules ``average`` (1 - decay) of the way to their copies ``live``: all floating
    tensors in one fused call, integer buffers (batch-renorm step counts) copied."""
    live_tensors, average_tensors = _state_tensors(*live), _state_tensors(*average)
    floating = [i for i, t in enumerate(live_tensors) if t.is_floating_point()]
    torch._foreach_lerp_([average_tensors[i] for i in floating], [live_tensors[i] for i in floating], 1.0 - decay)
    for kept, current in zip(average_tensors, live_tensors):
        if not current.is_floating_point():
            kept.copy_(current)


def _adam(params: Any, **kwargs: Any) -> torch.optim.Adam:
    """Adam with torch's fused kernel (one pass over each parameter instead of a dozen per-op
    passes): the same update to float32 rounding, and 11x faster on the paper preset's critics
    (78 -> 7 ms per step on CPU, docs/benchmarks.md). Devices without the kernel get the default."""
    params = list(params)
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.Adam(params, fused=fused or None, **kwargs)


class DIMEAgent:
    """DIME (Celik et al., ICML 2025) in PyTorch.

    Args:
        obs_dim: observation size O. act_dim: action size d (actions live in [-1, 1]).
        cfg: hyperparameters (``DIMEConfig.preset("paper")`` by default).
        obs_normalizer: optional observation statistics applied inside ``act``, ``update`` and
            ``q_values``: anything with ``mean`` and ``std`` (arrays or tensors of shape (O,)), a
            ``{"mean", "std"}`` mapping or a ``(mean, std)`` pair. Saved in ``state_dict``.
        device: torch device.
        seed: seeds parameter initialisation and the two private noise generators (one for updates,
            one for acting, so evaluation episodes never shift the training noise).
        critic_regularizer, actor_regularizer: optional extra loss terms (see ``agent/regularization.py``);
            public attributes, so trainers can change or replace them between updates.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: DIMEConfig | None = None,
        obs_normalizer: Any = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        critic_regularizer: CriticRegularizer | None = None,
        actor_regularizer: ActorRegularizer | None = None,
    ) -> None:
        self.cfg = cfg = cfg if cfg is not None else DIMEConfig()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)
        self.critic_regularizer = critic_regularizer
        self.actor_regularizer = actor_regularizer
        self.obs_normalizer = _normalizer_tensors(obs_normalizer, self.device)

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = DiffusionPolicy(
                obs_dim,
                act_dim,
                n_steps=cfg.diffusion_steps,
                prior_std=cfg.prior_std,
                dt_init=cfg.dt_init,
                friction_init=cfg.friction_init,
                learn_dt=cfg.learn_dt,
                learn_friction=cfg.learn_friction,
                score_hidden=cfg.score_hidden,
                n_frequencies=cfg.score_frequencies,
                time_hidden=cfg.score_time_hidden,
                score_output_clip=cfg.score_output_clip,
            ).to(self.device)
            self.critic = DistributionalCritic(
                obs_dim,
                act_dim,
                hidden=cfg.critic_hidden,
                n_atoms=cfg.n_atoms,
                v_min=cfg.v_min,
                v_max=cfg.v_max,
                n_critics=cfg.n_critics,
                brn_momentum=cfg.brn_momentum,
                brn_eps=cfg.brn_eps,
                brn_warmup_steps=cfg.brn_warmup_steps,
                brn_r_max=cfg.brn_r_max,
                brn_d_max=cfg.brn_d_max,
            ).to(self.device)
        self.acting_policy: DiffusionPolicy = self.policy
        """The policy deterministic actions come from: with ``cfg.acting_average_decay`` > 0 a separate
        exponential moving average of ``policy`` (updated after every :meth:`update`), else ``policy``."""
        self.acting_critic: DistributionalCritic = self.critic
        """The critics 'best_of_k' chooses with: the average of ``critic`` (weights and batch-renorm
        statistics), always in eval mode, or ``critic`` itself, as ``acting_policy``."""
        if cfg.acting_average_decay > 0:
            self.acting_policy, self.acting_critic = frozen_copy(self.policy), frozen_copy(self.critic)
        self.set_matmul_precision(cfg.matmul_precision)
        self.log_alpha = torch.tensor(float(np.log(cfg.alpha_init)), device=self.device, requires_grad=True)
        self.target_entropy = cfg.target_entropy(act_dim)

        betas = (cfg.adam_beta1, cfg.adam_beta2)
        self.critic_optimizer = _adam(self.critic.parameters(), lr=cfg.critic_lr, betas=betas)
        self.actor_optimizer = _adam(self.policy.parameters(), lr=cfg.actor_lr, betas=betas)
        self.alpha_optimizer = _adam([self.log_alpha], lr=cfg.alpha_lr)

        self.update_generator = torch.Generator(self.device).manual_seed(seed + 1)
        self.act_generator = torch.Generator(self.device).manual_seed(seed + 2)
        self._candidate_noise_cache: torch.Tensor | None = None
        self.acting_constants = ActingConstantsCache()
        """The policy's observation-free chain quantities for ``act`` (``nets/acting.py``): kept while
        the parameters stay the same; a deployed policy freezes it."""
        self.critic_updates = 0
        self.actor_updates = 0

    # ----------------------------------------------------------------------------------------------
    def set_deterministic_act(self, mode: DeterministicMode) -> None:
        """Choose how deterministic actions are picked ('best_of_k' or 'noise_free'); an acting setting
        only, so a loaded agent may change it."""
        self.cfg = dataclasses.replace(self.cfg, deterministic_act=mode)

    @contextlib.contextmanager
    def acting_as(self, mode: DeterministicMode) -> Iterator[None]:
        """Pick deterministic actions as ``mode`` within the block, as before after it."""
        own = self.cfg.deterministic_act
        self.set_deterministic_act(mode)
        try:
            yield
        finally:
            self.set_deterministic_act(own)

    def set_matmul_precision(self, precision: MatmulPrecision) -> None:
        """Choose the hidden layers' compute dtype ('auto', 'float32' or 'bfloat16'; see
        ``nets/precision.py``); a compute setting only, so a loaded agent may change it."""
        self.cfg = dataclasses.replace(self.cfg, matmul_precision=precision)
        self.matmul_dtype = resolve_matmul_dtype(precision, self.device)
        for policy, critic in {(self.policy, self.critic), (self.acting_policy, self.acting_critic)}:
            policy.matmul_dtype = self.matmul_dtype
            critic.set_matmul_dtype(self.matmul_dtype)

    @property
    def alpha(self) -> float:
        """Current temperature."""
        return float(self.log_alpha.detach().exp())

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        """Apply the observation normaliser (identity if there is none): (B, O) -> (B, O)."""
        if self.obs_normalizer is None:
            return obs
        mean, std = self.obs_normalizer
        return (obs - mean) / std

    def _as_obs_tensor(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(obs, dtype=torch.float32, device=self.device)

    def sample_actions(self, obs: torch.Tensor) -> ChainSample:
        """Policy samples for *normalised* observations (B, O), without gradient (update noise stream)."""
        with torch.no_grad():
            return self.policy.sample(obs, generator=self.update_generator)

    @torch.inference_mode()  # less per-op bookkeeping than no_grad: ~7 % of a batch-1 action
    def act(self, obs: np.ndarray, deterministic: bool = False) -> np.ndarray:
        """Actions in [-1, 1] for raw observations: (O,) -> (d,) or (B, O) -> (B, d).

        Samples the stochastic chain of the live policy (exploration, and the authors' evaluation
        protocol) unless ``deterministic``: then the action is a function of the observation alone,
        chosen as ``cfg.deterministic_act`` says, by the acting networks (``acting_policy``, the
        weight average when ``cfg.acting_average_decay`` > 0).
        """
        x = self._as_obs_tensor(obs)
        single = x.dim() == 1
        x = self.normalize_obs(x.unsqueeze(0) if single else x)
        policy = self.acting_policy if deterministic else self.policy
        # The constants are validated on the CPU only (a byte comparison in NumPy).
        constants = self.acting_constants.get(policy) if self.device.type == "cpu" else None
        if not deterministic:
            action = policy.sample_action(x, generator=self.act_generator, constants=constants)
        elif self.cfg.deterministic_act == "best_of_k":
            action = self._best_of_k(x, self.cfg.act_candidates, constants)
        else:
            action = policy.sample_action(x, noise_free=True, constants=constants)
        out = action.clamp(-1.0, 1.0).cpu().numpy()
        return out[0] if single else out

    def _best_of_k(self, obs: torch.Tensor, k: int, constants: ActingConstants | None = None) -> torch.Tensor:
        """:func:`best_of_k_actions` of the acting networks on this agent's fixed candidate noise, critics
        in eval mode (``constants``: those of ``acting_policy``)."""
        # A separate average is always in eval mode without gradients; the live critics are switched.
        frozen = self._critic_frozen() if self.acting_critic is self.critic else contextlib.nullcontext()
        with frozen:
            return best_of_k_actions(self.acting_policy, self.acting_critic, obs, self._candidate_noise(k), constants)

    def candidate_noise(self, k: int) -> torch.Tensor:
        """The fixed noise of the 'best_of_k' mode for ``k`` candidates (for export)."""
        return self._candidate_noise(k).clone()

    def _candidate_noise(self, k: int) -> torch.Tensor:
        """(N + 1, k, 1, d) standard normal draws for :meth:`_best_of_k`, candidate 0 all zeros."""
        cached = self._candidate_noise_cache
        if cached is None or cached.shape[1] != k:
            generator = torch.Generator().manual_seed(CANDIDATE_NOISE_SEED)
            cached = torch.randn(self.policy.n_steps + 1, k, 1, self.act_dim, generator=generator)
            cached[:, 0] = 0.0
            cached = cached.to(self.device)
            self._candidate_noise_cache = cached
        return cached

    @torch.no_grad()
    def q_values(self, obs: np.ndarray | torch.Tensor, action: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Expected Q per critic, (E, B), for raw observations (B, O) and actions (B, d); eval mode."""
        with self._critic_frozen():
            return self.critic.expected_q(
                self.normalize_obs(self._as_obs_tensor(obs)), self._as_obs_tensor(action)
            )

    @contextlib.contextmanager
    def _critic_frozen(self) -> Iterator[None]:
        """Critic in eval mode (BRN running statistics) with no parameter gradients; restored afterwards."""
        was_training = self.critic.training
        self.critic.eval()
        self.critic.requires_grad_(False)
        try:
            yield
        finally:
            self.critic.requires_grad_(True)
            self.critic.train(was_training)

    # ----------------------------------------------------------------------------------------------
    def update(self, batch: Batch) -> dict[str, float]:
        """One critic update and, on every ``policy_delay``-th call, an actor and a temperature update.

        ``batch`` holds raw observations and [-1, 1] actions; ``terminated`` (never ``truncated``) stops
        bootstrapping. Returns namespaced float metrics.
        """
        cfg = self.cfg
        obs, next_obs = self.normalize_obs(batch.obs), self.normalize_obs(batch.next_obs)
        alpha = self.log_alpha.detach().exp()
        n = obs.shape[0]

        # Critic: one train-mode pass over [(s, a); (s', a')] (CrossQ, no target network). a' comes from the
        # current policy: the authors' target actor is copied with tau = 1 after every actor step.
        self.critic.train()
        regularizer = self.critic_regularizer
        if regularizer is not None and regularizer.weight == 0:
            regularizer = None
        # One chain pass for a' at s' and for the states the regulariser wants policy actions at: one
        # batch of 3 B rows costs ~15 % less than B and 2 B rows apart (docs/benchmarks.md).
        policy_states = getattr(regularizer, "policy_states", None)
        chain_obs = next_obs if policy_states is None else torch.cat([next_obs, policy_states(obs)])
        chain = self.sample_actions(chain_obs)
        next_action, next_log_prob = chain.action[:n], chain.log_prob_surrogate[:n]
        rows_obs, rows_action = [obs, next_obs], [batch.action, next_action]
        extra_rows = getattr(regularizer, "extra_rows", None)
        if extra_rows is not None:  # the regulariser's rows join the pass (one batch normalisation)
            extra_obs, extra_action = extra_rows(obs, batch, chain.action[n:], next_action)
            rows_obs.append(extra_obs)
            rows_action.append(extra_action)
        logits = self.critic(torch.cat(rows_obs), torch.cat(rows_action))
        if not bool(torch.isfinite(logits).all() and torch.isfinite(next_log_prob).all()):
            raise TrainingDivergedError(
                "training diverged: the critics' logits or the policy's log-probabilities are not finite"
                " (a learning rate or reward scale far too large?)"
            )
        logits, next_logits, extra_logits = logits[:, :n], logits[:, n : 2 * n], logits[:, 2 * n :]
        next_probs = next_logits.detach().softmax(-1)  # the target's, and the support's ceiling below
        target = losses.soft_distributional_target(
            next_probs,
            batch.reward,
            batch.terminated,
            next_log_prob,
            alpha,
            cfg.gamma,
            self.critic.support,
        )
        critic_loss, metrics = losses.critic_loss(logits, target, cfg.critic_entropy_coef)
        if regularizer is not None:
            penalty, extra = regularizer(
                CriticStepContext(
                    self.critic, obs, batch, logits, self.sample_actions, extra_logits if extra_rows is not None else None,
                    soft_step_cost=float(alpha * next_log_prob.mean()),
                )
            )
            critic_loss = critic_loss + penalty
            metrics.update(extra)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_optimizer.step()
        self.critic_updates += 1
        probs_data = logits.detach().softmax(-1)
        q_data = probs_data @ self.critic.support  # (E, B)
        metrics["critic/q_data"] = float(q_data.mean())
        # The support's ceiling: mass piling on the top atom means values clipped at v_max (see
        # extend_value_support). Read at (s', a' ~ the current policy), the values the policy earns now:
        # the replay's actions are older policies' and read lower (HalfCheetah at 20k: a third of the
        # mass on the top atom at the policy's own states while the logged actions' average stayed
        # under the growth trigger). Over the online rows when the batch has any: logged data never
        # earns more than the support fitted to it, and its rows would hide the online policy's.
        top_atom_mass = next_probs[..., -1]
        online = (batch.is_offline < 0.5).to(top_atom_mass.dtype)
        rows = torch.where(online.any(), online, torch.ones_like(online))  # no host sync on the hot path
        metrics["critic/top_atom_mass"] = float((top_atom_mass * rows).sum() / (rows.sum() * top_atom_mass.shape[0]))
        has_return = torch.isfinite(batch.mc_return)
        if bool(has_return.any()):  # the boundary diagnostic: learned values against the logged returns
            metrics["critic/mc_return"] = float(batch.mc_return[has_return].mean())
            metrics["critic/q_data_minus_return"] = float((q_data.mean(0) - batch.mc_return)[has_return].mean())

        if self.critic_updates % cfg.policy_delay == 0:
            metrics.update(self._actor_and_temperature_step(obs, batch, alpha))
        self._update_acting_average()
        return metrics

    def _actor_and_temperature_step(self, obs: torch.Tensor, batch: Batch, alpha: torch.Tensor) -> dict[str, float]:
        cfg = self.cfg
        # Actor: pathwise gradient through the whole chain; critics in eval mode and frozen.
        with self._critic_frozen():
            sample = self.policy.sample(obs, generator=self.update_generator)
            q_per_critic = self.critic.expected_q(obs, sample.action)
            q = q_per_critic.min(0).values if cfg.actor_q_reduction == "min" else q_per_critic.mean(0)
            loss, metrics = losses.actor_loss(alpha, sample.log_prob_surrogate, q)
            if self.actor_regularizer is not None and self.actor_regularizer.weight != 0:
                penalty, extra = self.actor_regularizer(
                    ActorStepContext(self.policy, self.critic, obs, batch, sample, q)
                )
                loss = loss + penalty
                metrics.update(extra)
            self.actor_optimizer.zero_grad(set_to_none=True)
            loss.backward()
        for p in self.policy.parameters():
            if p.grad is not None:  # element-wise clip after zeroing NaNs (optax zero_nans + clip)
                p.grad.nan_to_num_(nan=0.0).clamp_(-cfg.actor_grad_clip, cfg.actor_grad_clip)
        self.actor_optimizer.step()
        self.actor_updates += 1

        # Temperature: from the actor pass (pre-update parameters), on the configured statistic.
        if cfg.temperature_statistic == "running_cost":
            entropy_estimate = -sample.running_cost
        else:
            entropy_estimate = -sample.log_prob_surrogate
        if cfg.alpha_mode == "auto":
            alpha_loss, alpha_metrics = losses.temperature_loss(self.log_alpha, entropy_estimate, self.target_entropy)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_optimizer.step()
            metrics.update(alpha_metrics)
        metrics.update(
            {
                "actor/running_cost": float(sample.running_cost.detach().mean()),
                "alpha/value": self.alpha,
                "policy/dt_scale": float(torch.nn.functional.softplus(self.policy.raw_dt.detach())),
                "policy/friction_mean": float(torch.nn.functional.softplus(self.policy.raw_friction.detach()).mean()),
            }
        )
        return metrics

    def _update_acting_average(self) -> None:
        """Move the acting average (1 - decay) of the way to the live weights (:func:`move_average`).
        Nothing without an average."""
        if self.acting_policy is self.policy:
            return
        move_average((self.acting_policy, self.acting_critic), (self.policy, self.critic), self.cfg.acting_average_decay)

    def extend_value_support(self, extra_atoms: int) -> None:
        """Append ``extra_atoms`` atoms above ``v_max`` at the support's spacing, when the policy's values
        outgrow it (online, a policy can earn more than any logged one; the support fitted to the data
        would clip its values at ``v_max`` and hide every further gain from the actor). Only states with
        mass on the top atom change value, upwards (:data:`NEW_ATOM_LOGIT_GAP`,
        :meth:`DistributionalCritic.extend_support`), the acting average's likewise; the new head rows
        start with the top row's Adam moments. Recorded in ``cfg`` (``n_atoms``, ``v_max``)."""
        if extra_atoms < 1:
            raise ValueError(f"extra_atoms must be >= 1, got {extra_atoms}")
        cfg = self.cfg
        n_atoms = cfg.n_atoms + extra_atoms
        v_max = cfg.v_min + (cfg.v_max - cfg.v_min) / (cfg.n_atoms - 1) * (n_atoms - 1)
        head = self.critic.head
        for param in (head.weight, head.bias):
            state = self.critic_optimizer.state.get(param, {})
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == param.shape:  # moments, not the step count
                    state[key] = repeat_last_atom(value, extra_atoms)
        for critic in {id(c): c for c in (self.critic, self.acting_critic)}.values():
            critic.extend_support(extra_atoms, v_max, NEW_ATOM_LOGIT_GAP)
        self.cfg = dataclasses.replace(cfg, n_atoms=n_atoms, v_max=v_max)

    def set_temperature(self, alpha: float) -> None:
        """Set alpha (> 0) of a built agent, e.g. at the offline -> online boundary; the temperature
        optimiser keeps its moments."""
        with torch.no_grad():
            self.log_alpha.fill_(float(np.log(alpha)))

    def set_learning_rates(self, critic_lr: float, actor_lr: float, alpha_lr: float) -> None:
        """Give a built agent's optimisers new learning rates (fine-tuning a checkpoint with other
        rates: the optimisers keep their moments); recorded in ``cfg``."""
        self.cfg = dataclasses.replace(self.cfg, critic_lr=critic_lr, actor_lr=actor_lr, alpha_lr=alpha_lr)  # validated there
        for optimizer, lr in ((self.critic_optimizer, critic_lr), (self.actor_optimizer, actor_lr), (self.alpha_optimizer, alpha_lr)):
            for group in optimizer.param_groups:
                group["lr"] = lr

    def set_acting_average_decay(self, decay: float) -> None:
        """Change ``cfg.acting_average_decay`` of a built agent (fine-tuning a checkpoint with another
        decay): an average kept goes on with the new decay, a new one starts at the live weights, and
        0 drops it (deterministic acting goes back to the live weights)."""
        self.cfg = dataclasses.replace(self.cfg, acting_average_decay=decay)  # validated there
        if decay == 0:
            self.acting_policy, self.acting_critic = self.policy, self.critic
        elif self.acting_policy is self.policy:
            self.acting_policy, self.acting_critic = frozen_copy(self.policy), frozen_copy(self.critic)

    def adopt_acting_average(self) -> None:
        """Act with the averaged weights in every mode from now on, stochastic chain included: the live
        networks take the average's values (for a policy loaded to act, which no longer trains:
        ``load_policy``, ``evaluate``, ``collect``). Without an average nothing changes."""
        if self.acting_policy is self.policy:
            return
        self.policy.load_state_dict(self.acting_policy.state_dict())
        self.critic.load_state_dict(self.acting_critic.state_dict())
        self.acting_policy, self.acting_critic = self.policy, self.critic

    # ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: modules (and their acting average, if kept), optimisers,
        temperature, counters, RNG, normaliser, config.

        A deep copy: a snapshot that later updates do not change. (Torch's own state dicts hold live
        tensors, and ``Optimizer.load_state_dict`` keeps same-device tensors as they are, so without the
        copy an agent loaded in memory would share Adam moments with its source.)
        """
        average = {} if self.acting_policy is self.policy else {
            "acting_policy": self.acting_policy.state_dict(), "acting_critic": self.acting_critic.state_dict(),
        }
        return copy.deepcopy({
            "config": dataclasses.asdict(self.cfg),
            "policy": self.policy.state_dict(),
            "critic": self.critic.state_dict(),
            "log_alpha": self.log_alpha.detach(),
            "critic_optimizer": self.critic_optimizer.state_dict(),
            "actor_optimizer": self.actor_optimizer.state_dict(),
            "alpha_optimizer": self.alpha_optimizer.state_dict(),
            "critic_updates": self.critic_updates,
            "actor_updates": self.actor_updates,
            "update_rng": self.update_generator.get_state(),
            "act_rng": self.act_generator.get_state(),
            "obs_normalizer": None
            if self.obs_normalizer is None
            else {"mean": self.obs_normalizer[0], "std": self.obs_normalizer[1]},
            **average,
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the agent must have been built with the same network shapes).

        An agent that keeps an acting average takes the saved one, or, from a state saved without one
        (older, or with decay 0), starts it at the live weights; an agent without one ignores it.
        """
        self.policy.load_state_dict(state["policy"])
        self.critic.load_state_dict(state["critic"])
        if self.acting_policy is not self.policy:
            self.acting_policy.load_state_dict(state.get("acting_policy", state["policy"]))
            self.acting_critic.load_state_dict(state.get("acting_critic", state["critic"]))
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.actor_optimizer.load_state_dict(state["actor_optimizer"])
        self.alpha_optimizer.load_state_dict(state["alpha_optimizer"])
        self.critic_updates = int(state["critic_updates"])
        self.actor_updates = int(state["actor_updates"])
        self.update_generator.set_state(state["update_rng"])
        self.act_generator.set_state(state["act_rng"])
        self.obs_normalizer = _normalizer_tensors(state["obs_normalizer"], self.device)
