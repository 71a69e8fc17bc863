"""A study: the grid of trials of an ablation, run as a Ray Tune experiment, tracked in
MLflow (one parent run, one child run per trial) and summarised by the analysis package
from the runs read back out of MLflow."""

from __future__ import annotations

import time
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from kdray.console import say
from kdray.errors import KdrayError
from kdray.study.config import StudyConfig
from kdray.study.prepare import prepare_study
from kdray.study.resume import find_unfinished_study
from kdray.study.runtime import (
    PLANNED_TRIALS_TAG,
    PLANNED_TUNE_TRIALS_TAG,
    TUNE_PATH_TAG,
    PhaseClock,
    ProgressCallback,
    StudyOutcome,
    close_abandoned_runs,
    connect_ray,
    deliver_kept_results,
    failed_trials,
    in_flight_text,
    restored_tuner,
    stopped_early,
    trials_done,
    trials_in_flight,
)
from kdray.study.trials import longest_first, packed_groups, seed_groups
from kdray.tracking.outage import StudyOutage, bound_http_retries
from kdray.tracking.runs import (
    RunLogger,
    mark_failed,
    resolve_tracking_uri,
)
from kdray.trial.driver import driver_resources, run_trial


def run_study(config: StudyConfig) -> StudyOutcome:
    """Run a study's grid as one Tune experiment (or --resume an interrupted one)."""
    bound_http_retries()  # an unreachable tracking server is noticed in seconds
    if config.resume:  # before anything is built or written: a wrong --resume costs nothing
        return _resume_study(config, resolve_tracking_uri(config.tracking_uri))
    study = prepare_study(config)
    plans = study.plans
    try:
        concurrent = trials_in_flight(config, max(p["spec"]["train"]["num_workers"] for p in plans))
        trials = longest_first(tune_trials(config, plans, concurrent))
        say(f"running {len(plans)} trials{_grouping(plans, trials)}, {in_flight_text(concurrent)}")
        name = f"{config.name}-{study.parent_id[:8]}"
        tuner = tune.Tuner(
            tune.with_resources(run_trial, driver_resources()),
            param_space={
                "plan": tune.grid_search(trials),
                "study": study.context(),
            },
            # A finished trial's driver process takes the next trial: no new process, no
            # second import of torch, transformers and MLflow per trial.
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent, reuse_actors=True),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(study.storage),
                verbose=0,
                callbacks=[ProgressCallback(len(trials))],
            ),
        )
        study.client.set_tag(study.parent_id, TUNE_PATH_TAG, str(study.storage / name))
        study.client.set_tag(study.parent_id, PLANNED_TRIALS_TAG, str(len(plans)))
        study.client.set_tag(study.parent_id, PLANNED_TUNE_TRIALS_TAG, str(len(trials)))
    except BaseException:
        mark_failed(study.client, study.parent_id)
        raise
    return _fit_and_summarise(
        config, tuner, study.tracking_uri, study.parent_id, study.storage, study.clock
    )


def _fit_and_summarise(
    config: StudyConfig,
    tuner: tune.Tuner,
    tracking_uri: str,
    parent_id: str,
    storage: Path,
    clock: PhaseClock,
) -> StudyOutcome:
    """Run (or continue) the study's Tune experiment, close the parent run, write the summary.
    An interrupted study (Ctrl-C) keeps its parent run open for --resume, and so does one
    whose tracking server stayed away (its trials' results kept on disk)."""
    from analysis.report import write_study_summary  # analysis reads runs back from MLflow

    client = MlflowClient(tracking_uri)
    try:
        grid = tuner.fit()
    except BaseException:
        mark_failed(client, parent_id)
        raise
    clock.done("trials")
    if (outage := StudyOutage(storage, parent_id)).happened():
        raise outage.stopped()
    parent = client.get_run(parent_id)
    trials = int(parent.data.tags[PLANNED_TRIALS_TAG])
    tune_trials = int(parent.data.tags.get(PLANNED_TUNE_TRIALS_TAG, trials))
    experiment_id = parent.info.experiment_id
    results_dir = Path(config.results_dir)
    if stopped_early(client, parent_id, trials_done(grid), tune_trials):
        failed = len(failed_trials(client, experiment_id, parent_id))
        return StudyOutcome(
            tracking_uri, experiment_id, parent_id, trials, failed, results_dir, clock.phases, True
        )
    close_abandoned_runs(client, experiment_id, parent_id, grid.errors)
    failures = failed_trials(client, experiment_id, parent_id)  # runs, not Tune trials
    failed = len(failures)
    status = RunStatus.FINISHED if failed == 0 else RunStatus.FAILED
    RunLogger(tracking_uri, parent_id).log_metrics({"trials": trials, "failed_trials": failed})
    client.set_terminated(parent_id, RunStatus.to_string(status))
    if failed < trials:
        write_study_summary(tracking_uri, parent_id, results_dir)
    else:
        say("no trial finished: no results table")
    clock.done("summary")
    elapsed = time.time() - clock.started
    timing = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in clock.phases.items())
    say(f"done in {elapsed:.0f}s ({timing}): {trials - failed} trials finished, {failed} failed")
    for name, reason in failures:
        say(f"FAILED {name}: {reason}")
    return StudyOutcome(
        tracking_uri, experiment_id, parent_id, trials, failed, results_dir, clock.phases
    )


def tune_trials(config: StudyConfig, plans: list[dict], concurrent: int | None) -> list[dict]:
    """The Tune trials of the grid, one Train run each, as config.train_runs asks: `packed`
    packs CPU students' runs into the `concurrent` Train runs that run at once (on GPUs a
    run is long enough that a Train run's fixed cost does not matter, and a packed one would
    copy every finished student into each checkpoint: it is `setting` there)."""
    packable = concurrent is not None and not config.student_train.use_gpu
    if config.train_runs == "packed" and packable:
        return packed_groups(plans, concurrent)
    if config.train_runs == "run":
        return plans
    return seed_groups(plans)


def _grouping(plans: list[dict], trials: list[dict]) -> str:
    """How the trials share Train runs, for the opening line."""
    if len(trials) == len(plans):
        return ""
    if not trials[0].get("packed"):
        return f" as {len(trials)} Ray Train runs (a setting's seeds in turn in one)"
    runs = "Ray Train run" if len(trials) == 1 else "Ray Train runs"
    return f" as {len(trials)} {runs}, each training its share in turn"


def _resume_study(config: StudyConfig, tracking_uri: str) -> StudyOutcome:
    """Continue the latest unfinished run of `config.name` in its experiment: Tune restores
    the experiment (finished trials stay finished, interrupted ones start again) and the
    trials write to the same parent run."""
    parent = find_unfinished_study(config, tracking_uri)
    client = MlflowClient(tracking_uri)
    parent_id = parent.info.run_id
    path = parent.data.tags.get(TUNE_PATH_TAG)
    if not path or not tune.Tuner.can_restore(path):
        raise KdrayError(
            f"study run {parent_id} was interrupted before its trials started: run the study "
            "again without --resume (its world, teachers and caches are reused)"
        )
    say(f"resuming study run {parent_id} ({parent.info.run_name}) from {path}")
    storage = Path(path).parent
    deliver_kept_results(StudyOutage(storage, parent_id), client)
    connect_ray()
    client.update_run(parent_id, status=RunStatus.to_string(RunStatus.RUNNING))
    tuner = restored_tuner(Path(path), tune.with_resources(run_trial, driver_resources()))
    return _fit_and_summarise(config, tuner, tracking_uri, parent_id, storage, PhaseClock())


__all__ = ["StudyConfig", "StudyOutcome", "run_study"]
