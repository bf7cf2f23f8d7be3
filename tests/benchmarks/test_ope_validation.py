"""benchmarks/ope_validation.py: the ranking figures it reports, by the estimates and by the intervals' lower ends."""

from __future__ import annotations

import pytest
from benchmark_scripts import load

validation = load("ope_validation")


def row(truth: float, estimate: float, lo: float | None = None, hi: float | None = None) -> dict[str, float | None]:
    return {"truth": truth, "estimate": estimate, "lo": lo, "hi": hi, "relative_error": abs(estimate - truth) / abs(truth)}


def test_the_lower_ends_mark_down_a_policy_whose_resamples_disagree() -> None:
    # The poor policy (truth -300) is read best, but with a wide interval; the lower ends rank all three right.
    rows = [row(-100.0, -120.0, -130.0, -110.0), row(-200.0, -190.0, -200.0, -180.0), row(-300.0, -90.0, -400.0, -50.0)]
    figures = validation.ranking_figures(rows)
    assert figures["spearman"] == pytest.approx(-0.5)
    assert figures["pairs_apart_ordered"] == "1/3"
    assert figures["spearman_lower_bound"] == pytest.approx(1.0)
    assert figures["pairs_apart_ordered_lower_bound"] == "3/3"
    assert figures["interval_covers_truth"] == 2  # the first interval, [-130, -110], misses its -100
    assert figures["max_relative_error"] == pytest.approx(0.7)


def test_without_intervals_only_the_estimates_are_judged() -> None:
    figures = validation.ranking_figures([row(-1.0, -1.5), row(-2.0, -2.5), row(-4.0, -3.0)])
    assert figures["spearman"] == pytest.approx(1.0) and figures["pairs_apart_ordered"] == "3/3"
    assert "spearman_lower_bound" not in figures and "interval_covers_truth" not in figures
