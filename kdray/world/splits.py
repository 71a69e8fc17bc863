"""Drawing a synthetic domain's test, validation and train splits from one seeded generator:
shared by the math, commonsense and instruction worlds so that all three keep one contract
(fixed drawing order, no item text in two splits, an error when the space is too small)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

Record = dict[str, str]
Draw = Callable[[random.Random, int], Record]
"""Draws one record from the shared rng; the int is the record's position in its split (the
generators cycle through their sub-tasks with it, so every split is balanced over them)."""

SPLIT_ORDER = ("test", "validation", "train")
"""Drawing order: the small evaluation splits first, so their items do not depend on
train_size."""
MAX_ATTEMPTS_PER_ITEM = 50


class SplitSizes(Protocol):
    seed: int
    test_size: int
    validation_size: int
    train_size: int


def item_key(record: Record) -> tuple[str, str]:
    """What makes two records the same item: the text the model is prompted with."""
    return record["instruction"], record.get("input", "")


def draw_splits(
    config: SplitSizes, draw: Draw, rng: random.Random | None = None, hint: str = ""
) -> dict[str, list[Record]]:
    """Test, validation and train records, in that order, from `draw` called with one rng
    (random.Random(config.seed) unless given); an item (instruction + input) already drawn is
    drawn again, so no item occurs twice in a split or in two splits. ValueError, with `hint`
    as advice, when a split cannot be filled in 50 draws per item."""
    rng = random.Random(config.seed) if rng is None else rng
    sizes = {name: getattr(config, f"{name}_size") for name in SPLIT_ORDER}
    seen: set[tuple[str, str]] = set()
    splits: dict[str, list[Record]] = {}
    for split, size in sizes.items():
        records: list[Record] = []
        attempts = 0
        while len(records) < size:
            attempts += 1
            if attempts > MAX_ATTEMPTS_PER_ITEM * size:
                advice = f": {hint}" if hint else ""
                raise ValueError(f"cannot draw {size} distinct {split} items{advice}")
            record = draw(rng, len(records))
            key = item_key(record)
            if key not in seen:
                seen.add(key)
                records.append(record)
        splits[split] = records
    return splits
