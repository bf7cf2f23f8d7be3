"""The policy a run deploys: a champion that the learner replaces only by doing better on episodes of its own.

Fine-tuning finds large gains and can lose them again (docs/benchmarks.md, "The 20k online steps":
Hopper runs reached 91-100 normalised and ended at 44). A plant does not run the learner as it is
at every moment: it runs a *champion* and lets the learner (the *challenger*) take over only once
it has done better on episodes of its own (by a margin of one standard error by default), the champion/challenger practice of deployed
controllers and models, and a simple form of safe policy improvement (Thomas et al., "High
Confidence Policy Improvement", ICML 2015, test a candidate on fresh data before it replaces the
deployed policy).

At each evaluation of a run with the champion on (:class:`~dime_offline.trainers.scaffold.RunScaffold`):

1. the learner and the champion act on the same *selection* episodes, fresh at every evaluation
   (reset seeds :func:`~dime_offline.trainers.scaffold.selection_seed` ``+ i``, never the training's or
   the reported evaluation's); the learner in the deterministic mode ``select_acting`` chose when that
   is on, else in its own;
2. the learner becomes champion when its mean return there is at least the champion's plus
   ``champion_margin`` standard errors of the paired difference (:func:`challenger_wins`); the champion
   is then an acting copy of the learner (:func:`acting_copy`), saved in the run's ``champion/`` once the
   evaluation is done;
3. the reported evaluation (the run's evaluation episodes) measures the champion: that is what the run
   deploys, and what ``best/`` and the run directory's policy (``load_policy``, ``export``, ``evaluate``)
   hold.

Training is untouched: the learner keeps learning from its own data whichever policy is champion. The
champion is scored afresh at every evaluation, on start states it was not chosen on: a champion that
only looked good on the episodes of its own contest loses its place at the next one, instead of holding
an inflated record that later learners must beat (what a fixed set of selection episodes did on the
CSTR twin; docs/benchmarks.md, "A champion for the 20k runs").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dime_offline.agent.dime import DIMEAgent
from dime_offline.evaluation.metrics import EpisodeStats, standard_error

CHAMPION_KEY = "champion"
"""Key of the champion's facts (:meth:`Champion.facts`) in its checkpoints' ``meta.json`` ``extra``, and of
its facts and weights in a resume state."""


@dataclass
class Champion:
    """The deployed policy of a run and what is known of it.

    Attributes:
        agent: an acting copy of the learner at ``step`` (:func:`acting_copy`).
        step: the run's step the copy was taken at.
        selection_returns: its returns on the selection episodes of its latest contest, one per episode
            (None before its first).
        reported: its latest deterministic evaluation on the run's evaluation episodes: the same policy
            on the same episodes acts the same, so a run does not play them again while it stays champion.
    """

    agent: DIMEAgent
    step: int
    selection_returns: tuple[float, ...] | None = None
    reported: EpisodeStats | None = None

    def facts(self) -> dict[str, object]:
        """What checkpoints record of it (JSON; its weights travel separately), read by :meth:`from_facts`."""
        returns = None if self.selection_returns is None else list(self.selection_returns)
        cfg = self.agent.cfg
        return {"step": self.step, "deterministic_act": cfg.deterministic_act, "selection_returns": returns,
                "value_support": {"n_atoms": cfg.n_atoms, "v_max": cfg.v_max}}

    @classmethod
    def from_facts(cls, agent: DIMEAgent, facts: dict[str, Any]) -> Champion:
        """The champion recorded with ``facts`` (:meth:`facts`), acting as ``agent`` (its weights loaded)."""
        agent.set_deterministic_act(facts["deterministic_act"])
        returns = facts["selection_returns"]
        return cls(agent, int(facts["step"]), None if returns is None else tuple(float(r) for r in returns))


def acting_copy(agent: DIMEAgent, state: dict[str, Any] | None = None, value_support: dict[str, Any] | None = None) -> DIMEAgent:
    """A copy of ``agent`` that acts as it does now and never changes with it: same configuration,
    weights, normaliser and acting streams, acting with its averaged weights in every mode (as a
    loaded checkpoint does). It has no regularisers; it is not meant to train. ``state`` (and the
    ``value_support`` it was saved with, which online growth may since have changed in ``agent``):
    a saved agent of the same run instead of ``agent``'s present one."""
    cfg = agent.cfg if value_support is None else dataclasses.replace(agent.cfg, **value_support)
    copy = DIMEAgent(agent.obs_dim, agent.act_dim, cfg, device=agent.device)
    copy.load_state_dict(agent.state_dict() if state is None else state)
    copy.adopt_acting_average()
    return copy


def challenger_wins(challenger: Sequence[float], champion: Sequence[float], margin: float) -> bool:
    """Whether the challenger's returns beat the champion's on the same episodes (paired, one per
    episode): mean difference >= ``margin`` standard errors of that mean (0: at least as good)."""
    if len(challenger) != len(champion):
        raise ValueError(f"paired returns needed: {len(challenger)} against {len(champion)} episodes")
    difference = np.subtract(challenger, champion, dtype=np.float64)
    return float(difference.mean()) >= margin * standard_error(difference)
