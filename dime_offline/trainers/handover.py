"""The offline -> online handover: one schedule for everything that changes when fine-tuning starts.

Fine-tuning a pretrained agent changes three things at once, and each can undo what pretraining
learned if it changes abruptly (docs/algorithm.md section 8.7):

* **what a batch is made of**: offline rows only at the boundary, then a growing online share up to
  ``1 - offline_fraction`` (the reuse cap keeps the first online transitions from being replayed
  hundreds of times each), optionally annealed;
* **the regularisers' weights**: pretraining's conservative penalty and behaviour term give way to
  their online weights, at once or along a linear ramp of ``ramp_steps`` env steps; the penalty's
  calibration and its number of candidate actions may change for the online stage; with
  ``surpassed_logs="drop"`` both go off when the pretrained policy already beats every logged episode
  (:class:`LogsComparison`, one evaluation before the first online step);
* **the temperature**: by default alpha auto-tunes online from where pretraining left it; it may
  start elsewhere (``alpha_start``) or be held (``alpha_mode="fixed"``). Batch renorm keeps its
  statistics (a fixed choice, listed here so the whole handover reads in one place).

:class:`HandoverConfig` holds the knobs (``finetune``'s ``handover`` section); :class:`Handover`
applies them to an agent step by step. The weights at each step are a function of the env step, so a
resumed run continues the ramp exactly; the start and end weights travel in the fine-tuning checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dime_offline.data.returns import LoggedEpisodes
from dime_offline.errors import ConfigError
from dime_offline.evaluation.metrics import EpisodeStats, standard_error
from dime_offline.regularizers.schedule import RegularizedAgent

WEIGHTS_KEY = "handover_weights"
"""Key, in a fine-tuning checkpoint's ``meta.json`` ``extra``, of the ramp's start and end weights
(:meth:`Handover.to_dict`): a run resumed mid-ramp continues it, although its regularisers were
saved with the weights of the step it stopped at."""


@dataclass(frozen=True)
class HandoverConfig:
    """How fine-tuning takes over from pretraining (``--set handover.<field>=...``)."""

    offline_fraction: float = 0.5
    """Share of offline rows in each batch when offline data is given (symmetric sampling by default)."""
    offline_fraction_final: float | None = None
    """If set, the offline share moves linearly from ``offline_fraction`` to this value."""
    offline_anneal_steps: int | None = None
    """Env steps over which the offline share anneals (None: the whole run)."""
    online_reuse_limit: float | None = 1.0
    """When fine-tuning a pretrained agent, caps the online share of a batch so that an online row is
    drawn at most this many times as often as an offline row: online share <= r n_on / (r n_on + n_off),
    so the first few online transitions are not replayed hundreds of times each. 1 (default): every
    stored row equally likely until the online rows reach ``1 - offline_fraction`` of the store; None:
    no cap, the share is ``1 - offline_fraction`` from the first update (RLPD-style; it undid the
    pretrained policy within 100 env steps on Pendulum: docs/benchmarks.md, "The first online
    batches"). On a large dataset the online share then stays small for long: raise r to learn faster
    online. From scratch there is nothing learned to protect and the split applies from the first update."""
    conservative_weight: float | None = None
    """Online weight of the conservative critic penalty (None: the one the checkpoint records, i.e.
    pretraining's ``offline.conservative_weight_online``)."""
    behaviour_weight: float | None = None
    """Online weight of the actor's behaviour term (None: the checkpoint's, pretraining's
    ``offline.behaviour_weight_online``, by default its pretraining weight raised to at least 1)."""
    behaviour_advantage_filter: bool | None = None
    """Online, clone only the logged actions the critics value at least as highly as the policy's own
    (CRR's binary filter; ``regularizers/behaviour.py``); None: the checkpoint's, i.e. pretraining's
    ``offline.behaviour_advantage_filter_online`` (off at the library's defaults)."""
    conservative_calibration: bool | None = None
    """Cal-QL calibration of the conservative penalty online (policy candidates' values raised to at
    least the Monte-Carlo return-to-go, online episodes' included once they end); None: the
    checkpoint's, i.e. pretraining's ``offline.calibration_online``, by default as pretraining ran
    (on at the library's defaults, as in Cal-QL)."""
    conservative_candidates: int | None = None
    """M online: uniform and policy candidate actions per state in the conservative penalty (>= 1);
    None: the checkpoint's, i.e. pretraining's ``offline.n_actions`` (2). 1 with the default reuse
    of the next-state actions as policy candidates runs no chain for the penalty and halves its
    candidate rows, the dearest part of a fine-tuning update."""
    ramp_steps: int = 0
    """Env steps over which both weights move linearly from their pretraining values to their online
    values (0: they switch at the first online step). Applies to a pretrained agent only."""
    alpha_mode: Literal["auto", "fixed"] | None = None
    """The temperature online: "auto" tunes alpha against the agent's entropy target, "fixed" holds it
    where it starts; None: the checkpoint's agent setting ("auto" unless pretraining set otherwise).
    Applies to a pretrained agent only (from scratch: ``agent.alpha_mode``)."""
    alpha_start: float | None = None
    """Alpha at the first online step (> 0); None: where pretraining left it (its offline temperature,
    by default 0.1 x the dataset's reward std). Applies to a pretrained agent only (from scratch:
    ``agent.alpha_init``)."""
    warmup_steps: int = 0
    """Env steps at the start of fine-tuning in which the pretrained policy acts and nothing updates, so
    that the first online batches draw on that many of its own transitions instead of replaying the
    first few (WSRL, Zhou et al., ICLR 2025, "Efficient Online Reinforcement Learning Fine-Tuning Need Not
    Retain Offline Data", warm-starts this way and then fine-tunes without the offline data: no
    ``data``). 0: updates from the first step that has a batch. Applies to a pretrained
    agent only (from scratch: ``agent.learning_starts`` uniform-random steps)."""
    surpassed_logs: Literal["drop", "keep"] = "drop"
    """What the regularisers do online when the pretrained policy already scores above every complete
    logged episode: its mean return on the run's evaluation episodes, evaluated once at the boundary,
    less one standard error, above the best return a logged episode earned in as many steps as the
    env's time limit allows (episodes cut shorter than that, unless terminated, do not count;
    :class:`LogsComparison`). "drop": the conservative penalty and the behaviour
    term go off online, since the logs then hold nothing better than the policy to keep it near; "keep":
    they keep their online weights. An explicit ``conservative_weight`` or ``behaviour_weight`` wins.
    Applies to a pretrained agent with offline data, when a run starts (a resumed run keeps its
    weights); it costs one evaluation (``eval_episodes`` episodes) before the first online step, and
    none when nothing is left to drop (both weights 0 or set explicitly). "drop" (default) ended higher in every run where it fired and changes nothing where the
    logs hold a better episode: it fired in the README main job 3/3 (finals 29-33 higher), on the
    Pendulum sample at 1500 + 1500 in 2 of 3 seeds (9-13 higher), on a near-random HalfCheetah file in
    2 of 3 (+205 and +1831 at 20k), and kept the terms on Hopper and the CSTR twin (docs/algorithm.md
    section 8.7). "keep" where the online learner must stay near the logged
    behaviour whatever it scores (a plant with states to keep away from)."""
    grow_value_support: bool | None = None
    """Extend the critics' support upwards when their values, or an online episode's returns, reach
    its top (:class:`SupportGrowth`):
    the support pretraining fitted to the data caps values at what the logged returns reached, and a
    policy that earns more online would see every further gain clipped at ``v_max`` (HalfCheetah from
    a weak file: 93 % of the critics' mass on the top atom, values at half the true returns;
    docs/benchmarks.md "The value support's ceiling online"). None: grow when fine-tuning a
    pretrained agent, keep the support fixed from scratch, where it is the preset's (the authors'
    ±1600 for gym tasks) and the top atom fills only in the first few hundred updates, while the
    temperature is near 1 and the critics untrained (docs/algorithm.md §8.1). True or False: always or
    never."""

    def __post_init__(self) -> None:
        for name in ("offline_fraction", "offline_fraction_final"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"field 'handover.{name}': must lie in [0, 1], got {value}")
        if self.online_reuse_limit is not None and not self.online_reuse_limit > 0:
            raise ConfigError(f"field 'handover.online_reuse_limit': must be > 0, got {self.online_reuse_limit}")
        if self.offline_anneal_steps is not None and self.offline_anneal_steps < 1:
            raise ConfigError(f"field 'handover.offline_anneal_steps': must be >= 1, got {self.offline_anneal_steps}")
        for name in ("conservative_weight", "behaviour_weight"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise ConfigError(f"field 'handover.{name}': must be >= 0, got {value}")
        if self.warmup_steps < 0:
            raise ConfigError(f"field 'handover.warmup_steps': must be >= 0, got {self.warmup_steps}")
        if self.ramp_steps < 0:
            raise ConfigError(f"field 'handover.ramp_steps': must be >= 0, got {self.ramp_steps}")
        if self.conservative_candidates is not None and self.conservative_candidates < 1:
            raise ConfigError(f"field 'handover.conservative_candidates': must be >= 1, got {self.conservative_candidates}")
        if self.alpha_mode not in (None, "auto", "fixed"):
            raise ConfigError(f"field 'handover.alpha_mode': must be auto or fixed, got {self.alpha_mode!r}")
        if self.surpassed_logs not in ("drop", "keep"):
            raise ConfigError(f"field 'handover.surpassed_logs': must be drop or keep, got {self.surpassed_logs!r}")
        if self.alpha_start is not None and not self.alpha_start > 0:
            raise ConfigError(f"field 'handover.alpha_start': must be > 0, got {self.alpha_start}")

    def offline_fraction_at(self, step: int, run_steps: int) -> float:
        """Offline share of the batch at env step ``step`` (1-based) of a run of ``run_steps``, linear
        annealing included."""
        if self.offline_fraction_final is None:
            return self.offline_fraction
        horizon = self.offline_anneal_steps or run_steps
        progress = min(1.0, max(0, step - 1) / max(horizon - 1, 1))
        return self.offline_fraction + progress * (self.offline_fraction_final - self.offline_fraction)

    def batch_offline_fraction(self, step: int, run_steps: int, online_rows: int, offline_rows: int) -> float:
        """Offline share of a pretrained agent's batch at env step ``step`` with the replay store's
        current sizes: :meth:`offline_fraction_at`, raised where ``online_reuse_limit`` caps the online share."""
        fraction = self.offline_fraction_at(step, run_steps)
        if self.online_reuse_limit is None or offline_rows == 0:
            return fraction
        weighted_online = self.online_reuse_limit * online_rows
        return max(fraction, offline_rows / (weighted_online + offline_rows))


TOP_ATOM_MASS_LIMIT = 0.1
"""Support growth's trigger: the critics' mean mass on the top atom at the batch's next states and the
current policy's actions there (over the online rows and the critics, averaged over about the last
``1 / (1 - TOP_ATOM_MASS_DECAY)`` env steps). A critic whose values stay
inside the support keeps well under 1 % there (a fresh pretraining checkpoint on its own policy's
states: 0.4 %); clipped values pile up on it (93 % above)."""
TOP_ATOM_MASS_DECAY = 0.99
RETURN_HEADROOM = 1.0 / 6.0
"""Support growth's second trigger: an online episode whose highest discounted return-to-go lies in the
support's top sixth, the share of the width that pretraining's fit (``offline.value_support_margin``
0.25 on each side of the logged returns' range) leaves above the best logged return. The mass trigger
alone reacts late: it averages over a batch's online rows, mostly older and worse than the current
policy, and let fine-tuned HalfCheetah policies earn returns above ``v_max`` for thousands of steps
(17-37 % of the critics' mass on the top atom on the policy's own states at 10k env steps;
docs/benchmarks.md "The support's top under the policy's own returns")."""
SUPPORT_GROWTH = 0.5
"""Each extension appends this share of the support's atom intervals: v_max rises by half the width."""
MAX_GROWN_ATOMS = 1001
"""No extension past this many atoms (ten times the presets' 101): a critic whose values keep running
away is diverging, and a wider head would only hide it."""


@dataclass
class SupportGrowth:
    """Online, extends the critics' support above ``v_max`` when their values reach it or an online
    episode's returns come near it (``HandoverConfig.grow_value_support``;
    :meth:`DIMEAgent.extend_value_support`).

    ``top_atom_mass`` is the running average of the update's ``critic/top_atom_mass``; it is saved in
    the run's checkpoints so that a resumed run grows where the uninterrupted one would.
    """

    top_atom_mass: float = 0.0

    def observe(self, agent: Any, top_atom_mass: float) -> tuple[float, float] | None:
        """Fold in one env step's top-atom mass; extend ``agent``'s support once the average passes
        :data:`TOP_ATOM_MASS_LIMIT`. Returns (old v_max, new v_max) when it did."""
        self.top_atom_mass += (1.0 - TOP_ATOM_MASS_DECAY) * (top_atom_mass - self.top_atom_mass)
        if self.top_atom_mass <= TOP_ATOM_MASS_LIMIT or agent.cfg.n_atoms >= MAX_GROWN_ATOMS:
            return None
        old_v_max = agent.cfg.v_max
        _extend_once(agent)
        self.top_atom_mass = 0.0  # the new top atom starts empty
        return old_v_max, agent.cfg.v_max

    def observe_return(self, agent: Any, top_return: float) -> tuple[float, float] | None:
        """After an online episode ends: extend ``agent``'s support, as often as it takes (up to
        :data:`MAX_GROWN_ATOMS`), until the episode's highest discounted return-to-go ``top_return``
        lies below the top :data:`RETURN_HEADROOM` of the support. Returns (old v_max, new v_max) when
        it grew."""
        old_v_max = agent.cfg.v_max
        while agent.cfg.n_atoms < MAX_GROWN_ATOMS:
            cfg = agent.cfg
            if not top_return > cfg.v_max - RETURN_HEADROOM * (cfg.v_max - cfg.v_min):  # NaN: no episode yet
                break
            _extend_once(agent)
        if agent.cfg.v_max == old_v_max:
            return None
        self.top_atom_mass = 0.0
        return old_v_max, agent.cfg.v_max


def _extend_once(agent: Any) -> None:
    """One extension: :data:`SUPPORT_GROWTH` of the support's intervals more atoms, at most up to
    :data:`MAX_GROWN_ATOMS`."""
    extra = math.ceil(SUPPORT_GROWTH * (agent.cfg.n_atoms - 1))
    agent.extend_value_support(min(extra, MAX_GROWN_ATOMS - agent.cfg.n_atoms))


LOGS_COMPARISON_KEY = "boundary_vs_logs"
"""Key, in a fine-tuning checkpoint's ``meta.json`` ``extra``, of the boundary's :class:`LogsComparison`."""


@dataclass(frozen=True)
class LogsComparison:
    """The pretrained policy at the boundary against the logged episodes (``surpassed_logs``)."""

    boundary_return: float
    """Mean return of the boundary policy's evaluation episodes."""
    boundary_error: float
    """Standard error of that mean (0 for one episode)."""
    logs_best: float | None
    """Best return a logged episode earned over as many steps as an evaluation episode may run (None:
    no logged episode ran that long or terminated)."""

    @classmethod
    def of(cls, stats: EpisodeStats, logged: LoggedEpisodes, reward: np.ndarray, horizon: int) -> LogsComparison:
        """Compare an evaluation whose episodes run at most ``horizon`` steps (the env's time limit) with
        the logged episodes' returns over as many steps (:meth:`LoggedEpisodes.best_return`; ``reward``:
        the logged rows' rewards)."""
        return cls(stats.return_mean, standard_error(stats.returns), logged.best_return(reward, horizon))

    @property
    def surpassed(self) -> bool:
        """Whether the boundary policy scores above every comparable logged episode, beyond its noise."""
        return self.logs_best is not None and self.boundary_return - self.boundary_error > self.logs_best

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "surpassed": self.surpassed}

    def to_metrics(self) -> dict[str, float]:
        """The comparison as ``online/boundary_*`` metrics (logged at step 0 of the run)."""
        metrics = {
            "online/boundary_return": self.boundary_return, "online/boundary_return_error": self.boundary_error,
            "online/boundary_above_logs": float(self.surpassed),
        }
        if self.logs_best is not None:
            metrics["online/logs_best_return"] = self.logs_best
        return metrics


@dataclass(frozen=True)
class RegularizerWeights:
    """The two regularisers' weights (None: that regulariser is absent)."""

    conservative: float | None
    behaviour: float | None

    def to_dict(self) -> dict[str, float | None]:
        return {"conservative": self.conservative, "behaviour": self.behaviour}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegularizerWeights:
        return cls(data.get("conservative"), data.get("behaviour"))

    @classmethod
    def of(cls, agent: RegularizedAgent) -> RegularizerWeights:
        """The weights ``agent``'s regularisers hold now."""
        critic, actor = agent.critic_regularizer, agent.actor_regularizer
        return cls(None if critic is None else float(critic.weight), None if actor is None else float(actor.weight))  # type: ignore[attr-defined]


class Handover:
    """Sets a fine-tuned agent's regulariser weights for each env step (see the module docstring).

    Args:
        cfg: the schedule.
        start: the weights the ramp starts from (pretraining's); None, or ``cfg.ramp_steps == 0``: no ramp.
        end: the online weights (the checkpoint's, with ``cfg``'s overrides applied by the caller).
    """

    def __init__(self, cfg: HandoverConfig, start: RegularizerWeights | None, end: RegularizerWeights) -> None:
        self.cfg = cfg
        self.start = start if cfg.ramp_steps > 0 else None
        self.end = end

    def weights_at(self, step: int) -> RegularizerWeights:
        """The weights at env step ``step`` (1-based): ``start`` at step 1, ``end`` from step
        ``ramp_steps + 1`` on, linear in between."""
        if self.start is None:
            return self.end
        progress = min(1.0, max(0, step - 1) / self.cfg.ramp_steps)

        def blend(first: float | None, last: float | None) -> float | None:
            if first is None or last is None:
                return last
            return first + progress * (last - first)

        return RegularizerWeights(blend(self.start.conservative, self.end.conservative), blend(self.start.behaviour, self.end.behaviour))

    def to_dict(self) -> dict[str, Any]:
        """What a checkpoint records under :data:`WEIGHTS_KEY`."""
        return {"start": None if self.start is None else self.start.to_dict(), "end": self.end.to_dict()}

    @classmethod
    def from_dict(cls, cfg: HandoverConfig, data: dict[str, Any]) -> Handover:
        """The schedule a checkpoint recorded with :meth:`to_dict`, under the run's ``cfg``."""
        start = data.get("start")
        return cls(cfg, None if start is None else RegularizerWeights.from_dict(start), RegularizerWeights.from_dict(data["end"]))

    def without_regularizers(self) -> Handover:
        """The schedule with both online weights 0, except one the run's ``cfg`` sets explicitly
        (``surpassed_logs="drop"``); a ramp then runs from pretraining's weights down to 0."""
        end = RegularizerWeights(
            self.end.conservative if self.cfg.conservative_weight is not None or self.end.conservative is None else 0.0,
            self.end.behaviour if self.cfg.behaviour_weight is not None or self.end.behaviour is None else 0.0,
        )
        return Handover(self.cfg, self.start, end)

    def apply(self, agent: RegularizedAgent, step: int) -> None:
        """Give ``agent``'s regularisers their weights for env step ``step``, the penalty its online
        calibration and candidate count and the behaviour term its filter where the handover sets them."""
        penalty = agent.critic_regularizer
        if penalty is not None and self.cfg.conservative_calibration is not None:
            penalty.lower_bound = self.cfg.conservative_calibration  # type: ignore[attr-defined]
        if penalty is not None and self.cfg.conservative_candidates is not None:
            penalty.n_actions = self.cfg.conservative_candidates  # type: ignore[attr-defined]
        weights = self.weights_at(step)
        if penalty is not None and weights.conservative is not None:
            penalty.weight = weights.conservative  # type: ignore[attr-defined]
        behaviour = agent.actor_regularizer
        if behaviour is not None and self.cfg.behaviour_advantage_filter is not None:
            behaviour.advantage_filter = self.cfg.behaviour_advantage_filter  # type: ignore[attr-defined]
        if behaviour is not None and weights.behaviour is not None:
            behaviour.weight = weights.behaviour  # type: ignore[attr-defined]
