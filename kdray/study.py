"""A study: the grid of trials of an ablation, run as a Ray Tune experiment, tracked in
MLflow (one parent run, one child run per trial) and summarised by the analysis package
from the runs read back out of MLflow."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import ray
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from ray import tune

from kdray.cache import is_complete
from kdray.config import flatten, to_dict
from kdray.console import say
from kdray.errors import KdrayError
from kdray.hub_world import HubWorld, build_hub_world
from kdray.hub_zoo import check_pair
from kdray.plan import cache_build_gpus
from kdray.study_config import StudyConfig
from kdray.teacher import (
    PreparedTeacher,
    prepare_teacher,
    prepare_teacher_responses,
    teacher_folder,
)
from kdray.tracking import (
    PARENT_TAG,
    RUN_NAME_TAG,
    RunLogger,
    ensure_experiment,
    missing_sqlite_store,
    package_versions,
    resolve_tracking_uri,
    run_tags,
)
from kdray.tracking_outage import StudyOutage, bound_http_retries
from kdray.trial import DRIVER_CPUS, FAILURE_TAG, driver_resources, run_trial
from kdray.trial_teacher_signals import attach_teacher_signals
from kdray.world.build import World, build_world


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
    try:
        ray.init(address="auto", log_to_driver=True)
        say(f"connected to Ray cluster: {ray.cluster_resources()}")
    except ConnectionError:
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
    """One line per finished trial: trials done / running / left, and the best so far."""

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
        name = self.name_of(trial.config)
        if score is not None and (self.best is None or score > self.best[0]):
            self.best = (score, name)
        shown = "val" if self.metric == "val_score" else "score"
        what = f"{name}: {shown} {score:.1f}" if score is not None else f"{name}: stopped early"
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
            f"[{done}/{self.total} done, {running} running, {self.total - done} left, "
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


@dataclass
class PreparedStudy:
    """A study ready for its trials: parent run open, teachers and caches built."""

    config: StudyConfig
    client: MlflowClient
    tracking_uri: str
    experiment_id: str
    parent_id: str
    tags: dict[str, str]
    storage: Path
    """Ray results folder of the study's Tune experiments."""
    plans: list[dict]
    """The grid's trial plans, specs as dicts with teachers and signals attached."""
    clock: PhaseClock

    def context(self) -> dict:
        """What every trial driver needs to write to the study's runs."""
        return {
            "tracking_uri": self.tracking_uri,
            "experiment_id": self.experiment_id,
            "parent_run_id": self.parent_id,
            "storage_path": str(self.storage),
            "tags": self.tags,
            "tracking_wait": self.config.tracking_wait,
        }


