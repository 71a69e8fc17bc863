"""A Ray Train worker killed in the middle of a trial: Train restarts the worker group from the
trial's latest checkpoint, the trial finishes in the same MLflow run with one complete curve,
and it ends where an uninterrupted run with the same seed ends."""

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from store_steps import logged_step

from conftest import STUDIES, run_study_script, study_env

STEPS = 300
KILL_AFTER_STEP = 100  # of the kd trial's curve as MLflow has it (reports every 10 steps)
FLAGS = ["--smoke", "--students", "tiny-qwen2-xs", "--methods", "kd", "--temperatures", "2"]
FLAGS += ["--steps", str(STEPS), "--max-concurrent", "1"]
COMPARED = ("train_loss", "score", "val_score", "agreement", "fidelity", "average")


def train_worker_pids() -> list[int]:
    """Processes Ray titles `ray::RayTrainWorker...` (one per Train worker)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0]
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and title.startswith(b"ray::RayTrainWorker"):
            pids.append(int(entry.name))
    return pids


def kill_worker_mid_trial(db: Path, run_name_prefix: str, killed: list, stop: threading.Event):
    """Once the run's curve passes KILL_AFTER_STEP, SIGKILL one of its Train workers (once)."""
    while not stop.is_set():
        try:
            step = logged_step(db, run_name_prefix)
        except sqlite3.Error:  # the study is writing; look again
            step = 0
        if KILL_AFTER_STEP <= step < STEPS and (pids := train_worker_pids()):
            os.kill(max(pids), signal.SIGKILL)  # one worker dies; its peers fail with it
            killed.append((step, pids))
            return
        time.sleep(0.05)


def _trial_runs(folder: Path) -> dict[str, object]:
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'trial'")
    return client, {r.data.tags["kdray.trial_key"]: r for r in runs}


@pytest.mark.slow  # 4-5 min each: the study twice, one run of it interrupted
@pytest.mark.parametrize(
    "layout, killed_run",
    [
        ([], "kd T=2"),
        (["--num-workers", "2", "--zero-stage", "2"], "kd T=2"),
        # Seeds 0 and 1 share one Train run: killed in seed 1's run, seed 0's is not redone.
        (["--seeds", "0,1"], "kd T=2 σ=0 tiny-qwen2-xs ← tiny-qwen2-m seed=1"),
    ],
    ids=["one-worker", "two-workers-zero2", "two-seeds-one-train-run"],
)
def test_a_killed_train_worker_resumes_from_its_checkpoint(
    tmp_path, shared_cache, layout, killed_run
):
    flags = [*FLAGS, *layout, "--cache-dir", str(shared_cache)]
    seeds = 2 if "--seeds" in layout else 1
    (tmp_path / "reference").mkdir()
    reference = run_study_script(*flags, cwd=tmp_path / "reference")
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]

    folder = tmp_path / "interrupted"
    folder.mkdir()
    killed, stop = [], threading.Event()
    watcher = threading.Thread(
        target=kill_worker_mid_trial, args=(folder / "mlflow.db", killed_run, killed, stop)
    )
    watcher.start()
    try:
        result = subprocess.run(
            [sys.executable, str(STUDIES / "temperature.py"), *flags],
            cwd=folder, env=study_env(), capture_output=True, text=True, timeout=900,
        )  # fmt: skip
    finally:
        stop.set()
        watcher.join()
    output = result.stdout + result.stderr
    assert killed, "the kd trial ended before its worker could be killed"
    killed_at, _ = killed[0]
    assert result.returncode == 0, output[-4000:]
    assert f"{2 * seeds} trials finished, 0 failed" in result.stdout
    assert "resuming at step" in output

    client, runs = _trial_runs(folder)
    _, reference_runs = _trial_runs(tmp_path / "reference")
    assert len(runs) == 2 * seeds and {r.info.status for r in runs.values()} == {"FINISHED"}
    kd_key = next(k for k, r in runs.items() if r.info.run_name == killed_run or seeds == 1
                  and r.data.params["method"] == "kd")  # fmt: skip
    kd = runs[kd_key]
    for key, run in runs.items():  # the other runs, seed 0's of the same Train run included
        assert run.data.metrics["restarts"] == (1 if key == kd_key else 0), run.info.run_name
        history = client.get_metric_history(run.info.run_id, "train_loss")
        assert sorted(m.step for m in history) == list(range(1, STEPS + 1))
    assert kd.data.metrics["restarts"] == 1
    resumed = kd.data.metrics["resumed_from_step"]
    assert resumed % 10 == 0 and 10 <= resumed <= killed_at + 10  # the latest checkpoint
    # One run with one complete curve: every step once, none lost, none repeated.
    history = client.get_metric_history(kd.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, STEPS + 1))

    # The same as an uninterrupted run with the same seed: the whole curve and the final
    # metrics, to 1e-6 relative (restored weights, optimizer, data position and RNG states
    # make the steps after the restart repeat the uninterrupted run's).
    ref = reference_runs[kd_key]
    ref_history = client_history(tmp_path / "reference", ref.info.run_id)
    for mine, theirs in zip(sorted(history, key=lambda m: m.step), ref_history, strict=True):
        assert math.isclose(mine.value, theirs.value, rel_tol=1e-6), (mine.step, mine, theirs)
    for name in COMPARED:
        assert math.isclose(kd.data.metrics[name], ref.data.metrics[name], rel_tol=1e-6), name
    assert ref.data.metrics["restarts"] == 0


def client_history(folder: Path, run_id: str):
    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    return sorted(client.get_metric_history(run_id, "train_loss"), key=lambda m: m.step)
