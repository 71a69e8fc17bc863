"""A local MLflow tracking server for multi-process runs: a SQLite store and an artifact
folder in one directory, served on 127.0.0.1 unless the user asks otherwise.

`kdray mlflow-server --store DIR` runs it in the foreground (Ctrl-C stops it); studies then
log to it with `--tracking-uri http://127.0.0.1:5000`. For a shared server on a cluster see
clusters/mlflow/."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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
