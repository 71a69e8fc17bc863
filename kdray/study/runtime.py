"""What the grid and the search share in the Tune driver: joining Ray, trials in flight, progress
lines, phase clock, the outcome, and finding, stopping and resuming a study's parent run."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from kdray.console import say
from kdray.study.config import StudyConfig
from kdray.tracking.outage import StudyOutage
from kdray.tracking.runs import PARENT_TAG, RUN_NAME_TAG, role_is
from kdray.trial.closing import FAILURE_TAG
from kdray.trial.driver import DRIVER_CPUS


@dataclass(frozen=True)
class StudyOutcome:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    trials: int
    failed: int
    results_dir: Path
    phase_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    """Wall seconds of `world`, `teachers`, `teacher_signals` (responses and caches),
    `trials` and `summary`."""
    interrupted: bool = False
    """Stopped before every trial ended (Ctrl-C): `--resume` continues it."""


def connect_ray() -> None:
    """Join the running cluster (a `ray start` head, a Ray job) or start a local Ray."""
    # Tune's TensorBoard logger reports at INFO every config value it cannot chart.
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS", "").strip() != "local":  # Ray's own "a Ray of my own"
        try:
            ray.init(address="auto", log_to_driver=True)
            say(f"connected to Ray cluster: {ray.cluster_resources()}")
            return
        except ConnectionError:
            pass
    # The dashboard serves Ray's State API, which Train's placement-group cleaner polls
    # (without it, it warns every second); it binds to 127.0.0.1.
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", log_to_driver=True)
    say(f"started a local Ray: {ray.cluster_resources()}")


def trials_in_flight(config: StudyConfig, workers: int | None = None) -> int | None:
    """Trials that fit on the cluster at once; `workers`: Train workers of the largest trial.
    None (no cap) when a GPU study starts on a cluster without enough GPUs for one trial yet:
    an autoscaling cluster grows to the pending trials' demand."""
    if config.max_concurrent:
        return config.max_concurrent
    resources = ray.cluster_resources()
    train = config.student_train
    if train.use_gpu:  # the actor placement's teacher server takes one more GPU per trial
        server = 1 if config.kd.teacher_placement == "actor" else 0
        fits = int(resources.get("GPU", 0) // ((workers or train.num_workers) + server))
        return fits or None
    per_trial = train.num_workers * train.cpus_per_worker + DRIVER_CPUS
    return max(1, math.floor(resources.get("CPU", 1) / per_trial + 1e-9))


def in_flight_text(concurrent: int | None) -> str:
    if concurrent is None:
        return "as many at a time as the cluster grows to (no GPU node is up yet)"
    return f"{concurrent} at a time"


class ProgressCallback(tune.Callback):
    """One line per finished trial: trials done / running / queued, and the best so far."""

    def __init__(
        self, total: int, name_of: Callable[[dict], str] | None = None, metric: str = "score"
    ):
        self.total = total
        self.name_of = name_of or (lambda config: config["plan"]["run_name"])
        self.metric = metric
        """The score shown and ranked: a search ranks on validation, keeping test unseen."""
        self.started = time.time()
        self.best: tuple[float, str] | None = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        score = result.get(self.metric) if "score" in result else None
        name = best_name = self.name_of(trial.config)
        if "best_run" in result:  # a packed Train run: its best run is what is ranked
            best_name = trial.config["plan"]["members"][int(result["best_run"])]["run_name"]
        if score is not None and (self.best is None or score > self.best[0]):
            self.best = (score, best_name)
        shown = "val" if self.metric == "val_score" else "score"
        if "runs" in result:  # its runs had their own lines; the best so far follows
            what = f"{name} finished"
        elif score is not None:
            what = f"{name}: {shown} {score:.1f}"
        else:
            what = f"{name}: stopped early"
        self._line(trials, trial, what)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._line(trials, trial, f"{self.name_of(trial.config)}: FAILED")

    def _line(self, trials, ending, what: str) -> None:
        # Counted from the trials' states, so a resumed study counts its earlier trials too;
        # the trial that is ending has not changed state yet.
        others = [t for t in trials if t is not ending]
        done = 1 + sum(t.status in ("TERMINATED", "ERROR") for t in others)
        running = sum(t.status == "RUNNING" for t in others)
        best = f"; best {self.best[0]:.1f} ({self.best[1]})" if self.best else ""
        say(
            f"[{done}/{self.total} done, {running} running, {self.total - done - running} queued, "
            f"{time.time() - self.started:.0f}s] {what}{best}"
        )


@dataclass
class PhaseClock:
    """Wall seconds of a study's phases, for the closing line and StudyOutcome."""

    started: float = dataclasses.field(default_factory=time.time)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)
    last: float = dataclasses.field(default_factory=time.time)

    def done(self, name: str) -> None:
        now = time.time()
        self.phases[name], self.last = now - self.last, now


