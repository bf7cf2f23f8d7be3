"""What the offline stage changes, what it becomes online, and how checkpoints carry it.

:class:`OfflineConfig` holds every weight of the offline stage and its online counterpart. The
pretraining trainer builds the regularisers for the offline phase and runs the agent with the
offline temperature settings; its checkpoint stores the agent's *online* configuration
(``config.json``) and the regularisers as the online phase will use them
(``meta.json: extra.regularizers``). Fine-tuning rebuilds them from there with
:func:`attach_regularizers`, so the switch at the offline -> online boundary needs no extra
flag, and a fine-tuning checkpoint that stores :func:`describe_regularizers` again carries them on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from dime_offline.agent.config import DIMEConfig
from dime_offline.agent.regularization import ActorRegularizer, CriticRegularizer
from dime_offline.data.returns import TRUNCATION_TAILS, TruncationTail
from dime_offline.errors import CheckpointError, ConfigError
from dime_offline.regularizers.behaviour import BehaviourLikelihood
from dime_offline.regularizers.conservative import ConservativePenalty

Phase = Literal["offline", "online"]
ONLINE_BEHAVIOUR_WEIGHT_FLOOR = 1.0
"""Least online weight of a behaviour term that pretraining used, unless ``behaviour_weight_online`` is
set: one nat of the logged actions' likelihood bound per atom of Q (see ``OfflineConfig``)."""
REGULARIZERS_KEY = "regularizers"
"""Key of the regulariser description in a checkpoint's ``meta.json`` ``extra``."""


