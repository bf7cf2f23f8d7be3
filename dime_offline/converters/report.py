"""The conversion report: what was read, what was dropped or imputed, and how episodes ended."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class TagReport:
    """Quality and coverage of one source tag."""

    tag: str
    role: str
    """Where the spec uses it: observation, action, extra_state, auxiliary, reward, batch, mode, terminal."""
    units: str | None
    samples: int
    good: int
    uncertain: int
    bad: int
    bad_fraction: float
    """Fraction of the tag's samples that were bad (uncertain ones are counted apart)."""
    uncertain_fraction: float
    """Fraction of the tag's samples that were uncertain (unusable unless ``keep_uncertain``)."""
    missing_fraction: float
    """Fraction of grid steps where the aligned value was missing (no valid data)."""
    text_states: dict[str, int]
    """Non-numeric strings found in the value column (PI digital states), with counts."""
    sentinels: int
    out_of_range: int
    longest_gap_s: float
    """Longest time between two consecutive samples."""
    gaps_over_max_gap: int
    """Number of inter-sample gaps longer than the tag's max_gap."""
    bridged: int = 0
    """Transitions whose state or action value of this tag was held over a bad sample (hold_bad)."""
    median_interval_s: float | None = None
    """Typical (median) time between two consecutive samples, approximate (1.2 % bins)."""
    dropped_steps: int = 0
    """Audit: grid steps dropped as invalid_state/invalid_action while this tag was missing there
    (a step missing several tags counts for each)."""
    splits: int = 0
    """Audit: episodes that ended with 'gap' because this tag was missing."""


@dataclass
class EpisodeReport:
    """One episode of the output."""

    episode_id: int
    key: str
    start: str
    """ISO time (UTC) of the first observation."""
    end: str
    """ISO time (UTC) of the final next_obs."""
    transitions: int
    end_reason: str


@dataclass
class ConversionReport:
    """Everything a reviewer needs to trust (or question) a converted dataset."""

    source: str
    spec_hash: str
    files: list[str]
    rows_read: int
    rows_used: int
    """Rows that belong to tags of the spec."""
    time_start: str | None
    time_end: str | None
    dt_seconds: float
    grid_steps: int
    transitions: int
    final_states: int
    """Grid steps that are only an episode's last next_obs."""
    dropped_steps: dict[str, int]
    """Grid steps that are in no transition, by reason."""
    imputed_values: int
    """Observation values bridged by imputation (obs_valid False)."""
    imputed_steps: int
    """Transitions whose observation has at least one imputed feature."""
    terminal_fills: int
    """Terminal next_obs values filled from the last valid value (the trip made them unreadable)."""
    clipped_actions: int
    """Action values clipped to the declared bounds."""
    bridged_values: int
    """State and action values of transitions held over a bad sample (hold_bad; obs_valid False for states)."""
    short_episodes_dropped: int
    episode_count: int
    end_reasons: dict[str, int]
    tags: list[TagReport]
    episodes: list[EpisodeReport]
    in_memory: bool
    """True when the source was not time-ordered and was aligned in one in-memory pass."""
    warnings: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ views
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, *, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    def summary(self) -> dict[str, Any]:
        """The counts without the per-episode list (kept in dataset metadata)."""
        data = self.to_dict()
        data.pop("episodes")
        return data

    def check_accounting(self) -> None:
        """Assert the step and episode bookkeeping adds up (used by tests; cheap)."""
        assert self.grid_steps == self.transitions + self.final_states + sum(self.dropped_steps.values())
        assert self.episode_count == len(self.episodes) == sum(self.end_reasons.values())
        assert self.transitions == sum(e.transitions for e in self.episodes)

    def format(self, *, max_episodes: int = 10) -> str:
        """A plain-text report for terminals and logs."""
        lines = [
            f"source      {self.source}  (spec {self.spec_hash})",
            f"rows        {self.rows_read:,} read, {self.rows_used:,} of spec tags"
            + ("  [not time-ordered: aligned in memory]" if self.in_memory else ""),
            f"time        {self.time_start} .. {self.time_end}  (dt {self.dt_seconds:g} s)",
            (f"grid steps  {self.grid_steps:,}: {self.transitions:,} transitions, {self.final_states:,} final states,"
             f" {sum(self.dropped_steps.values()):,} dropped"),
        ]
        if self.dropped_steps:
            lines.append("dropped     " + ", ".join(f"{k} {v:,}" for k, v in sorted(self.dropped_steps.items())))
        lines.append(
            f"imputed     {self.imputed_values:,} values in {self.imputed_steps:,} transitions;"
            f" terminal fills {self.terminal_fills:,}; clipped actions {self.clipped_actions:,}"
        )
        if self.bridged_values:
            lines.append(f"bridged     {self.bridged_values:,} state/action values held over bad samples (hold_bad)")
        lines.append(
            f"episodes    {self.episode_count:,} ("
            + ", ".join(f"{k} {v}" for k, v in sorted(self.end_reasons.items()))
            + (f"; {self.short_episodes_dropped} too short dropped" if self.short_episodes_dropped else "")
            + ")"
        )
        lines.append("")
        header = (f"{'tag':<24} {'role':<12} {'units':<8} {'samples':>9} {'bad%':>6} {'unc%':>6} {'missing%':>8}"
                  f" {'every s':>8} {'max gap s':>9} {'bridged':>8} {'lost':>7} {'splits':>6}  text states")
        lines.append(header)
        lines.append("-" * len(header))
        for t in self.tags:
            states = ", ".join(f"{k} x{v}" for k, v in Counter(t.text_states).most_common(3))
            lines.append(
                f"{t.tag[:24]:<24} {t.role[:12]:<12} {(t.units or '-')[:8]:<8} {t.samples:>9,} {100 * t.bad_fraction:>6.2f}"
                f" {100 * t.uncertain_fraction:>6.2f} {100 * t.missing_fraction:>8.2f}"
                f" {'-' if t.median_interval_s is None else format(t.median_interval_s, '.3g'):>8}"
                f" {t.longest_gap_s:>9.1f} {t.bridged:>8,} {t.dropped_steps:>7,} {t.splits:>6,}  {states}"
            )
        costly = sorted((t for t in self.tags if t.dropped_steps or t.splits), key=lambda t: -t.dropped_steps)
        if costly:
            lines.append("")
            lines.append("steps lost to missing data, by tag (lost steps; gap splits): " + ", ".join(
                f"{t.tag} {t.dropped_steps:,}; {t.splits:,}" for t in costly))
        if self.episodes:
            lines.append("")
            lines.append(f"{'episode':>7}  {'key':<16} {'start':<20} {'steps':>6}  end")
            for e in self.episodes[:max_episodes]:
                lines.append(f"{e.episode_id:>7}  {e.key[:16]:<16} {e.start[:20]:<20} {e.transitions:>6}  {e.end_reason}")
            if len(self.episodes) > max_episodes:
                lines.append(f"{'':>7}  ... {len(self.episodes) - max_episodes} more")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()
