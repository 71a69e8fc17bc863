"""Surviving a tracking server that goes away in the middle of a study.

- Every process that logs asks MLflow for few, quick HTTP retries (`bound_http_retries`), so an
  unreachable server is noticed in seconds, not after MLflow's four minutes of back-off.
- Train workers log through `BufferedRunLogger`: what cannot be sent is kept, training goes
  on, and it is sent when the server answers again; what is still unsent when the run ends
  travels in the final checkpoint (`save_unsent`) to the trial driver, which delivers it.
- A trial driver waits for the server (`wait_for_tracking`, the study's tracking_wait seconds)
  and then gives up in one line, keeping the trial's undelivered results on disk, marking the
  outage for the study (later trials then give up at once instead of each waiting), and
  `--resume` delivers what was kept once the server is back."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from kdray.cache import content_key
from kdray.console import say
from kdray.errors import TrackingUnreachableError
from kdray.tracking.runs import RunLogger, execute

UNSENT_DIR = "unsent"
UNSENT_OPS = "ops.json"
RETRY_EVERY_S = 10.0
HTTP_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",  # MLflow's default 7 backs off for ~4 minutes
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
T = TypeVar("T")


def bound_http_retries() -> None:
    """Few, quick HTTP retries for this process's MLflow client (a user's settings win)."""
    for name, value in HTTP_RETRIES.items():
        os.environ.setdefault(name, value)


def is_unreachable(error: BaseException) -> bool:
    """True when `error` says the tracking server could not be reached (refused, timed out,
    or answering 5xx through its retries), not that a request was wrong."""
    import requests

    if isinstance(error, requests.exceptions.RequestException):
        return True
    message = str(error)
    return isinstance(error, MlflowException) and (
        "failed with exception" in message or "Max retries exceeded" in message
    )


def server_answers(uri: str) -> bool:
    """One quick look (2 s at most) whether an HTTP tracking server answers at all; other
    stores are taken as answering."""
    if not uri.startswith(("http://", "https://")):
        return True
    import requests

    try:
        return requests.get(f"{uri.rstrip('/')}/health", timeout=2).status_code < 500
    except requests.exceptions.RequestException:
        return False


def wait_for_tracking(call: Callable[[], T], uri: str, wait_s: float, what: str) -> T:
    """`call()`, retried while the tracking server is unreachable, for at most `wait_s`
    seconds; then TrackingUnreachableError. Other errors pass through at once."""
    started = time.monotonic()
    told = None
    while True:
        try:
            result = call()
        except Exception as error:
            if not is_unreachable(error):
                raise
            down = time.monotonic() - started
            if down >= wait_s:
                raise TrackingUnreachableError(
                    f"tracking server {uri} unreachable for {down:.0f} s while {what}"
                ) from error
            if told is None or down - told >= 60:
                say(
                    f"tracking server {uri} unreachable while {what}; waiting up to "
                    f"{wait_s:.0f} s for it (--tracking-wait)"
                )
                told = down
            time.sleep(min(RETRY_EVERY_S, max(0.5, wait_s - down)))
            continue
        if told is not None:
            say(f"tracking server {uri} answers again ({what})")
        return result


class BufferedRunLogger(RunLogger):
    """A RunLogger that keeps what it cannot send while the server is unreachable, in order,
    and sends it once the server answers (tried again at most every RETRY_EVERY_S)."""

    def __init__(self, tracking_uri: str, run_id: str, spool: Path):
        super().__init__(tracking_uri, run_id)
        self.uri = tracking_uri
        self.spool = spool  # copies of files to upload later (their originals may go)
        self.pending: list[dict[str, Any]] = []
        self.delivered: dict[str, int] = {}  # curve name -> last step the server has
        self._retry_at = 0.0

    def continue_curves(self, names, known=None, fresh=False) -> None:
        super().continue_curves(names, known, fresh)
        self.delivered = dict(self._logged_through)

    def _last_step(self, name: str) -> int:
        try:
            return super()._last_step(name)
        except Exception as error:  # unreachable: what the checkpoint knows must do
            if not is_unreachable(error):
                raise
            return 0

    def _send(self, op: dict[str, Any]) -> None:
        self.pending.append(self._kept(op) if self.pending else op)
        if len(self.pending) == 1:
            self.flush()
        elif time.monotonic() >= self._retry_at:  # a cheap look first: training is waiting
            if server_answers(self.uri):
                self.flush()
            else:
                self._retry_at = time.monotonic() + RETRY_EVERY_S

    def flush(self) -> bool:
        """Send what is pending; True when nothing is left."""
        was_down = bool(self.pending) and self._retry_at > 0
        while self.pending:
            try:
                execute(self.client, self.run_id, self.pending[0])
            except Exception as error:
                if not is_unreachable(error):
                    raise
                if self._retry_at == 0:
                    say(
                        f"tracking server {self.uri} unreachable: keeping this run's metrics "
                        "and sending them when it answers; training goes on"
                    )
                self.pending = [self._kept(op) for op in self.pending]
                self._retry_at = time.monotonic() + RETRY_EVERY_S
                return False
            op = self.pending.pop(0)
            if "curve" in op:
                self.delivered[op["curve"]] = op["last_step"]
        if was_down:
            say(f"tracking server {self.uri} answers again: this run's kept metrics are sent")
        self._retry_at = 0.0
        return True

    def _kept(self, op: dict[str, Any]) -> dict[str, Any]:
        """`op` with its file copied into the spool (once), so it can be sent later."""
        if "path" not in op or Path(op["path"]).is_relative_to(self.spool):
            return op
        copy = self.spool / str(len(list(self.spool.glob("*")))) / Path(op["path"]).name
        _copy(Path(op["path"]), copy)
        return {**op, "path": str(copy)}

    def save_unsent(self, folder: Path) -> int:
        """Write what is still pending (and its files) under folder/unsent; how many ops."""
        if not self.pending:
            return 0
        target = folder / UNSENT_DIR
        target.mkdir()
        ops = []
        for number, op in enumerate(self.pending):
            if "path" in op:  # a folder per op: the file keeps its name (the artifact's)
                name = f"{number}/{Path(op['path']).name}"
                _copy(Path(op["path"]), target / name)
                op = {**op, "path": name}
            ops.append(op)
        (target / UNSENT_OPS).write_text(json.dumps(ops))
        return len(ops)


def _copy(source: Path, target: Path) -> None:
    """Copy a file or a folder to `target`, making its parent folders."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)


