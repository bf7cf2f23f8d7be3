"""The dataset cards in datasets/cards are YAML a program can read, each naming itself after its file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

CARDS = sorted((Path(__file__).resolve().parents[2] / "datasets" / "cards").glob("*.yaml"))


def test_there_are_cards() -> None:
    assert len(CARDS) >= 8


@pytest.mark.parametrize("path", CARDS, ids=lambda p: p.name)
def test_a_card_parses_and_names_its_dataset(path: Path) -> None:
    card = yaml.safe_load(path.read_text())
    assert card["name"] == path.stem
    for field in ("file", "format", "license", "environment", "intended_use"):
        assert card.get(field), f"{path.name}: no {field}"
