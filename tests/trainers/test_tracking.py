"""Metric sinks, the TensorBoard hint, the progress display and the learning-curve plot."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from dime_offline.tracking import (
    TENSORBOARD_HINT,
    CSVSink,
    ProgressDisplay,
    Tracker,
    boundary_series,
    open_sinks,
    plot_learning_curve,
    best_logged_line,
    plot_offline_to_online,
    read_metrics_csv,
)


def test_csv_sink_round_trips_metrics_logged_at_different_cadences(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    with Tracker([CSVSink(path)]) as tracker:
        tracker.log(10, {"train/critic/loss": 1.5, "train/alpha/value": 0.25})
        tracker.log(20, {"train/critic/loss": 0.1 + 0.2})
        tracker.log(20, {"eval/return_mean": -123.456})
    metrics = read_metrics_csv(path)
    assert set(metrics) == {"train/critic/loss", "train/alpha/value", "eval/return_mean"}
    steps, values = metrics["train/critic/loss"]
    np.testing.assert_array_equal(steps, [10, 20])
    assert values[1] == 0.1 + 0.2  # repr() keeps every bit of a float
    np.testing.assert_array_equal(metrics["eval/return_mean"][0], [20])


@pytest.mark.parametrize("key", ["loss", "debug/loss", "train/", "/loss"])
def test_keys_outside_the_namespaces_are_rejected(tmp_path: Path, key: str) -> None:
    tracker = Tracker([CSVSink(tmp_path / "m.csv")])
    with pytest.raises(ValueError, match="must look like"):
        tracker.log(1, {key: 1.0})
    tracker.close()


def test_missing_tensorboard_gives_a_one_line_hint_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    sinks, notices = open_sinks(tmp_path, tensorboard=True)
    assert [type(s).__name__ for s in sinks] == ["CSVSink"]
    assert notices == [TENSORBOARD_HINT]
    assert "\n" not in TENSORBOARD_HINT and "dime-offline[tensorboard]" in TENSORBOARD_HINT
    for sink in sinks:
        sink.close()
    sinks, notices = open_sinks(tmp_path / "b", tensorboard=False)
    assert notices == [] and len(sinks) == 1
    sinks[0].close()


def test_tensorboard_sink_writes_event_files_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    sinks, notices = open_sinks(tmp_path, tensorboard=True)
    Tracker(sinks).log(1, {"train/x": 1.0})
    for sink in sinks:
        sink.close()
    assert notices == []
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_progress_display_is_off_when_stderr_is_not_a_terminal() -> None:
    # pytest captures stderr, so it is not a terminal here.
    display = ProgressDisplay(100, description="x", enabled=True)
    assert display.enabled is False
    display.update(5, updates_per_second=1.0, eval_return=2.0, alpha=0.1, entropy_bound=-3.0)
    display.close()


def test_learning_curve_is_a_png_and_needs_something_to_plot(tmp_path: Path) -> None:
    csv_path = tmp_path / "m.csv"
    with Tracker([CSVSink(csv_path)]) as tracker:
        tracker.log(5, {"train/critic/loss": 1.0})
    assert plot_learning_curve(csv_path, tmp_path / "none.png", title="t") is None
    assert not (tmp_path / "none.png").exists()
    with Tracker([CSVSink(csv_path)]) as tracker:
        for step in (100, 200, 300):
            tracker.log(step, {"train/episode_return": -step / 10})
            tracker.log(step, {"eval/return_mean": float(step), "eval/return_std": 5.0})
    png = plot_learning_curve(csv_path, tmp_path / "curve.png", title="t")
    assert png == tmp_path / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_the_offline_to_online_figure_draws_the_handover_schedule_past_the_boundary(tmp_path: Path) -> None:
    offline_csv, online_csv = tmp_path / "pre.csv", tmp_path / "ft.csv"
    with Tracker([CSVSink(offline_csv)]) as tracker:
        for step in (50, 100):
            tracker.log(step, {"offline/conservative_weight": 1.0, "offline/behaviour_weight": 10.0, "train/alpha/value": 0.4})
        tracker.log(100, {"eval/return_mean": -500.0})
    with Tracker([CSVSink(online_csv)]) as tracker:
        for step, share in ((10, 0.9), (20, 0.8)):
            tracker.log(step, {"online/conservative_weight": 0.5, "online/behaviour_weight": 0.0, "online/offline_fraction": share})
        tracker.log(20, {"eval/return_mean": -300.0})
    panels = boundary_series(read_metrics_csv(offline_csv), read_metrics_csv(online_csv), boundary=100)
    weights = {(label, stage): (list(steps), list(values)) for label, stage, steps, values in panels["regulariser weights"]}
    assert weights[("conservative penalty", "offline")] == ([50, 100], [1.0, 1.0])
    assert weights[("conservative penalty", "online")] == ([110, 120], [0.5, 0.5])
    assert weights[("behaviour term", "online")] == ([110, 120], [0.0, 0.0])
    ((label, stage, steps, share),) = panels["logged rows' share of a batch"]
    assert (label, stage, list(steps), list(share)) == ("offline share", "online", [110, 120], [0.9, 0.8])
    assert [stage for _, stage, _, _ in panels["temperature alpha"]] == ["offline"]  # nothing logged online
    png = plot_offline_to_online(offline_csv, online_csv, tmp_path / "o2o.png", title="t", data_return=-600.0)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert best_logged_line(read_metrics_csv(online_csv)) is None  # no comparison at the boundary: no line
    compared_csv = tmp_path / "ft-compared.csv"
    with Tracker([CSVSink(compared_csv)]) as tracker:
        tracker.log(0, {"online/logs_best_return": -575.0, "online/boundary_above_logs": 1.0})
        tracker.log(20, {"eval/return_mean": -300.0})
    value, label = best_logged_line(read_metrics_csv(compared_csv))
    assert value == -575.0 and "regularisers off online" in label
    assert plot_offline_to_online(offline_csv, compared_csv, tmp_path / "o2o-logs.png", title="t") is not None