def run_study(config: StudyConfig) -> StudyOutcome:
    """Run a study's grid as one Tune experiment (or --resume an interrupted one)."""
    bound_http_retries()  # an unreachable tracking server is noticed in seconds
    if config.resume:  # before anything is built or written: a wrong --resume costs nothing
        return _resume_study(config, resolve_tracking_uri(config.tracking_uri))
    study = prepare_study(config)
    plans = study.plans
    try:
        concurrent = trials_in_flight(config, max(p["spec"]["train"]["num_workers"] for p in plans))
        say(f"running {len(plans)} trials, {in_flight_text(concurrent)}")
        name = f"{config.name}-{study.parent_id[:8]}"
        tuner = tune.Tuner(
            tune.with_resources(run_trial, driver_resources()),
            param_space={"plan": tune.grid_search(plans), "study": study.context()},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(
                name=name,
                storage_path=str(study.storage),
                verbose=0,
                callbacks=[ProgressCallback(len(plans))],
            ),
        )
        study.client.set_tag(study.parent_id, TUNE_PATH_TAG, str(study.storage / name))
        study.client.set_tag(study.parent_id, PLANNED_TRIALS_TAG, str(len(plans)))
    except BaseException:
        study.client.set_terminated(study.parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    return _fit_and_summarise(
        config, tuner, study.tracking_uri, study.parent_id, study.storage, study.clock
    )


def prepare_study(config: StudyConfig) -> PreparedStudy:
    """World, parent run, teachers, seqkd responses and teacher caches: everything the trials
    share, built (or reused from the cache) once before any trial starts."""
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    cache_root = config.cache_root()
    clock = PhaseClock()

    world = _world(config, cache_root)
    clock.done("world")

    notes = []
    for teacher_name, student in config.teacher_student_pairs():
        for note in check_pair(world.built_model(teacher_name), world.built_model(student)):
            say(f"note: {note}")
            notes.append(note)

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, config.experiment_name, tracking_uri)
    tags = run_tags(config.preset, config.domain, config.name)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parent = client.create_run(
        experiment_id,
        run_name=f"{config.name} {stamp}",
        tags={
            **tags,
            "kdray.role": "study",
            RUN_NAME_TAG: f"{config.name} {stamp}",
        },
    )
    parent_id = parent.info.run_id
    parent_log = RunLogger(tracking_uri, parent_id)
    sizes = world.parameter_counts()
    single = config.teachers()[0] if len(config.teachers()) == 1 else None
    parent_log.log_params(
        {
            **flatten(to_dict(config), "config."),
            **{f"version.{k}": v for k, v in package_versions().items()},
            "study": config.name,
            "teacher": ",".join(config.teachers()),
            "teacher_params_b": sizes[single] / 1e9 if single else "",
            "domain": config.domain,
            "family": config.family,
            "teacher_kind": config.teacher_kind,
            "tasks": ",".join(world.tasks()),
            "world": world.key,
            "pair_notes": " | ".join(notes)[:500],
        }
    )
    say(f"MLflow: {tracking_uri}, experiment {config.experiment_name!r}, parent run {parent_id}")
    try:
        connect_ray()
        storage = cache_root / "ray_results"
        plans = config.trial_plans(world)  # before teachers: a pair that cannot fit fails now
        teachers: dict[tuple[str, str], PreparedTeacher] = {}
        for kind in config.teacher_kinds:
            for name in config.teachers():
                teacher = _teacher(
                    config, world, name, kind, storage, client, experiment_id, tracking_uri,
                    parent_id,
                )  # fmt: skip
                teachers[name, kind] = teacher
                label = name if len(config.teachers()) > 1 else None
                if len(config.teacher_kinds) > 1:
                    label = f"{name}/{kind}"
                _log_teacher(parent_log, teacher, label)
                metric = "ROUGE-L" if config.domain == "instruction" else "accuracy"
                say(f"{kind} teacher {name}: test {metric} {teacher.metrics['score']:.1f}")
        clock.done("teachers")
        responses = {}
        count = config.student_train.train_examples
        for name, kind in {
            (p["teacher"], p["teacher_kind"]) for p in plans if p["spec"].kd.method == "seqkd"
        }:
            file, built = prepare_teacher_responses(
                teachers[name, kind], world, count, config.eval, config.student_train.use_gpu
            )
            responses[name, kind] = str(file)
            say(f"{name}'s responses for seqkd {'generated' if built else 'reused'}: {file}")
        for plan in plans:
            # An sft student is compared with the study's (first kind of) teacher when there
            # is just one teacher.
            kind = plan["teacher_kind"] or config.teacher_kinds[0]
            teacher = teachers.get((plan["teacher"] or single, kind))
            plan["spec"] = dataclasses.replace(
                plan["spec"],
                teacher_dir=str(teacher.folder) if plan["teacher"] else None,
                teacher_predictions=str(teacher.predictions_file) if teacher else None,
                teacher_responses=responses.get((plan["teacher"], plan["teacher_kind"])),
            )
        attach_teacher_signals(
            plans, cache_root, say, lambda teacher: cache_build_gpus(config, teacher)
        )
        clock.done("teacher_signals")
        for plan in plans:
            plan["spec"] = plan["spec"].to_dict()
    except BaseException:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    study = PreparedStudy(
        config, client, tracking_uri, experiment_id, parent_id, tags, storage, plans, clock
    )
    return study


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
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    clock.done("trials")
    if (outage := StudyOutage(storage, parent_id)).happened():
        raise outage.stopped()
    parent = client.get_run(parent_id)
    trials = int(parent.data.tags[PLANNED_TRIALS_TAG])
    failed, finished = grid.num_errors, grid.num_terminated
    experiment_id = parent.info.experiment_id
    results_dir = Path(config.results_dir)
    if stopped_early(client, parent_id, grid, trials):
        return StudyOutcome(
            tracking_uri, experiment_id, parent_id, trials, failed, results_dir, clock.phases, True
        )
    status = RunStatus.FINISHED if failed == 0 else RunStatus.FAILED
    RunLogger(tracking_uri, parent_id).log_metrics({"trials": trials, "failed_trials": failed})
    client.set_terminated(parent_id, RunStatus.to_string(status))
    write_study_summary(tracking_uri, parent_id, results_dir)
    clock.done("summary")
    elapsed = time.time() - clock.started
    timing = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in clock.phases.items())
    say(f"done in {elapsed:.0f}s ({timing}): {finished} trials finished, {failed} failed")
    for name, reason in failed_trials(client, experiment_id, parent_id):
        say(f"FAILED {name}: {reason}")
    return StudyOutcome(
        tracking_uri, experiment_id, parent_id, trials, failed, results_dir, clock.phases
    )


