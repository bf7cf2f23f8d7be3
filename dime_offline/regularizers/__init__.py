"""Regularisers for offline pretraining and their offline -> online schedule.

* :class:`ConservativePenalty`: CQL-style conservative critic penalty on the C51 critics' expected
  values, with Cal-QL's Monte-Carlo calibration as a switch (``lower_bound``).
* :class:`BehaviourLikelihood`: the actor's behaviour term, a lower bound on log pi(a_data | s)
  through DIME's noising chain.
* :class:`OfflineConfig`: every weight offline and online; :func:`describe_regularizers` /
  :func:`attach_regularizers` carry them through checkpoints.
"""

from dime_offline.regularizers.behaviour import BehaviourLikelihood, behaviour_penalty
from dime_offline.regularizers.conservative import (
    CandidateValues,
    ConservativePenalty,
    conservative_gap,
    soft_return_floor,
)
from dime_offline.regularizers.schedule import (
    REGULARIZERS_KEY,
    OfflineConfig,
    Phase,
    attach_regularizers,
    describe_regularizers,
    regularizer_weights,
)

__all__ = [
    "REGULARIZERS_KEY",
    "BehaviourLikelihood",
    "CandidateValues",
    "ConservativePenalty",
    "OfflineConfig",
    "Phase",
    "attach_regularizers",
    "behaviour_penalty",
    "conservative_gap",
    "describe_regularizers",
    "regularizer_weights",
    "soft_return_floor",
]
