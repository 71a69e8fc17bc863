"""Where a tracking store keeps its files, read from its URI without loading MLflow (the command
line checks folders with it before anything heavy is imported)."""

from __future__ import annotations

from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def missing_sqlite_store(uri: str) -> bool:
    """True for a SQLite store whose file does not exist: opening it would create it, so a
    reader that only looks must check first."""
    path = sqlite_path(uri)
    return path is not None and not path.is_file()