def failed_trials(client: MlflowClient, experiment_id: str, parent_id: str) -> list[tuple]:
    """(run name, reason) of each failed trial of the study, from its MLflow run."""
    runs = client.search_runs(
        [experiment_id],
        f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'FAILED'",
    )
    return [
        (r.data.tags.get(RUN_NAME_TAG, r.info.run_id), r.data.tags.get(FAILURE_TAG, "unknown"))
        for r in runs
    ]


def stopped_early(client: MlflowClient, parent_id: str, grid, planned: int) -> bool:
    """True when Ctrl-C stopped the Tune experiment before all `planned` trials ended (Tune
    creates trials as slots free up, so the grid may hold fewer): the parent run is marked
    KILLED and the user told how to continue."""
    if grid.num_terminated + grid.num_errors >= planned:
        return False
    client.set_terminated(parent_id, RunStatus.to_string(RunStatus.KILLED))
    say(
        f"interrupted: {grid.num_terminated} of {planned} trials finished, {grid.num_errors} "
        "failed; continue with the same command and --resume (finished trials are kept)"
    )
    return True


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
    tuner = tune.Tuner.restore(
        path,
        trainable=tune.with_resources(run_trial, driver_resources()),
        resume_unfinished=True,
        # Errored trials run again: one that failed before fails at once with its reason
        # (kdray.trial), one stopped by a tracking outage goes on.
        resume_errored=True,
    )
    return _fit_and_summarise(config, tuner, tracking_uri, parent_id, storage, PhaseClock())


def deliver_kept_results(outage: StudyOutage, client: MlflowClient) -> None:
    """--resume after a tracking outage: send what the stopped study kept, first."""
    if delivered := outage.deliver_kept(client):
        say(f"delivered the results of {delivered} trials kept while the server was away")


def find_unfinished_study(config: StudyConfig, uri: str):
    """The latest parent run of this study in its experiment that did not finish."""
    # Opening a SQLite store creates it: a store that does not exist has nothing to resume.
    missing = missing_sqlite_store(uri)
    client = None if missing else MlflowClient(uri)
    experiment = None if missing else client.get_experiment_by_name(config.experiment_name)
    runs = []
    if experiment is not None:
        runs = client.search_runs(
            [experiment.experiment_id],
            filter_string=f"tags.`kdray.role` = 'study' and tags.`kdray.study` = '{config.name}'",
            order_by=["attributes.start_time DESC"],
            max_results=50,
        )
    # A study whose trials all ended logged `trials`; one that stopped early did not.
    unfinished = [r for r in runs if "trials" not in r.data.metrics]
    if not unfinished:
        raise KdrayError(
            f"no unfinished run of study {config.name!r} in experiment "
            f"{config.experiment_name!r} at {uri}: nothing to "
            "resume; run the study without --resume (or pass its --experiment/--tracking-uri)"
        )
    return unfinished[0]


