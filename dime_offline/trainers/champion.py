"""The policy a run deploys: a champion that the learner replaces only by doing at least as well.

Fine-tuning finds large gains and can lose them again (docs/benchmarks.md, "The 20k online steps":
Hopper runs reached 91-100 normalised and ended at 44). A plant does not run the learner as it is
at every moment: it runs a *champion* and lets the learner (the *challenger*) take over only once
it has done at least as well on episodes of its own, the champion/challenger practice of deployed
controllers and models, and a simple form of safe policy improvement (Thomas et al., "High
Confidence Policy Improvement", ICML 2015, test a candidate on fresh data before it replaces the
deployed policy).

At each evaluation of a run with the champion on (:class:`~dime_offline.trainers.scaffold.RunScaffold`):

1. the learner acts on the *selection* episodes (reset seeds ``seed + SELECTION_SEED_OFFSET + i``,
   never the training's or the reported evaluation's), in the deterministic mode ``select_acting``
   chose when that is on, else in its own;
2. the champion's returns on the same episodes are known: they were measured when it became
   champion (the same reset seeds, and its actions do not change), so the comparison is paired and
   costs one evaluation of the learner;
3. the learner becomes champion when its mean return there is at least the champion's plus
   ``champion_margin`` paired standard errors (:func:`challenger_wins`); the champion is then an
   acting copy of the learner (:func:`acting_copy`), saved in the run's ``champion/``;
4. the reported evaluation (the run's evaluation episodes) measures the champion: that is what the
   run deploys, and what ``best/`` and the run directory's policy (``load_policy``, ``export``,
   ``evaluate``) hold.

Training is untouched: the learner keeps learning from its own data whichever policy is champion.
The selection's repeated comparisons on the same episodes favour the champion (its recorded score is
the best of several on those episodes), which makes it slow to replace: the side a plant wants.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dime_offline.agent.dime import DIMEAgent

CHAMPION_KEY = "champion"
"""Key of the champion's facts in its checkpoint's ``meta.json`` ``extra`` (see :meth:`Champion.facts`)."""


@dataclass
class Champion:
    """The deployed policy of a run and what is known of it.

    Attributes:
        agent: an acting copy of the learner at ``step`` (:func:`acting_copy`).
        step: the run's step the copy was taken at.
        selection_returns: its returns on the selection episodes, one per episode; None until measured.
    """

    agent: DIMEAgent
    step: int
    selection_returns: tuple[float, ...] | None = None

    def facts(self) -> dict[str, object]:
        """What the champion's checkpoint records of it (JSON), read back by :meth:`from_facts`."""
        return {"step": self.step, "selection_returns": None if self.selection_returns is None else list(self.selection_returns)}

    @classmethod
    def from_facts(cls, agent: DIMEAgent, facts: dict[str, object]) -> Champion:
        """The champion saved with ``facts`` (:meth:`facts`), acting as ``agent``."""
        returns = facts.get("selection_returns")
        return cls(agent, int(facts["step"]), None if returns is None else tuple(float(r) for r in returns))  # type: ignore[arg-type, union-attr]


def acting_copy(agent: DIMEAgent) -> DIMEAgent:
    """A copy of ``agent`` that acts as it does now and never changes with it: same configuration,
    weights, normaliser and acting streams, acting with its averaged weights in every mode (as a
    loaded checkpoint does). It has no regularisers; it is not meant to train."""
    copy = DIMEAgent(agent.obs_dim, agent.act_dim, agent.cfg, device=agent.device)
    copy.load_state_dict(agent.state_dict())
    copy.adopt_acting_average()
    return copy


def challenger_wins(challenger: Sequence[float], champion: Sequence[float], margin: float) -> bool:
    """Whether the challenger's returns beat the champion's on the same episodes (paired, one per
    episode): mean difference >= ``margin`` standard errors of that mean (0: at least as good)."""
    if len(challenger) != len(champion):
        raise ValueError(f"paired returns needed: {len(challenger)} against {len(champion)} episodes")
    difference = np.subtract(challenger, champion, dtype=np.float64)
    standard_error = float(difference.std(ddof=1)) / math.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return float(difference.mean()) >= margin * standard_error
