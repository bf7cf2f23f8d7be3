"""The pieces of benchmarks/o2o.py and benchmarks/make_datasets.py that decide reported figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_scripts import load

from dime_offline.data.replay import ReplayStore
from dime_offline.data.schema import DatasetMetadata, TransitionData

o2o = load("o2o")
recipe = load("make_datasets")


def test_online_scores_take_the_boundary_the_early_minimum_and_the_last_evaluation() -> None:
    refs = (-100.0, 100.0)  # return r -> score 100 * (r + 100) / 200
    curve = [(0, 60.0), (5, 20.0), (10, -20.0), (15, 0.0), (40, 100.0)]
    scores = o2o.online_scores(curve, refs, window=10)
    assert scores == {"boundary": 80.0, "min_first_window": 40.0, "final": 100.0, "mean_online": 62.5}
    # no step-0 evaluation (from-scratch runs): no boundary; raw returns when there are no references
    raw = o2o.online_scores(curve[1:], None, window=12)
    assert raw == {"boundary": None, "min_first_window": -20.0, "final": 100.0, "mean_online": 25.0}


def test_summary_keeps_methods_apart_and_reports_the_dip_ratio(tmp_path: Path) -> None:
    setup = _setup(tmp_path)
    records = [
        {"method": "bc", "seed": s, "return_mean": r, "train_seconds": 1.0} for s, r in ((0, 0.0), (1, 50.0))
    ] + [
        {"method": "dime-finetune", "seed": 0, "curve": [[0, 50.0], [5, 40.0], [20, 90.0]], "wall_seconds": 3.0},
        {"method": "dime-scratch", "seed": 0, "curve": [[5, -100.0], [20, 0.0]], "wall_seconds": 2.0},
    ]
    summary = o2o.summarise(setup, records)
    assert summary["offline"]["bc"]["score"] == (62.5, 12.5, 2)  # scores 50 and 75
    finetuned = summary["online"]["dime-finetune"]
    assert finetuned["boundary"][0] == 75.0 and finetuned["min_first_window"][0] == 70.0 and finetuned["final"][0] == 95.0
    assert finetuned["dip_ratio"][0] == pytest.approx(70.0 / 75.0) and finetuned["seeds_without_dip"] == 1
    assert summary["online"]["dime-scratch"]["boundary"] is None
    assert "| dime-finetune | 75.0 ± 0.0 | 70.0 ± 0.0 | 95.0 ± 0.0 | 82.5 ± 0.0 |" in o2o.format_table(setup, summary)


def test_the_dip_is_judged_on_negative_raw_returns_as_within_ten_percent_below(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without reference scores the returns stay raw and often negative (the CSTR twin): a dip from -140
    to -174 is a fall (its ratio 1.24 is not a pass), one to -150 is within 10 %."""
    setup = _setup(tmp_path)
    monkeypatch.setattr(o2o, "references", lambda setup: None)
    records = [
        {"method": "dime-finetune", "seed": 0, "curve": [[0, -140.0], [5, -174.0], [20, -295.0]], "wall_seconds": 1.0},
        {"method": "dime-finetune", "seed": 1, "curve": [[0, -140.0], [5, -150.0], [20, -130.0]], "wall_seconds": 1.0},
    ]
    assert o2o.summarise(setup, records)["online"]["dime-finetune"]["seeds_without_dip"] == 1


def test_summary_counts_the_seeds_that_kept_their_gains_where_records_hold_their_noise(tmp_path: Path) -> None:
    setup = _setup(tmp_path)  # references (-100, 100): score = (return + 100) / 2; dip window 10 steps
    window = setup.dip_window
    # Scores 45, 75, 70: a fall of 5 within 10 % of 75 plus the noise (2 returns = 1 score point).
    steady = {"method": "dime-finetune", "seed": 0, "wall_seconds": 1.0,
              "curve": [[0, -20.0], [window, -10.0], [2 * window, 50.0], [3 * window, 40.0]], "noise": [2.0] * 4}
    # Scores 45, 75, 50: a fall of 25, beyond 7.5 + 1.
    falls = {**steady, "seed": 1, "curve": [[0, -20.0], [window, -10.0], [2 * window, 50.0], [3 * window, 0.0]]}
    old = {"method": "dime-finetune", "seed": 2, "wall_seconds": 1.0, "curve": [[0, -20.0], [window, -90.0]]}
    summary = o2o.summarise(setup, [steady, falls, old])
    assert summary["online"]["dime-finetune"]["kept"] == (1, 2)  # the record without noise is not judged
    assert "dime-finetune: gains kept (no fall below 0.9 x the best by more than 2 SE) in 1 of 2 seeds" in o2o.format_table(setup, summary)
    # Judged in the table's units: in returns the same fall (10 below 50) exceeds 10 % of 50 + 2 = 7,
    # so without references it is lost; with noise 20 it is within 5 + 20.
    assert o2o.gains_kept(steady, (-100.0, 100.0), window) and o2o.gains_kept(steady, None, window) is False
    assert o2o.gains_kept({**steady, "noise": [20.0] * 4}, None, window)