@dataclass(frozen=True)
class OfflineConfig:
    """Offline-stage regularisation and temperature, and what each weight becomes online.

    Weights are dimensionless: the conservative penalty measures values in widths of the critic's
    support, the behaviour term in atoms of it (see :mod:`dime_offline.regularizers.conservative`
    and ``behaviour``). Defaults were chosen by
    the measurements in docs/algorithm.md, section 8 ("Offline stage").
    """

    conservative_weight: float = 0.5
    """Weight of the conservative critic penalty during pretraining, in units of the support width
    (stable below 1, see ``regularizers/conservative.py``; 0: off)."""
    conservative_weight_online: float = 0.5
    """Its weight during online fine-tuning (Cal-QL keeps the calibrated penalty online)."""
    calibration: bool = True
    """Cal-QL calibration offline: policy-candidate values are raised to at least the data's
    Monte-Carlo return-to-go inside the penalty. Off, the offline policy ended higher on every dataset
    measured at 3000+ steps but fine-tuned worse on Hopper (docs/algorithm.md section 8.7)."""
    calibration_online: bool | None = None
    """Calibration online (offline rows, and online rows once their episode has ended); None: as
    pretraining ran (``calibration``). Switched on at the boundary after a calibration-free
    pretraining, it dipped every CSTR run and took Hopper's first evaluations to 0.34-0.45x of the
    boundary (docs/algorithm.md section 8.7)."""
    return_tail: TruncationTail = "lower"
    """How the returns-to-go that calibration uses end at a truncation: "zero", "repeat_last_reward"
    or "lower", the lower of the two (``data/returns.py``; fine-tuning keeps the setting)."""
    value_support: Literal["returns", "data", "preset"] = "returns"
    """The critics' support: "returns" (default) fits [v_min, v_max] to the discounted sums of the
    logged rewards (no truncation tail, nothing held for ever), with ``value_support_margin``, so the
    atoms spend their resolution where the logged values lie (values beyond are clipped to the ends);
    "data" also covers the returns-to-go with ``return_tail`` and the logged rewards held for ever, a
    far wider range when a truncation cuts a transient (CSTR twin: [-4192, 838] against [-518, 104],
    and pretrained policies 150 return worse per seed: docs/algorithm.md section 8.1); "preset" keeps
    the preset's (``data/returns.py: value_support``). "returns" assumes episodes that are long next
    to the horizon 1 / (1 - gamma) or that end in true terminations: logs cut into fragments much
    shorter than that, whose values run on past the cut with rewards of one sign, need "data" (a
    20-step fragment of rewards 1 sums to 18 at gamma 0.99, its value is up to 100). Explicit
    ``agent.v_min``/``agent.v_max`` always win. The checkpoint keeps the result."""
    value_support_margin: float = 0.25
    """Room added at each end of the fitted support, as a share of its width."""
    n_actions: int = 2
    """Uniform actions and diffusion-policy samples per state in the penalty (each); the penalty's
    cost grows with it (the policy samples need M extra chains per state)."""
    reuse_next_actions: bool = True
    """One of the ``n_actions`` policy samples per state is the next-state action a' ~ pi(s') that the
    critic's target draws anyway (scored at s, as CQL's reference implementation also does), which
    saves a batch of chains per gradient step (pretraining 1.13x faster; offline scores unchanged
    within seed noise on two datasets: docs/algorithm.md section 8.1)."""
    softmax_temperature: float = 1.0
    """tau of the soft maximum over the candidates' values, in atoms (-> 0: hard maximum)."""
    behaviour_weight: float = 0.1
    """Weight of the actor's behaviour term (atoms of Q per nat of the data actions' log-likelihood
    bound) during pretraining (0: off). Raise it when the logged behaviour is good and leaving it is
    costly (the CSTR demo uses 10), lower it when the data mixes good and poor actions in the same
    states (docs/algorithm.md section 8.2)."""
    behaviour_weight_online: float | None = None
    """Its weight during online fine-tuning; None (default): ``behaviour_weight`` raised to at least
    :data:`ONLINE_BEHAVIOUR_WEIGHT_FLOOR` (a term switched off for pretraining stays off). Online,
    more weight held more on every task measured: on Hopper at 20k + 20k the learners averaged 93
    normalised from 5k env steps on at 1.0 against 55 at pretraining's 0.1, and 0 was worse still; on the CSTR
    twin 10 beat 1 and 1 beat 0 (docs/algorithm.md section 8.7); 0 drops it online."""
    behaviour_advantage_filter: bool = False
    """Clone, in the behaviour term, only the logged actions the critics value at least as highly as
    the policy's own action at that state (CRR's binary filter), averaged over all offline rows, so the
    term weakens where the policy has outgrown the logs, as far as the critics can tell one action from
    another: on near-random HalfCheetah logs it kept 38-53 % of them and fine-tuned like the term
    unfiltered (``regularizers/behaviour.py``; docs/algorithm.md section 8.2)."""
    behaviour_advantage_filter_online: bool | None = None
    """The filter online; None: as pretraining ran (``behaviour_advantage_filter``)."""
    behaviour_paths: int = 1
    """Noising paths averaged per data action in the behaviour term."""
    behaviour_scored_steps: int | None = 4
    """Kernels scored per noising path in the behaviour term, drawn one from each of that many equal
    strata of the diffusion steps and scaled up: an unbiased estimate of the same bound for that share
    of its score-net passes (None: every step). 4 of the 16 steps: pretraining 1.12-1.23x faster, offline
    returns unchanged on the Pendulum sample and the CSTR twin's logs (docs/algorithm.md section 8.2)."""
    alpha_mode: Literal["auto", "fixed"] = "fixed"
    """Temperature during pretraining: "fixed" holds ``alpha``; "auto" tunes it against
    ``target_entropy_per_dim`` (starting from ``alpha``). Online the agent's own setting (auto by
    default) applies again, starting from the pretrained value."""
    alpha: float | None = None
    """Offline alpha. None: under "fixed", ``alpha_per_reward_std`` times the dataset's reward
    standard deviation; under "auto", the agent's ``alpha_init``."""
    alpha_per_reward_std: float = 0.1
    """The fixed offline alpha in units of the dataset's reward standard deviation when ``alpha`` is
    None (alpha is in reward units per nat, so this follows the reward scale)."""
    target_entropy_per_dim: float | None = None
    """Offline target of the temperature's entropy statistic per action dimension, in the units of
    the agent's ``temperature_statistic`` (None: the agent's own target)."""

    actor_q_reduction: Literal["mean", "min"] | None = None
    """Offline combination of the critics for the actor ('mean' or 'min'; None: the agent's own)."""

    def __post_init__(self) -> None:
        for name in ("conservative_weight", "conservative_weight_online", "behaviour_weight", "behaviour_weight_online"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ConfigError(f"field 'offline.{name}': must be >= 0, got {getattr(self, name)}")
        if self.n_actions < 1:
            raise ConfigError(f"field 'offline.n_actions': must be >= 1, got {self.n_actions}")
        if self.behaviour_paths < 1:
            raise ConfigError(f"field 'offline.behaviour_paths': must be >= 1, got {self.behaviour_paths}")
        if self.behaviour_scored_steps is not None and self.behaviour_scored_steps < 1:
            raise ConfigError(f"field 'offline.behaviour_scored_steps': must be >= 1 (or null: every step), got {self.behaviour_scored_steps}")
        if self.softmax_temperature <= 0:
            raise ConfigError(f"field 'offline.softmax_temperature': must be > 0, got {self.softmax_temperature}")
        if self.alpha is not None and self.alpha <= 0:
            raise ConfigError(f"field 'offline.alpha': must be > 0, got {self.alpha}")
        if self.value_support_margin < 0:
            raise ConfigError(f"field 'offline.value_support_margin': must be >= 0, got {self.value_support_margin}")
        if self.return_tail not in TRUNCATION_TAILS:
            raise ConfigError(f"field 'offline.return_tail': must be one of {', '.join(TRUNCATION_TAILS)}, got {self.return_tail!r}")
        if self.value_support not in ("data", "returns", "preset"):
            raise ConfigError(f"field 'offline.value_support': must be 'data', 'returns' or 'preset', got {self.value_support!r}")
        if self.alpha_per_reward_std <= 0:
            raise ConfigError(f"field 'offline.alpha_per_reward_std': must be > 0, got {self.alpha_per_reward_std}")

    # ------------------------------------------------------------------------------------------
    def offline_alpha(self, reward_std: float | None) -> float | None:
        """The alpha pretraining starts with (None: the agent's ``alpha_init``); see ``alpha``."""
        if self.alpha is not None or self.alpha_mode == "auto":
            return self.alpha
        if reward_std is None or not reward_std > 0:
            raise ConfigError(
                "offline.alpha is not set and the dataset's rewards have no spread to derive it from; set offline.alpha"
            )
        return self.alpha_per_reward_std * reward_std

    def agent_config(self, online: DIMEConfig, reward_std: float | None = None) -> DIMEConfig:
        """The agent configuration for pretraining: ``online`` with the offline temperature settings.

        ``reward_std``: the dataset's reward standard deviation (for the default fixed alpha).
        """
        changes: dict[str, Any] = {"alpha_mode": self.alpha_mode}
        alpha = self.offline_alpha(reward_std)
        if alpha is not None:
            changes["alpha_init"] = alpha
        if self.target_entropy_per_dim is not None:
            changes["target_entropy_per_dim"] = self.target_entropy_per_dim
        if self.actor_q_reduction is not None:
            changes["actor_q_reduction"] = self.actor_q_reduction
        return dataclasses.replace(online, **changes)

    @property
    def online_behaviour_weight(self) -> float:
        """The behaviour term's weight online: ``behaviour_weight_online``, else pretraining's raised to
        the floor (0 stays 0)."""
        if self.behaviour_weight_online is not None:
            return self.behaviour_weight_online
        if self.behaviour_weight == 0:
            return 0.0
        return max(self.behaviour_weight, ONLINE_BEHAVIOUR_WEIGHT_FLOOR)

    @property
    def online_calibration(self) -> bool:
        """Whether the penalty is calibrated online: ``calibration_online``, else as offline."""
        return self.calibration if self.calibration_online is None else self.calibration_online

    def critic_regularizer(self, phase: Phase, seed: int = 0) -> ConservativePenalty:
        """The conservative penalty with the ``phase``'s weight and calibration."""
        online = phase == "online"
        return ConservativePenalty(
            self.conservative_weight_online if online else self.conservative_weight,
            n_actions=self.n_actions,
            temperature=self.softmax_temperature,
            lower_bound=self.online_calibration if online else self.calibration,
            seed=seed,
            reuse_next_actions=self.reuse_next_actions,
        )

    def actor_regularizer(self, phase: Phase, seed: int = 0) -> BehaviourLikelihood:
        """The behaviour term with the ``phase``'s weight and filter."""
        online = phase == "online"
        weight = self.online_behaviour_weight if online else self.behaviour_weight
        advantage_filter = self.behaviour_advantage_filter
        if online and self.behaviour_advantage_filter_online is not None:
            advantage_filter = self.behaviour_advantage_filter_online
        return BehaviourLikelihood(
            weight, n_paths=self.behaviour_paths, scored_steps=self.behaviour_scored_steps, advantage_filter=advantage_filter, seed=seed
        )

    def attach(self, agent: RegularizedAgent, phase: Phase, seed: int = 0) -> None:
        """Give ``agent`` both regularisers as ``phase`` uses them (replacing any it had)."""
        agent.critic_regularizer = self.critic_regularizer(phase, seed)
        agent.actor_regularizer = self.actor_regularizer(phase, seed + 1)

    def describe(self, phase: Phase, seed: int = 0) -> dict[str, Any]:
        """What :func:`describe_regularizers` records for an agent given ``attach(agent, phase, seed)``."""
        return {"critic": self.critic_regularizer(phase, seed).to_dict(), "actor": self.actor_regularizer(phase, seed + 1).to_dict()}


# ----------------------------------------------------------------------------------------------
REGULARIZER_TYPES: dict[str, type[ConservativePenalty | BehaviourLikelihood]] = {
    ConservativePenalty.KIND: ConservativePenalty,
    BehaviourLikelihood.KIND: BehaviourLikelihood,
}
"""The regulariser classes a checkpoint can record and rebuild, by their description's ``type``."""


class RegularizedAgent(Protocol):
    """What this module needs of an agent: its two regulariser slots (``DIMEAgent`` has them)."""

    critic_regularizer: CriticRegularizer | None
    actor_regularizer: ActorRegularizer | None


def describe_regularizers(agent: RegularizedAgent) -> dict[str, Any]:
    """A JSON-ready description of the agent's regularisers, for a checkpoint's ``extra``.

    Raises ConfigError for a regulariser of a type this module cannot rebuild (a custom one): a
    checkpoint that silently dropped it would fine-tune a different algorithm.
    """
    return {"critic": _describe(agent.critic_regularizer), "actor": _describe(agent.actor_regularizer)}


def _describe(regularizer: object | None) -> dict[str, Any] | None:
    if regularizer is None:
        return None
    if not isinstance(regularizer, tuple(REGULARIZER_TYPES.values())):
        raise ConfigError(f"cannot record a regulariser of type {type(regularizer).__name__} in a checkpoint")
    return regularizer.to_dict()


def attach_regularizers(agent: RegularizedAgent, description: dict[str, Any] | None, *, file: str | None = None) -> None:
    """Rebuild the regularisers of :func:`describe_regularizers` on ``agent`` (None: leave it as it is).

    ``file`` names the checkpoint in the one-line error raised for a malformed description.
    """
    if description is None:
        return
    try:
        agent.critic_regularizer = _rebuild(description.get("critic"), ConservativePenalty.KIND)  # type: ignore[assignment]
        agent.actor_regularizer = _rebuild(description.get("actor"), BehaviourLikelihood.KIND)  # type: ignore[assignment]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"the regulariser description in meta.json is invalid ({exc!r})", file=file) from None


def _rebuild(spec: dict[str, Any] | None, expected: str) -> ConservativePenalty | BehaviourLikelihood | None:
    if spec is None:
        return None
    kind = spec["type"]
    if kind != expected:
        raise ValueError(f"expected a '{expected}' regulariser, found '{kind}'")
    return REGULARIZER_TYPES[kind].from_dict(spec)


def regularizer_weights(agent: RegularizedAgent, prefix: str) -> dict[str, float]:
    """The current weights (and calibration switch) as metrics, e.g. ``online/conservative_weight``.

    Logged by the trainers on every step so the switch at the boundary shows in the metrics even
    when a weight becomes 0 (the agent then no longer calls the term, so it logs nothing itself).
    """
    critic, actor = agent.critic_regularizer, agent.actor_regularizer
    metrics = {
        f"{prefix}conservative_weight": float(getattr(critic, "weight", 0.0)),
        f"{prefix}behaviour_weight": float(getattr(actor, "weight", 0.0)),
    }
    if isinstance(critic, ConservativePenalty):
        metrics[f"{prefix}calibration"] = float(critic.lower_bound)
    return metrics
