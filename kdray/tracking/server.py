"""A local MLflow tracking server for multi-process runs: a SQLite store and an artifact
folder in one directory, served on 127.0.0.1 unless the user asks otherwise.

`kdray mlflow-server --store DIR` runs it in the foreground (Ctrl-C stops it); studies then
log to it with `--tracking-uri http://127.0.0.1:5000`. For a shared server on a cluster see
clusters/mlflow/."""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path

from kdray.errors import KdrayError
from kdray.tracking.stores import sqlite_file_problem

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def server_command(
    backend_uri: str, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
    artifacts_dir: Path | None = None, workers: int = 1,
) -> list[str]:  # fmt: skip
    """The `mlflow server` command line (run with this interpreter's mlflow)."""
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
               "--host", host, "--port", str(port), "--workers", str(workers)]  # fmt: skip
    if artifacts_dir is not None:  # served through the server: clients need no file access
        command += ["--artifacts-destination", str(artifacts_dir)]
    return command


def server_env() -> dict[str, str]:
    """The server's environment: MLflow's background job runner off (kdray never uses it)."""
    return {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def store_folder(store: str) -> Path:
    """The server's store folder, resolved: an existing, writable folder whose mlflow.db (if
    any) is a SQLite database; KdrayError (one line) otherwise. Creates nothing."""
    folder = Path(store).resolve()
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise KdrayError(f"--store {folder} {what}: pass --store DIR of an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KdrayError(f"--store {folder} is not writable: pass --store DIR of a folder you own")
    if problem := sqlite_file_problem(folder / "mlflow.db"):
        raise KdrayError(
            f"{folder / 'mlflow.db'} {problem}: pass --store DIR of a new folder or of an "
            "existing MLflow store"
        )
    return folder


def check_address(host: str, port: int) -> None:
    """The server can listen on host:port; KdrayError (one line with the fix) for an unknown
    host, an address of another machine, a port in use or reserved. Binds a socket for a
    moment, as the server would (SO_REUSEADDR), and closes it."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as error:
        raise KdrayError(
            f"--host {host!r} is not an address ({error}): pass an address of this machine"
        ) from None
    try:
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is in use (a server already running?): pass --port"
        elif error.errno == errno.EADDRNOTAVAIL:
            message = f"--host {host} is not an address of this machine: pass one of its own"
        else:
            message = f"cannot listen on {host}:{port} ({error.strerror}): pass --host/--port"
        raise KdrayError(message) from None