def test_a_finetuning_variant_shares_every_result_but_the_finetuned_runs(tmp_path: Path) -> None:
    from dataclasses import asdict, replace

    setup = _setup(tmp_path)
    variant = replace(setup, finetune=("handover.conservative_weight=0",))
    stored_default = {**asdict(setup), "finetune": []}
    stored_before_the_field = {k: v for k, v in stored_default.items() if k != "finetune"}
    for method in ("dime-offline", "bc", "dime-scratch", "dime-rlpd"):  # the variant reuses them
        assert o2o._same_budgets(stored_default, variant, method)
    assert not o2o._same_budgets(stored_default, variant, "dime-finetune")
    assert not o2o._same_budgets(stored_before_the_field, variant, "dime-finetune")
    assert o2o._same_budgets(stored_before_the_field, setup, "dime-finetune")  # older records ran the defaults
    stored_variant = {**asdict(variant), "finetune": ["handover.conservative_weight=0"]}  # as JSON keeps it
    assert o2o._same_budgets(stored_variant, variant, "dime-finetune")
    assert not o2o._same_budgets(stored_variant, setup, "dime-finetune")


def test_behaviour_cloning_fits_a_state_dependent_expert(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    obs = (rng.normal(size=(1000, 3)) * 5 + 2).astype(np.float32)  # far from standardised, on purpose
    expert = np.tanh((obs[:, :1] - obs[:, 1:2] - 2.0) / 5).astype(np.float32)
    store = ReplayStore.from_transitions(_transitions(obs, expert), online_capacity=0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 256-wide MLP: one thread is faster on a shared 2-core machine
    try:
        policy, loss = o2o.train_bc(store, steps=300, batch_size=64, seed=0)
    finally:
        torch.set_num_threads(threads)
    error = np.abs(policy.act(obs[:200]) - expert[:200]).mean()
    spread = np.abs(expert[:200] - expert.mean()).mean()
    assert loss < 0.01 and error < 0.15 * spread


def test_recipe_target_and_dataset_statistics() -> None:
    assert recipe.target_return((-280.178953, 12135.0), 1 / 3) == pytest.approx(3858.2, abs=0.1)
    assert recipe.target_return((-20.272305, 3234.3), 1 / 3) == pytest.approx(1064.6, abs=0.1)
    # three episodes: ran to a time limit of 4 (return 4), terminated (return 2), cut by the budget (return 9)
    rewards = np.array([1, 1, 1, 1, 1, 1, 9], np.float32)
    episode = np.array([0, 0, 0, 0, 1, 1, 2])
    data = _transitions(np.zeros((7, 2), np.float32), np.zeros((7, 1), np.float32), rewards, episode, terminal_rows=[5])
    stats = recipe.dataset_stats(data, (0.0, 10.0), time_limit=4)
    assert stats["episodes"] == 3 and stats["complete_episodes"] == 2 and stats["terminated_episodes"] == 1
    assert stats["return_mean"] == 3.0 and stats["normalized_score_mean"] == 30.0


def _setup(tmp_path: Path) -> object:
    path = tmp_path / "d.parquet"
    from dime_offline.data.parquet import write_parquet

    data = _transitions(np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32))
    data.metadata.ref_min_score, data.metadata.ref_max_score = -100.0, 100.0
    write_parquet(data, path)
    return o2o.Setup(
        data=str(path), env_id="Pendulum-v1", offline_steps=10, online_steps=20, batch_size=4, eval_every=5,
        eval_episodes=1, final_episodes=1, dip_window=10, learning_starts=2, preset="cpu", agent={}, out=str(tmp_path),
    )


def _transitions(
    obs: np.ndarray,
    action: np.ndarray,
    reward: np.ndarray | None = None,
    episode: np.ndarray | None = None,
    terminal_rows: list[int] | None = None,
) -> TransitionData:
    n = len(obs)
    episode = np.zeros(n, np.int64) if episode is None else episode.astype(np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(episode)) + 1])
    step = (np.arange(n) - starts[np.searchsorted(starts, np.arange(n), side="right") - 1]).astype(np.int32)
    ends = np.concatenate([starts[1:] - 1, [n - 1]])
    terminated = np.zeros(n, bool)
    terminated[terminal_rows or []] = True
    truncated = np.zeros(n, bool)
    truncated[ends] = ~terminated[ends]
    return TransitionData(
        episode_id=episode, step=step, obs=obs, action=action,
        reward=np.zeros(n, np.float32) if reward is None else reward, next_obs=obs.copy(),
        terminated=terminated, truncated=truncated, metadata=DatasetMetadata(action_low=[-1.0], action_high=[1.0]),
    )
