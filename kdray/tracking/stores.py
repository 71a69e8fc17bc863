"""Where a tracking store keeps its files, read from its URI without loading MLflow (the command
line checks folders with it before anything heavy is imported)."""

from __future__ import annotations

from pathlib import Path


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


STORE_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql")
SQLITE_HEADER = b"SQLite format 3\x00"


def store_problem(uri: str) -> str | None:
    """What is wrong with a tracking store URI before MLflow opens it, in one line (with the
    fix); None when it can be used: a supported scheme, and for SQLite a file path that is new,
    empty or a SQLite database (not a folder, not another file, not in memory)."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in STORE_SCHEMES:
        return (
            f"tracking URI {uri!r} has an unsupported scheme {scheme!r}: use "
            "sqlite:///path/mlflow.db, http(s)://host:port, file:///path or a database URL"
        )
    if scheme != "sqlite":
        return None
    path = sqlite_path(uri)
    if path is None or str(path) in ("", ".", ":memory:"):
        return (
            f"tracking URI {uri!r} names no file (an in-memory store, lost when the study ends): "
            "use sqlite:///path/mlflow.db"
        )
    try:
        if path.is_dir():
            return f"{path} is a folder, not a SQLite file: pass --tracking-uri {uri}/mlflow.db"
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as store:
                header = store.read(len(SQLITE_HEADER))
            if header != SQLITE_HEADER:
                return (
                    f"{path} is not a SQLite database: pass --tracking-uri with a new file or an "
                    "existing MLflow store"
                )
    except OSError as error:  # e.g. a name too long for the file system, or no permission
        return (
            f"tracking store {path} cannot be used ({error.strerror}): pass another --tracking-uri"
        )
    return None


def missing_sqlite_store(uri: str) -> bool:
    """True for a SQLite store whose file does not exist: opening it would create it, so a
    reader that only looks must check first."""
    path = sqlite_path(uri)
    return path is not None and not path.is_file()
