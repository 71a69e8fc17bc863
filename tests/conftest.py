import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

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


def ctrl_c_able() -> None:
    """preexec_fn: Ctrl-C (SIGINT) back to its default in the child. A suite started in the
    background (`pytest &`) ignores SIGINT, and a Python child that inherits that never sees
    KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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
        preexec_fn=ctrl_c_able,
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


def tiny_student_folder(folder: Path, family: str = "qwen") -> Path:
    """A student folder as a trial exports it (kdray.train.loop.export_model: safetensors and
    tokenizer), from a tokenizer trained on a few prompts and an untrained tiny model, plus the
    run's records beside it (metrics.json, predictions.json, unsent/) as in a run's output; the
    tokenizer alone in `tokenizer/` beside it, as a world keeps it (what trials load)."""
    import json

    from kdray.data.prompts import format_prompt
    from kdray.world.tokenizer import train_tokenizer
    from kdray.world.zoo import build_model, family_models

    texts = [
        format_prompt({"instruction": f"Ann has {a} pens and gets {b} more. How many?"})
        + f"{a} + {b} = {a + b}. The answer is {a + b}."
        for a in range(10)
        for b in range(10)
    ]
    tokenizer = train_tokenizer(texts, 120, family)
    spec = next(iter(family_models(family).values()))  # the smallest of the family
    folder.mkdir(parents=True, exist_ok=True)
    build_model(spec, tokenizer, folder, seed=0)
    tokenizer.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder.parent / "tokenizer"))
    (folder / "metrics.json").write_text(json.dumps({"step": 20, "score": 12.5}))
    (folder / "predictions.json").write_text("[]")
    (folder / "unsent").mkdir(exist_ok=True)
    (folder / "unsent" / "ops.json").write_text("[]")
    return folder


def stop_ray(temp_dir: Path, port: int) -> None:
    """`ray stop --force` for the one cluster started with `--temp-dir temp_dir --port port`
    (`ray stop` stops every Ray on the machine): SIGKILL its system processes, which name the
    folder or the GCS address on their command line, and their descendants (workers, a job's
    driver)."""
    import psutil

    def ours(arg: str) -> bool:
        return str(temp_dir) in arg or arg.startswith("--address=") and arg.endswith(f":{port}")

    for _ in range(3):  # a raylet may start a worker while its peers are being killed
        found = set()
        for process in psutil.process_iter(["cmdline"]):
            if any(ours(arg) for arg in process.info["cmdline"] or ()):
                found.add(process)
                with contextlib.suppress(psutil.Error):
                    found.update(process.children(recursive=True))
        if not found:
            return
        for process in found:
            with contextlib.suppress(psutil.Error):
                process.kill()
        psutil.wait_procs(found, timeout=30)


@contextlib.contextmanager
def ray_head(env: dict[str, str], cwd: Path) -> Iterator[str]:
    """`ray start --head` (2 CPUs, a dashboard for `ray job`), in a folder of its own so that
    stopping it stops this cluster only; yields the dashboard's address."""
    # Creates ~/.ray/auth_token only if missing (it prints the token: keep it captured).
    token = [RAY_CLI, "get-auth-token", "--generate"]
    subprocess.run(token, env=env, check=True, capture_output=True, timeout=300)  # a busy machine
    temp_dir = Path(tempfile.mkdtemp(prefix="kdray-ray-"))  # short: Ray's socket paths
    dashboard, port = free_port(), free_port()
    start = [
        RAY_CLI, "start", "--head", "--num-cpus", "2", "--port", str(port),
        "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1",
        "--include-dashboard", "true", "--temp-dir", str(temp_dir), "--disable-usage-stats",
        # ports other Rays on the machine may hold (the job agent's default is 52365)
        "--dashboard-agent-listen-port", str(free_port()),
        "--ray-client-server-port", str(free_port()),
    ]  # fmt: skip
    try:
        subprocess.run(start, env=env, check=True, capture_output=True, timeout=300, cwd=cwd)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        stop_ray(temp_dir, port)
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit_ray_job(submit: list[str], **run) -> subprocess.CompletedProcess:
    """`ray job submit ...`, again while a new head's job agent is still starting (the head
    refuses the submission then, before any job exists)."""
    import time

    deadline = time.monotonic() + 120
    while True:
        result = subprocess.run(submit, capture_output=True, text=True, **run)
        if "No available agent to submit job" not in result.stderr or time.monotonic() > deadline:
            return result
        time.sleep(2)


PLANTED_TOKEN = "hf_kdrayPlantedFakeToken0123456789"
"""Set in the smoke study's environment as HF_TOKEN and an AWS secret: it must never reach
MLflow (tests/e2e/test_smoke_study.py)."""


@pytest.fixture(scope="session")
def smoke_job(tmp_path_factory, shared_cache) -> SimpleNamespace:
    """The --smoke study once for the session, as a user submits it to a running cluster:
    `ray start --head`, then `ray job submit --working-dir . -- python studies/temperature.py
    --smoke` (tests/e2e/test_ray_job.py), its store and results in one folder whose runs
    tests/e2e/test_smoke_study.py inspects, a token planted in its environment. The default
    store and results folder in the working directory: the other e2e tests' studies."""
    workdir = tmp_path_factory.mktemp("smoke")
    # Ray 2.60: once ~/.ray/auth_token exists, `ray start` turns token auth on but the
    # `ray job` client only uses it when told to; one setting for both (see README).
    env = {**study_env(), "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    env["HF_TOKEN"] = env["AWS_SECRET_ACCESS_KEY"] = PLANTED_TOKEN  # the job's driver inherits
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with ray_head(env, cwd=workdir) as address:
        submit = [
            RAY_CLI, "job", "submit", "--address", address, "--working-dir", ".", "--",
            "python", "studies/temperature.py", "--smoke", "--tracking-uri", uri,
            "--cache-dir", str(shared_cache),
            "--results-dir", str(workdir / "results" / "temperature-smoke"),
        ]  # fmt: skip
        result = submit_ray_job(submit, env=env, cwd=REPO, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return SimpleNamespace(workdir=workdir, uri=uri, result=result)


@pytest.fixture(scope="session")
def smoke(smoke_job) -> tuple[Path, str, str]:
    """(working folder, tracking URI, output) of the session's --smoke study (smoke_job)."""
    return smoke_job.workdir, smoke_job.uri, smoke_job.result.stdout
