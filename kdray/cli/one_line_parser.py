"""argparse for kdray's commands (kdray.errors.OneLineParser): a usage error is one line on
stderr and exit code 2, not the usage block; value types that refuse what cannot be right.
Dependency-free so every command answers at once."""

import argparse
import math

from kdray.errors import EXIT_USAGE, OneLineParser

__all__ = ["EXIT_USAGE", "OneLineParser", "count", "port", "positive_number"]


def count(text: str) -> int:
    """A count of things (seeds, sequences, tokens): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_number(text: str) -> float:
    """A size or amount: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port to serve on: 1 to 65535 (0, a port the system picks, would not be the one
    the command prints)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 1 to 65535, got {value}")
    return value
