import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "temperature.py"


def run_study_script(*flags: str, cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    """`python studies/temperature.py FLAGS` in a fresh process, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [sys.executable, str(STUDY), *flags],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache of worlds and teachers for the whole session (what users get by default)."""
    return tmp_path_factory.mktemp("kdray-cache")