class UnsentOps:
    """The ops a run could not send, read from a folder `save_unsent` wrote; `deliver` sends
    them in order, and a delivery cut short by the server continues where it stopped."""

    def __init__(self, folder: Path):
        self.folder = folder / UNSENT_DIR
        path = self.folder / UNSENT_OPS
        self.ops = json.loads(path.read_text()) if path.is_file() else []

    def deliver(self, client: MlflowClient, run_id: str) -> None:
        while self.ops:
            op = self.ops[0]
            if "path" in op:
                op = {**op, "path": str(self.folder / op["path"])}
            execute(client, run_id, op)
            self.ops.pop(0)

    def keep(self, folder: Path) -> None:
        """Copy the ops not yet delivered, with their files, to `folder`/unsent."""
        target = folder / UNSENT_DIR
        target.mkdir(parents=True, exist_ok=True)
        for op in self.ops:
            if "path" in op:
                _copy(self.folder / op["path"], target / op["path"])
        (target / UNSENT_OPS).write_text(json.dumps(self.ops))

    def save_remaining(self) -> None:
        """Rewrite the folder's op list as what is still undelivered."""
        if self.folder.is_dir():
            (self.folder / UNSENT_OPS).write_text(json.dumps(self.ops))


class StudyOutage:
    """What a study keeps when its tracking server stays away: a marker (later trials then
    give up at once instead of each waiting), and per trial its run id, final metrics and the
    logging ops it could not deliver, until `deliver_kept` (--resume) sends them."""

    def __init__(self, storage_path: str | Path, parent_run_id: str):
        self.folder = Path(storage_path) / "tracking-outages" / parent_run_id
        self.marker = self.folder / "unreachable"

    def happened(self) -> bool:
        return self.marker.is_file()

    def record(self, message: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(message)

    def stopped(self) -> TrackingUnreachableError:
        """The study's one line when it stopped for the outage."""
        return TrackingUnreachableError(
            f"{self.marker.read_text()}; the study stopped: {len(self.kept())} trials' results "
            f"kept in {self.folder}; start the server again and rerun with --resume"
        )

    def keep(self, key: str, run_id: str, unsent: UnsentOps, metrics: dict[str, float]) -> None:
        trial = self.folder / content_key(key)
        unsent.keep(trial)
        record = {"key": key, "run_id": run_id, "metrics": metrics}
        (trial / "run.json").write_text(json.dumps(record))

    def kept(self) -> list[Path]:
        return sorted(p.parent for p in self.folder.glob("*/run.json"))

    def deliver_kept(self, client: MlflowClient) -> int:
        """Send every kept trial's ops, mark its run FINISHED, forget it; how many trials."""
        from mlflow.entities import RunStatus

        kept = self.kept()
        for trial in kept:
            run_id = json.loads((trial / "run.json").read_text())["run_id"]
            unsent = UnsentOps(trial)
            try:
                unsent.deliver(client, run_id)
            finally:
                unsent.save_remaining()
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
            shutil.rmtree(trial)
        self.marker.unlink(missing_ok=True)
        return len(kept)
