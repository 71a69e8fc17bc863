"""The Tune trial driver: open the trial's MLflow child run, fit its TorchTrainer, close
the run with the outcome. It asks Tune for a sliver of a CPU; its Train workers take the
real cores."""

from __future__ import annotations

import dataclasses
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import ray.tune
from mlflow.tracking import MlflowClient
from ray.tune.integration.ray_train import TuneReportCallback

from kdray.config.run import flatten
from kdray.config.run_spec import RunSpec
from kdray.errors import TrackingUnreachableError
from kdray.tracking.datasets import log_splits
from kdray.tracking.outage import (
    StudyOutage,
    UnsentOps,
    bound_http_retries,
    wait_for_tracking,
)
from kdray.tracking.runs import PARENT_TAG, ROLE_TAG, RUN_NAME_TAG, RunLogger, package_versions
from kdray.train.loop import FAILURE_KEY, METRICS_FILE, run_output
from kdray.train.run import fit_runs
from kdray.trial.closing import (
    FAILURE_TAG,
    STUDENTS_DIR,
    RunCloser,
    TrialFailedError,
    failure_reason,
    finish_run,
    mark_run_failed,
    run_failure,
)

DRIVER_CPUS = 0.01
DRIVER_RESOURCE_ENV = "KDRAY_DRIVER_RESOURCE"
"""Name of a custom Ray resource that only on-demand nodes carry (clusters/aws.yaml: the
`drivers` group's `kdray_driver`): when set, every trial driver asks for a sliver of it, so
drivers never land on spot GPU nodes."""


def driver_resources() -> dict[str, float]:
    """What one Tune trial driver asks for: 0.01 CPU (+ 0.01 of the driver resource, if set)."""
    resources = {"cpu": DRIVER_CPUS}
    if name := os.environ.get(DRIVER_RESOURCE_ENV):
        resources[name] = 0.01
    return resources


TRIAL_KEY_TAG = "kdray.trial_key"


def open_child_run(client: MlflowClient, study: dict[str, Any], plan: dict[str, Any]):
    """The trial's child run under the study's parent run, found by its trial key: a FINISHED
    one, a FAILED one with its reason, or a new one. A run left unfinished by an interrupted
    attempt (a resumed study, a restarted driver) is deleted and replaced, so each trial has
    exactly one run with one complete curve."""
    existing = client.search_runs(
        [study["experiment_id"]],
        filter_string=(
            f"tags.`{PARENT_TAG}` = '{study['parent_run_id']}' "
            f"and tags.`{TRIAL_KEY_TAG}` = '{plan['key']}'"
        ),
    )
    for run in existing:
        if run.info.status == "FINISHED" or (
            run.info.status == "FAILED" and FAILURE_TAG in run.data.tags
        ):
            return run
        client.delete_run(run.info.run_id)
    run = client.create_run(
        study["experiment_id"],
        run_name=plan["run_name"],
        tags={
            **study.get("tags", {}),
            PARENT_TAG: study["parent_run_id"],
            RUN_NAME_TAG: plan["run_name"],
            TRIAL_KEY_TAG: plan["key"],
            ROLE_TAG: "trial",
            "kdray.study": plan["params"]["study"],
            # a tag as well as a param, so the UI's filter and group-by find the replicate
            "kdray.seed": str(plan["params"].get("seed", "")),
        },
    )
    return run


class TrialReportCallback(TuneReportCallback):
    """Rank 0's reports to Tune, but a failure report (kdray.train.loop.report_failure), which
    carries none of the metrics Tune's scheduler checks for; the trial fails instead."""

    def after_report(self, run_context, metrics, checkpoint):
        if FAILURE_KEY not in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: config = {"plan": one trial plan, "study": shared context}."""
    study, plan = config["study"], config["plan"]
    bound_http_retries()
    outage = StudyOutage(study["storage_path"], study["parent_run_id"])
    try:
        _run_trial(study, plan, outage)
    except TrackingUnreachableError as error:
        outage.record(str(error))  # the study's later trials give up at once
        raise


def trial_members(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The runs of one Tune trial: a plan's `members` (a setting's seeds, trained in turn in
    one Train run: kdray.study.trials.seed_groups), or the plan itself."""
    return plan.get("members", [plan])


