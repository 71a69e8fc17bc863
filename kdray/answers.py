"""Answer extraction as in the study: the final answer is the last number in the response."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TOLERANCE = 0.001


def last_number(text: str) -> float | None:
    """The last number in `text` (thousands separators removed), or None if there is none."""
    numbers = _NUMBER.findall(text.replace(",", ""))
    return float(numbers[-1]) if numbers else None


def same_number(a: float | None, b: float | None) -> bool:
    """Equal within the study's tolerance of 0.001; a missing answer never matches."""
    return a is not None and b is not None and abs(a - b) <= TOLERANCE
