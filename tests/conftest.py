import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"
RAY_CLI = str(Path(sys.executable).parent / "ray")  # the CLI of the Ray this Python imports


def wait_for_http(url: str, seconds: float = 60) -> None:
    """Poll `url` until it answers; fail the test after `seconds`."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer in {seconds:g} s")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def interrupt_study_script(
    *flags: str, cwd: Path, after: str, script: str = "temperature", sig=signal.SIGINT
) -> tuple[int, str]:
    """Run `studies/<script>.py FLAGS`, press Ctrl-C (SIGINT; or send `sig`, e.g. SIGKILL)
    once a line contains `after`, and return its exit code and output."""
    study = subprocess.Popen(
        [sys.executable, str(STUDIES / f"{script}.py"), *flags],
        cwd=cwd,
        env=study_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in study.stdout:
        output.append(line)
        if after in line:
            study.send_signal(sig)
            break
    output += study.stdout.readlines()
    return study.wait(timeout=300), "".join(output)


@pytest.fixture(scope="session")
def one_rank_process_group():
    """A one-rank gloo process group in this process (what a Train worker runs in), for the
    whole session: DeepSpeed keeps the groups it derives from it."""
    import torch.distributed as dist

    with pytest.MonkeyPatch.context() as env:
        env.setenv("LOCAL_RANK", "0")  # DeepSpeed asserts it is set
        dist.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1
        )
        yield
        dist.destroy_process_group()


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    """One cache of worlds and teachers for the whole session (what users get by default)."""
    return tmp_path_factory.mktemp("kdray-cache")
