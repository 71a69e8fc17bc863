"""Bad input through the real commands, many cases per interpreter: each case in a fresh folder
(its working directory and HOME, so caches, configs and ids that libraries write land there
too), and what a refusal must be: exit code 2, one stderr line naming the problem, no
traceback, nothing written.

`refuse_all(cases)` runs this file once (`python tests/refusals.py`). It imports the commands'
light modules once, then forks a child per case that sets the case's folder, environment and
argv and runs the command as its entry point would (`runpy` of the study script as __main__,
`python -m analysis`, the `kdray` console script's function): each case pays the imports of
the heavy libraries it reaches, not the interpreter's start or the commands' own imports."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"
KDRAY = "kdray"
"""The `kdray` console command (kdray.cli.commands:main)."""
ANALYSIS = "analysis"
"""`python -m analysis`."""
UNREACHABLE_HUB = "http://127.0.0.1:9"
"""HF_ENDPOINT of every case: a hub that refuses at once, whatever the machine's network."""


@dataclass
class Case:
    """One bad input: the command (a study script's name, KDRAY or ANALYSIS), its arguments
    ({tmp} is the case's folder), key words its one stderr line must hold, what to put in the
    folder first, and environment variables to set (None removes one)."""

    command: str
    argv: list[str]
    message: str
    prepare: Callable[[Path], None] | None = None
    env: dict[str, str | None] = field(default_factory=dict)


def case_ids(cases: list[Case]) -> list[str]:
    """Test ids: number and command line."""
    return [f"{n}:{' '.join([c.command, *c.argv])[:80]}" for n, c in enumerate(cases)]


@dataclass
class Refusal:
    code: int
    stderr: str
    seconds: float
    written: list[str]
    """Paths (relative to the case's folder) that the command created or changed."""


def case_env(folder: Path, extra: dict[str, str | None]) -> dict[str, str]:
    """The environment of a case: HOME and every cache in its folder, no tracking server, a
    local Ray with no GPU visible, a hub that does not answer."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KDRAY_", "HF_"))}
    env.update(
        HOME=str(folder),
        XDG_CACHE_HOME=str(folder / ".cache"),
        XDG_CONFIG_HOME=str(folder / ".config"),
        MPLCONFIGDIR=str(folder / ".config" / "matplotlib"),
        RAY_ADDRESS="local",
        CUDA_VISIBLE_DEVICES="",
        HF_ENDPOINT=UNREACHABLE_HUB,
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def listing(folder: Path) -> dict[str, float]:
    """Every path under `folder` with its modification time (files) or 0 (folders)."""
    return {
        str(p.relative_to(folder)): p.stat().st_mtime if p.is_file() else 0.0
        for p in folder.rglob("*")
    }


def refuse_all(cases: list[Case], root: Path, timeout: float = 600) -> list[Refusal]:
    """Run every case in a fresh folder under `root`; the results in the order of `cases`."""
    jobs, before = [], []
    for number, case in enumerate(cases):
        folder = root / f"case{number}"
        folder.mkdir(parents=True)
        if case.prepare:
            case.prepare(folder)
        before.append(listing(folder))
        argv = [a.replace("{tmp}", str(folder)) for a in case.argv]
        jobs.append(
            {"command": case.command, "argv": argv, "cwd": str(folder),
             "env": case_env(folder, case.env)}
        )  # fmt: skip
    done = subprocess.run(
        [sys.executable, __file__], input=json.dumps(jobs), capture_output=True, text=True,
        timeout=timeout, cwd=root,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = []
    for job, was, result in zip(jobs, before, json.loads(done.stdout), strict=True):
        after = listing(Path(job["cwd"]))
        changed = sorted(p for p, t in after.items() if was.get(p) != t)
        results.append(Refusal(result["code"], result["stderr"], result["seconds"], changed))
    return results


def assert_refused(result: Refusal, message: str) -> None:
    """Exit code 2, one stderr line holding `message`, no traceback, nothing written."""
    lines = result.stderr.strip().splitlines()
    assert result.code == 2, result.stderr
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.written == [], result.written


STORED_STUDY = """
import sys
from mlflow.tracking import MlflowClient
from kdray.cli.args import config_from_flags
from kdray.config.run import flatten, to_dict
from kdray.tracking.runs import as_params

config = config_from_flags("temperature", sys.argv[2:])
client = MlflowClient(sys.argv[1])
experiment = client.create_experiment(config.experiment_name)
tags = {"kdray.role": "study", "kdray.study": "temperature"}
run = client.create_run(experiment, run_name="temperature (interrupted)", tags=tags)
client.log_batch(run.info.run_id, params=as_params(flatten(to_dict(config), "config.")))
"""


def stored_study(folder: Path, *flags: str) -> None:
    """An interrupted `temperature.py FLAGS` in `folder`/mlflow.db (its parent run, the config
    params a study logs, no trials), written by MLflow with HOME in the folder, as a user's
    first study would leave it; made once per FLAGS, then copied."""
    if flags not in _STORED:
        template = Path(tempfile.mkdtemp(prefix="stored-study-"))
        atexit.register(shutil.rmtree, template, True)
        done = subprocess.run(
            [sys.executable, "-c", STORED_STUDY, f"sqlite:///{template / 'mlflow.db'}", *flags],
            capture_output=True, text=True, cwd=template, env=case_env(template, {}),
            timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        _STORED[flags] = template
    shutil.copytree(_STORED[flags], folder, dirs_exist_ok=True)


_STORED: dict[tuple[str, ...], Path] = {}


# The runner: `python tests/refusals.py` with the jobs as JSON on stdin.


def _entry(command: str, argv: list[str]) -> Callable[[], object]:
    """What starting the command runs, with sys.argv set as its start would set it."""
    import runpy

    if command == KDRAY:
        from kdray.cli.commands import main

        sys.argv = [KDRAY, *argv]
        return lambda: sys.exit(main())
    if command == ANALYSIS:
        sys.argv = ["python -m analysis", *argv]
        return lambda: runpy.run_module("analysis", run_name="__main__", alter_sys=True)
    script = str(STUDIES / f"{command}.py")
    sys.argv = [script, *argv]
    return lambda: runpy.run_path(script, run_name="__main__")


def _child(job: dict, out: Path, err: Path) -> None:
    """In the forked child: the case's folder, environment, argv and output files; then the
    command, ending as the interpreter would end (exit code, traceback on stderr)."""
    import traceback

    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    code = 1
    try:
        _entry(job["command"], job["argv"])()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _run(job: dict, scratch: Path) -> dict:
    import time

    out, err = scratch / "out", scratch / "err"
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(job, out, err)
    _, status = os.waitpid(pid, 0)
    return {
        "code": os.waitstatus_to_exitcode(status),
        "stderr": err.read_text(errors="replace"),
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    # The commands' light modules, imported once (not analysis.__main__, which runpy runs).
    import analysis.inputs  # noqa: F401
    import kdray.cli.commands  # noqa: F401
    import kdray.cli.main  # noqa: F401

    jobs = json.loads(sys.stdin.read())
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps([_run(job, Path(scratch)) for job in jobs]))


if __name__ == "__main__":
    main()
