import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"


def study_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def run_study_script(
    *flags: str, cwd: Path, timeout: int = 900, script: str = "temperature"
) -> subprocess.CompletedProcess:
    """`python studies/<script>.py FLAGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, str(STUDIES / f"{script}.py"), *flags],
        cwd=cwd,
        env=study_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache of worlds and teachers for the whole session (what users get by default)."""
    return tmp_path_factory.mktemp("kdray-cache")