def _run_trial(study: dict[str, Any], plan: dict[str, Any], outage: StudyOutage) -> None:
    uri = study["tracking_uri"]
    client = MlflowClient(uri)

    def waiting(what: str, call):
        wait = 0 if outage.happened() else study.get("tracking_wait", 600)
        return wait_for_tracking(call, uri, wait, what)

    members = trial_members(plan)
    runs = [waiting("opening the trial's run", lambda m=m: open_child_run(client, study, m))
            for m in members]  # fmt: skip
    ended = {i: run for i, run in enumerate(runs) if run.info.status in ("FINISHED", "FAILED")}
    failures = [run.data.tags[FAILURE_TAG] for run in ended.values() if run.info.status == "FAILED"]
    todo = [i for i in range(len(members)) if i not in ended]
    if len(members) == 1 and not todo:
        if failures:  # a resumed study: the trial failed before, for this
            raise TrialFailedError(failures[0])
        # Finished before its driver was killed, after Tune last saved its state: report the
        # logged result instead of training again (no second curve in the same run).
        ray.tune.report(dict(runs[0].data.metrics))
        return
    specs, loggers = [], []
    for i in todo:
        run_id = runs[i].info.run_id
        spec = dataclasses.replace(
            RunSpec.from_dict(members[i]["spec"]),
            tracking_uri=uri, run_id=run_id, run_name=members[i]["run_name"],
        )  # fmt: skip
        logger = RunLogger(uri, run_id)
        waiting("logging the trial's config", partial(_log_config, logger, members[i], spec))
        specs.append(spec)
        loggers.append(logger)
    log_all = study.get("log_models") == "all"  # else the search logs its picks, or none
    students = Path(study["storage_path"]) / STUDENTS_DIR
    closer = RunCloser(uri, [spec.run_id for spec in specs], students, log_all)
    try:
        folder = fit_runs(
            specs,
            name=f"trial-{ray.tune.get_context().get_trial_id()}",
            storage_path=Path(study["storage_path"]),
            callbacks=[TrialReportCallback(), closer],
        ) if specs else None  # fmt: skip
    except BaseException as error:
        if train_run_lost(error):  # not the runs' failure: they stay open for --resume
            raise
        reason = failure_reason(error)
        for logger in loggers:
            waiting(
                "marking the trial failed", partial(mark_run_failed, client, logger.run_id, reason)
            )
        raise
    unreachable: TrackingUnreachableError | None = None
    for position, i in enumerate(todo):
        run_id, output = loggers[position].run_id, run_output(folder, position)
        if unreachable is not None:  # the server stayed away: keep the rest without asking it
            _keep_for_resume(outage, members[i], run_id, UnsentOps(output), output)
            continue
        try:
            args = (client, waiting, outage, members[i], run_id, output, students, log_all)
            if reason := _close_open_run(*args):
                failures.append(reason)
        except TrackingUnreachableError as error:
            unreachable = error
    if unreachable is not None:  # one line from the study; --resume delivers what was kept
        raise unreachable
    if len(members) > 1:
        ray.tune.report(group_result(plan, [client.get_run(run.info.run_id) for run in runs]))
    if failures:
        raise TrialFailedError(failures[0])


def train_run_lost(error: BaseException) -> bool:
    """The Train run's controller died under it: Tune tore the trial down (Ctrl-C stops the
    trials in flight, and their Train runs with them) or its node was lost. Its runs are left
    RUNNING: --resume reopens them, and a study that ends without Ctrl-C closes them FAILED
    as abandoned (kdray.study.runtime.close_abandoned_runs), which --resume also trains
    again. A run's own failure (a worker's error after Train's retries) is marked FAILED."""
    from ray.exceptions import RayActorError

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, RayActorError):
            return True
        seen = seen.__cause__
    return False


def _close_open_run(
    client,
    waiting,
    outage: StudyOutage,
    plan: dict,
    run_id: str,
    output: Path,
    students: Path,
    log_model: bool,
) -> str | None:
    """Close a run its Train run left open (RunCloser closes most as they finish): FAILED
    with its reason, which is returned, or FINISHED once what rank 0 could not send during an
    outage is sent and its student recorded (logged as its MLflow model when `log_model`).
    When the server stays away its results are kept on disk for --resume, and
    TrackingUnreachableError is raised."""
    unsent = UnsentOps(output)
    try:
        run = waiting("reading the run's state", partial(client.get_run, run_id))
        if run.info.status == "FAILED":  # closed by the RunCloser
            return run.data.tags.get(FAILURE_TAG, "failed")
        if run.info.status != "RUNNING":
            return None
        if reason := run_failure(output):
            waiting("marking the run failed", partial(mark_run_failed, client, run_id, reason))
            return reason
        waiting(
            "sending the trial's results",
            lambda: (
                unsent.deliver(client, run_id),
                finish_run(client, run_id, output, students, log_model),
            ),
        )
    except TrackingUnreachableError:
        _keep_for_resume(outage, plan, run_id, unsent, output)
        raise
    return None


def _keep_for_resume(
    outage: StudyOutage, plan: dict, run_id: str, unsent: UnsentOps, output: Path
) -> None:
    """A finished run's undelivered ops and metrics, kept while the server is away (`unsent`
    holds only what was not delivered yet). A failed run keeps nothing: it trains again."""
    if (output / METRICS_FILE).is_file():
        outage.keep(plan["key"], run_id, unsent, json.loads((output / METRICS_FILE).read_text()))


def group_result(plan: dict[str, Any], runs) -> dict[str, float]:
    """Tune's result of a trial of several runs: their mean when they are one setting's seeds;
    for a packed Train run (kdray.study.trials.packed_groups) how many runs it trained and
    its best run's score, `best_run` that run's position in the plan's members."""
    if not plan.get("packed"):
        return _mean_metrics(runs)
    metrics = [run.data.metrics for run in runs]
    scored = [(m["score"], i) for i, m in enumerate(metrics) if "score" in m]
    result = {"runs": float(len(runs))}
    if scored:
        score, best = max(scored)
        result.update(score=score, best_run=float(best))
    return result


def _mean_metrics(runs) -> dict[str, float]:
    """Each metric's mean over the runs that logged it."""
    values: dict[str, list[float]] = {}
    for run in runs:
        for key, value in run.data.metrics.items():
            values.setdefault(key, []).append(value)
    return {key: sum(v) / len(v) for key, v in values.items()}


def _log_config(logger: RunLogger, plan: dict[str, Any], spec: RunSpec) -> None:
    """The run's params (tidy schema, resolved config, versions), its config.json, and the
    data it reads as MLflow datasets."""
    log_splits(
        MlflowClient(spec.tracking_uri), logger.run_id, spec.data_dir,
        Path(spec.data_dir).parent.name, spec.train.train_examples, spec.eval.max_items,
    )  # fmt: skip
    logger.log_params(
        {
            **plan["params"],
            **{f"config.{k}": v for k, v in flatten(spec.to_dict()).items()},
            **{f"version.{k}": v for k, v in package_versions().items()},
        }
    )
    logger.set_tags({"ray.trial_id": ray.tune.get_context().get_trial_id()})
    logger.log_json(spec.to_dict(), "config.json")  # the resolved config: the run's record
