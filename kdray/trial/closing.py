"""Closing a run's MLflow run once its outputs exist: FAILED with its reason, or FINISHED with
its student recorded. The trial driver closes what is open when its Train run ends; in a Train
run that trains several runs, RunCloser closes each as soon as a checkpoint holds its outputs,
so a run's Duration in the UI ends when it did, and a study stopped mid-Train-run keeps the
runs it finished (--resume trains only the others)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
import uuid
from pathlib import Path

import pyarrow.fs
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray.train import UserCallback

from kdray.console import say
from kdray.eval.evaluate import PREDICTIONS_FILE
from kdray.tracking.models import MODEL_ERROR_TAG, MODEL_FOLDER_TAG, link_or_copy, log_student
from kdray.tracking.outage import UNSENT_DIR, bound_http_retries, is_unreachable
from kdray.tracking.runs import mark_failed
from kdray.train.loop import (
    FAILURE_FILE,
    METRICS_FILE,
    RUN_FILE,
    NonFiniteLossError,
    run_output,
)

FAILURE_TAG = "kdray.failure_reason"
STUDENTS_DIR = "students"
"""Under a study's Ray storage: each finished run's outputs, `students/<MLflow run id>`."""
NOT_MODEL_FILES = (METRICS_FILE, PREDICTIONS_FILE, FAILURE_FILE, RUN_FILE, UNSENT_DIR)
"""What a run's output folder holds besides its exported student."""


class TrialFailedError(RuntimeError):
    """A resumed study's trial that had failed before: it fails again with the same reason."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def failure_reason(error: BaseException) -> str:
    """The error that ended the trial in one line: Train wraps a worker's exception with its
    traceback, whose last line names the real error (e.g. `...NonFiniteLossError: loss became
    nan at step 1`)."""
    if isinstance(error, TrialFailedError):
        return error.reason
    text = "".join(traceback.format_exception_only(type(error), error))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:500] if lines else type(error).__name__


def run_failure(output: Path) -> str | None:
    """Why a run of the Train run failed (its loss stopped being finite), or None."""
    failure = output / FAILURE_FILE
    if not failure.is_file():
        return None
    return failure_reason(NonFiniteLossError(json.loads(failure.read_text())["reason"]))


def mark_run_failed(client: MlflowClient, run_id: str, reason: str) -> None:
    """FAILED with its reason, unless the run was closed already: a trial ASHA stops loses its
    workers with its placement group, and the Tune driver closes its run KILLED."""
    if client.get_run(run_id).info.status != "RUNNING":
        return
    client.set_tag(run_id, FAILURE_TAG, reason)
    mark_failed(client, run_id)


def log_run_student(tracking_uri: str, run_id: str, output: Path) -> str:
    """The student a run exported and evaluated (`output`: its Hugging Face folder, beside the
    run's records) logged as the run's MLflow model at the run's last step; its model id."""
    step = json.loads((output / METRICS_FILE).read_text())["step"]
    return log_student(tracking_uri, run_id, output, NOT_MODEL_FILES, step)


def keep_student(output: Path, students: Path, run_id: str) -> Path:
    """The run's outputs linked into `students/<run_id>` (hard links, copies across
    filesystems), where they outlive the Train run's checkpoints: the next checkpoint replaces
    the one that holds them, and a resumed Train run may write another run at their position."""
    kept = students / run_id
    if kept.is_dir():
        return kept
    students.mkdir(parents=True, exist_ok=True)
    staging = students / f".{run_id}.{uuid.uuid4().hex[:8]}.partial"
    shutil.copytree(output, staging, copy_function=link_or_copy)
    try:
        os.rename(staging, kept)
    except OSError:  # kept by another closer meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return kept


def record_student(
    client: MlflowClient, run_id: str, output: Path, students: Path, log_model: bool
) -> None:
    """Keep the run's student (keep_student), tag where it is, and log it when asked. A
    student that cannot be logged is a tag and a line, not a failed trial (its results are
    all there)."""
    kept = keep_student(output, students, run_id)
    client.set_tag(run_id, MODEL_FOLDER_TAG, str(kept))
    if not log_model:
        return
    try:
        log_run_student(client.tracking_uri, run_id, kept)
    except Exception as error:
        if is_unreachable(error):
            raise
        reason = failure_reason(error)
        client.set_tag(run_id, MODEL_ERROR_TAG, reason)
        say(f"run {run_id}: its student was not logged as an MLflow model: {reason}")


def finish_run(
    client: MlflowClient, run_id: str, output: Path, students: Path, log_model: bool
) -> None:
    """The run's student recorded, the run FINISHED."""
    record_student(client, run_id, output, students, log_model)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))


def written_by(output: Path, run_id: str) -> bool:
    """`output` holds a finished run's outputs (its student and metrics, or its failure),
    written for this MLflow run (kdray.train.loop.record_run). A restored checkpoint's
    outputs of an earlier attempt can sit at the same position for another run."""
    record = output / RUN_FILE
    if not record.is_file() or json.loads(record.read_text()).get("run_id") != run_id:
        return False
    return (output / METRICS_FILE).is_file() or (output / FAILURE_FILE).is_file()


class RunCloser(UserCallback):
    """(in the Train controller) Closes each run of a Train run as soon as a reported
    checkpoint holds its outputs. One try per run, without waiting for the tracking server:
    a run it could not close, or whose rank 0 kept logging ops during an outage, stays open
    for the trial driver, which closes it when the Train run ends (and waits for the server).
    Only checkpoints on a local filesystem: anything else would be downloaded at every report."""

    def __init__(self, tracking_uri: str, run_ids: list[str], students: Path, log_models: bool):
        self.tracking_uri = tracking_uri
        self.run_ids = run_ids
        """Each run's MLflow run id, by position in the Train run."""
        self.students = students
        self.log_models = log_models
        self.tried: set[int] = set()

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if checkpoint is None or not isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
            return
        for position, run_id in enumerate(self.run_ids):
            output = run_output(Path(checkpoint.path), position)
            if position in self.tried or not written_by(output, run_id):
                continue
            self.tried.add(position)
            if (output / UNSENT_DIR).exists():
                continue  # the driver delivers those ops first
            try:
                bound_http_retries()  # a server that is away must not hold the controller up
                client = MlflowClient(self.tracking_uri)
                if reason := run_failure(output):
                    mark_run_failed(client, run_id, reason)
                else:
                    finish_run(client, run_id, output, self.students, self.log_models)
            except Exception as error:  # the driver closes it at the end
                why = failure_reason(error)
                sys.stderr.write(f"[kdray] run {run_id} left open for its trial driver: {why}\n")