def failed_trials(client: MlflowClient, experiment_id: str, parent_id: str) -> list[tuple]:
    """(run name, reason) of each failed trial of the study, from its MLflow run."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'FAILED'",
    )
    return [
        (
            r.data.tags.get(RUN_NAME_TAG, r.info.run_id),
            r.data.tags.get(FAILURE_TAG) or r.data.tags.get(DRIVER_LOST_TAG, "unknown"),
        )
        for r in runs
    ]


DRIVER_LOST_TAG = "kdray.driver_lost"
"""On a trial's run that its driver never closed (killed, out of memory, its node lost): why.
Unlike the failure reason a trial records itself, it lets --resume train the run again."""


def close_abandoned_runs(
    client: MlflowClient, experiment_id: str, parent_id: str, errors: list
) -> int:
    """Close FAILED the trial runs still RUNNING once Tune has ended every trial: their driver
    died before it could close them, and the study would otherwise count them neither finished
    nor failed (and exit 0). `errors`: Tune's errors of the failed trials, for the reason.
    Returns how many were closed."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_id}' and {role_is('trial')} "
        "and attributes.status = 'RUNNING'",
    )
    first = next((str(e).strip().splitlines()[0] for e in errors if str(e).strip()), None)
    reason = "its trial's driver ended without closing the run" + (f": {first}" if first else "")
    for run in runs:
        client.set_tag(run.info.run_id, DRIVER_LOST_TAG, reason[:500])
        client.set_terminated(run.info.run_id, RunStatus.to_string(RunStatus.FAILED))
    return len(runs)


def stopped_early(
    client: MlflowClient, parent_id: str, ended: tuple[int, int], planned: int
) -> bool:
    """True when Ctrl-C stopped the Tune experiment before all `planned` trials ended
    (`ended`: the trials that finished and failed; Tune creates trials as slots free up, so
    the grid may hold fewer): the parent run is marked KILLED and the user told how to
    continue."""
    finished, failed = ended
    if finished + failed >= planned:
        return False
    client.set_terminated(parent_id, RunStatus.to_string(RunStatus.KILLED))
    say(
        f"interrupted: {finished} of {planned} trials finished, {failed} "
        "failed; continue with the same command and --resume (finished trials are kept)"
    )
    return True


def tune_counts(grid) -> tuple[int, int]:
    """(TERMINATED, ERROR) trials of a Tune experiment that stops trials early (ASHA): its
    stopped trials are TERMINATED too."""
    return grid.num_terminated, grid.num_errors


def trials_done(grid) -> tuple[int, int]:
    """(finished, failed) trials of a grid's Tune experiment. A trial that Ctrl-C stopped in
    flight is TERMINATED as well, but its last result is not `done`: counting TERMINATED
    would take a study stopped in its last trials (with packed Train runs, in any of them)
    for a finished one."""
    failed = sum(result.error is not None for result in grid)
    finished = sum(result.error is None and bool(result.metrics.get("done")) for result in grid)
    return finished, failed


def deliver_kept_results(outage: StudyOutage, client: MlflowClient) -> None:
    """--resume after a tracking outage: send what the stopped study kept, first."""
    if delivered := outage.deliver_kept(client):
        say(f"delivered the results of {delivered} trials kept while the server was away")


TUNE_PATH_TAG = "kdray.tune_path"
"""Parent-run tag: the study's Tune experiment folder, which --resume restores."""


PLANNED_TRIALS_TAG = "kdray.planned_trials"
"""Parent-run tag: the study's trials (MLflow child runs)."""
PLANNED_TUNE_TRIALS_TAG = "kdray.planned_tune_trials"
"""Parent-run tag: its Tune trials (fewer when a setting's seeds share one)."""


def restored_tuner(path: Path, trainable) -> tune.Tuner | None:
    """The Tune experiment at `path`, restored, or None when there is none to restore.
    Finished trials stay finished and interrupted ones start again; errored ones run again:
    one that failed before fails at once with its reason (kdray.trial.driver), one stopped
    by a tracking outage goes on."""
    if not tune.Tuner.can_restore(path):
        return None
    return tune.Tuner.restore(
        str(path), trainable=trainable, resume_unfinished=True, resume_errored=True
    )
