"""Where a tracking store keeps its files, read from its URI without loading MLflow (the command
line checks folders with it before anything heavy is imported)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kdray.errors import KdrayError


def resolve_tracking_uri(flag: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else a SQLite file in the working directory."""
    uri = flag or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
        if "working_dir_files" in Path.cwd().parts:
            print(
                "[kdray] warning: this Ray job's working directory is a temporary copy, so the "
                "default ./mlflow.db goes with it; pass --tracking-uri sqlite:////abs/mlflow.db "
                "or set MLFLOW_TRACKING_URI on the cluster",
                file=sys.stderr,
            )
    if problem := uri_problem(uri):
        raise KdrayError(problem)
    return uri


def uri_problem(uri: str) -> str | None:
    """What makes `uri` no tracking URI at all (one line with the fix); None when it is one."""
    if "://" not in uri and not uri.startswith("databricks"):
        return (
            f"invalid tracking URI {uri!r}: use sqlite:///path/mlflow.db, http://host:port "
            "or file:///path"
        )
    return None


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` store; None for any other store."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


STORE_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql")
SQLITE_HEADER = b"SQLite format 3\x00"
FOLDER = "is a folder, not a SQLite file"


def store_problem(uri: str) -> str | None:
    """What is wrong with a tracking store URI before MLflow opens it, in one line (with the
    fix); None when it can be used: a supported scheme, and for SQLite a file path that is new,
    empty or a SQLite database (not a folder, not another file, not in memory)."""
    if problem := uri_problem(uri):
        return problem
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
    if (problem := sqlite_file_problem(path)) is None:
        return None
    if problem == FOLDER:
        return f"{path} {problem}: pass --tracking-uri {uri}/mlflow.db"
    return f"{path} {problem}: pass --tracking-uri with a new file or an existing MLflow store"


def sqlite_file_problem(path: Path) -> str | None:
    """What keeps `path` from being a SQLite store file (FOLDER, another kind of file, an
    error reading it), in a few words; None for a new or empty file or a SQLite database."""
    try:
        if path.is_dir():
            return FOLDER
        if path.is_file() and path.stat().st_size:
            with path.open("rb") as store:
                header = store.read(len(SQLITE_HEADER))
            if header != SQLITE_HEADER:
                return "is not a SQLite database"
    except OSError as error:  # e.g. a name too long for the file system, or no permission
        return f"cannot be used ({error.strerror})"
    return None


def missing_sqlite_store(uri: str) -> bool:
    """True for a SQLite store whose file does not exist: opening it would create it, so a
    reader that only looks must check first."""
    path = sqlite_path(uri)
    return path is not None and not path.is_file()


def check_readable_store(
    uri: str, fix: str = "--tracking-uri of the study's store (default ./mlflow.db)"
) -> None:
    """A store a command only reads: a usable URI (store_problem) and, for SQLite, a file that
    exists, since opening a missing one would create it; KdrayError (one line ending in what
    to pass instead, `fix`: the command's own flag) otherwise."""
    if problem := store_problem(uri):
        raise KdrayError(problem)
    if missing_sqlite_store(uri):
        raise KdrayError(f"no MLflow store at {uri}: pass {fix}")