def _world(config: StudyConfig, cache_root: Path) -> World | HubWorld:
    if config.zoo == "hub":
        source = config.data_dir or "the Hugging Face hub"
        say(f"preparing the {config.domain} data from {source} (cached)")
        world, built = build_hub_world(
            config.domain,
            cache_root,
            config.data_dir,
            config.validation_items or 500,
            config.student_train.seed,
        )
        say(f"{config.domain} data {'built' if built else 'reused'}: {world.root}")
        return world
    world, built = build_world(config.world, cache_root, config.family)
    state = "built" if built else "reused"
    say(f"tiny {config.domain} world, {config.family} family {state}: {world.root}")
    return world


TUNE_PATH_TAG = "kdray.tune_path"
"""Parent-run tag: the study's Tune experiment folder, which --resume restores."""
PLANNED_TRIALS_TAG = "kdray.planned_trials"
TEACHER_SCORES = ("score", "accuracy", "rouge_l", "val_accuracy", "val_rouge_l")


def _log_teacher(logger: RunLogger, teacher: PreparedTeacher, name: str | None) -> None:
    """The teacher's scores on the parent run: `teacher_<metric>` for a study's single teacher,
    `teachers/<name>/<metric>` when it has several, `teachers/<name>/<kind>/<metric>` when the
    study compares teacher kinds (analysis.loader reads all three)."""
    prefix = f"teachers/{name}/" if name else "teacher_"
    metrics = teacher.metrics
    logger.log_metrics(
        {
            f"{prefix}{k}": v
            for k, v in metrics.items()
            if k in TEACHER_SCORES or k.startswith("score/")
        }
    )
    logger.log_file(teacher.predictions_file, f"teachers/{teacher.name}" if name else "teacher")


def _teacher(
    config: StudyConfig,
    world: World | HubWorld,
    name: str,
    kind: str,
    storage: Path,
    client: MlflowClient,
    experiment_id: str,
    tracking_uri: str,
    parent_id: str,
) -> PreparedTeacher:
    train = config.teacher_train
    if config.zoo == "hub":  # the teacher's SFT sized like a student's (kdray.plan)
        from kdray.plan import layout_needed

        layout = layout_needed(config, name, None)
        train = dataclasses.replace(train, num_workers=layout.gpus, zero_stage=layout.zero_stage)
    folder = teacher_folder(world, name, kind, train, config.eval)
    run_id = None
    if not is_complete(folder):
        what = f"{train.steps} SFT steps" if train.epochs is None else f"{train.epochs:g} epochs"
        if kind == "task-unaware":
            what = "the base model, evaluated only"
        say(f"preparing the {kind} teacher {name} ({what}; cached for later studies)")
        run = client.create_run(
            experiment_id,
            run_name=f"teacher {name} ({kind})",
            tags={
                **run_tags(config.preset, config.domain, config.name),
                "kdray.role": "teacher",
                "kdray.study_parent": parent_id,
            },
        )
        run_id = run.info.run_id
        RunLogger(tracking_uri, run_id).log_params(
            {"model": name, "teacher_kind": kind, **flatten(to_dict(train), "train.")}
        )
    try:
        teacher = prepare_teacher(
            world, name, kind, train, config.eval, storage, tracking_uri, run_id
        )
    except BaseException:
        if run_id:
            client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    if run_id:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    else:
        say(f"teacher {name} reused from cache: {teacher.folder}")
    return teacher


__all__ = ["StudyConfig", "StudyOutcome", "run_study"]
