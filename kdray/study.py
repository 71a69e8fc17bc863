"""A study: the grid of trials of an ablation, run as a Ray Tune experiment, tracked in
MLflow (one parent run, one child run per trial) and summarised by the analysis package
from the runs read back out of MLflow."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
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
    RUN_NAME_TAG,
    RunLogger,
    ensure_experiment,
    package_versions,
    resolve_tracking_uri,
)
from kdray.trial import DRIVER_CPUS, run_trial
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


def connect_ray() -> None:
    """Join the running cluster (a `ray start` head, a Ray job) or start a local Ray."""
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


def trials_in_flight(config: StudyConfig, workers: int | None = None) -> int:
    """Trials that fit on the cluster at once; `workers`: Train workers of the largest trial."""
    if config.max_concurrent:
        return config.max_concurrent
    resources = ray.cluster_resources()
    train = config.student_train
    if train.use_gpu:  # the actor placement's teacher server takes one more GPU per trial
        server = 1 if config.kd.teacher_placement == "actor" else 0
        return max(1, int(resources.get("GPU", 0) // ((workers or train.num_workers) + server)))
    per_trial = train.num_workers * train.cpus_per_worker + DRIVER_CPUS
    return max(1, math.floor(resources.get("CPU", 1) / per_trial + 1e-9))


class ProgressCallback(tune.Callback):
    """One line per finished trial: trials done / running / left, and the best so far."""

    def __init__(self, total: int):
        self.total, self.done, self.failed, self.started = total, 0, 0, time.time()
        self.best: tuple[float, str] | None = None

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.done += 1
        score = (trial.last_result or {}).get("score")
        name = trial.config["plan"]["run_name"]
        if score is not None and (self.best is None or score > self.best[0]):
            self.best = (score, name)
        self._line(trials, f"{name}: score {score:.1f}" if score is not None else name)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.done += 1
        self.failed += 1
        self._line(trials, f"{trial.config['plan']['run_name']}: FAILED")

    def _line(self, trials, what: str) -> None:
        running = sum(t.status == "RUNNING" for t in trials)
        best = f"; best {self.best[0]:.1f} ({self.best[1]})" if self.best else ""
        say(
            f"[{self.done}/{self.total} done, {running} running, {self.total - self.done} left, "
            f"{time.time() - self.started:.0f}s] {what}{best}"
        )


def run_study(config: StudyConfig) -> StudyOutcome:
    from analysis.report import write_study_summary  # analysis reads runs back from MLflow

    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    cache_root = config.cache_root()
    started = time.time()

    phases: dict[str, float] = {}
    clock = [time.time()]

    def phase_done(name: str) -> None:
        now = time.time()
        phases[name] = now - clock[0]
        clock[0] = now

    world = _world(config, cache_root)
    phase_done("world")

    notes = []
    for teacher_name, student in config.teacher_student_pairs():
        for note in check_pair(world.built_model(teacher_name), world.built_model(student)):
            say(f"note: {note}")
            notes.append(note)

    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, config.experiment_name, tracking_uri)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parent = client.create_run(
        experiment_id,
        run_name=f"{config.name} {stamp}",
        tags={
            "kdray.role": "study",
            "kdray.study": config.name,
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
        teachers = {}
        for name in config.teachers():
            teacher = _teacher(
                config, world, name, storage, client, experiment_id, tracking_uri, parent_id
            )
            teachers[name] = teacher
            _log_teacher(parent_log, teacher, None if single else name)
            metric = "ROUGE-L" if config.domain == "instruction" else "accuracy"
            say(
                f"{config.teacher_kind} teacher {name}: test {metric} "
                f"{teacher.metrics['score']:.1f}"
            )
        phase_done("teachers")
        responses = {}
        count = config.student_train.train_examples
        for name in {p["teacher"] for p in plans if p["spec"].kd.method == "seqkd"}:
            file, built = prepare_teacher_responses(
                teachers[name], world, count, config.eval, config.student_train.use_gpu
            )
            responses[name] = str(file)
            say(f"{name}'s responses for seqkd {'generated' if built else 'reused'}: {file}")
        for plan in plans:
            # An sft student is compared with the study's teacher when there is just one.
            teacher = teachers.get(plan["teacher"] or single)
            plan["spec"] = dataclasses.replace(
                plan["spec"],
                teacher_dir=str(teacher.folder) if plan["teacher"] else None,
                teacher_predictions=str(teacher.predictions_file) if teacher else None,
                teacher_responses=responses.get(plan["teacher"]),
            )
        attach_teacher_signals(
            plans, cache_root, say, lambda teacher: cache_build_gpus(config, teacher)
        )
        phase_done("teacher_signals")
        for plan in plans:
            plan["spec"] = plan["spec"].to_dict()
        # Tune's TensorBoard logger reports at INFO every config value it cannot chart.
        logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
        concurrent = trials_in_flight(config, max(p["spec"]["train"]["num_workers"] for p in plans))
        say(f"running {len(plans)} trials, {concurrent} at a time")
        tuner = tune.Tuner(
            tune.with_resources(run_trial, {"cpu": DRIVER_CPUS}),
            param_space={
                "plan": tune.grid_search(plans),
                "study": {
                    "tracking_uri": tracking_uri,
                    "experiment_id": experiment_id,
                    "parent_run_id": parent_id,
                    "storage_path": str(storage),
                },
            },
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(
                name=f"{config.name}-{parent_id[:8]}",
                storage_path=str(storage),
                verbose=0,
                callbacks=[ProgressCallback(len(plans))],
            ),
        )
        grid = tuner.fit()
        failed = sum(result.error is not None for result in grid)
        phase_done("trials")
    except BaseException:
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.FAILED))
        raise
    status = RunStatus.FINISHED if failed == 0 else RunStatus.FAILED
    parent_log.log_metrics({"trials": len(plans), "failed_trials": failed})
    client.set_terminated(parent_id, RunStatus.to_string(status))

    results_dir = Path(config.results_dir)
    write_study_summary(tracking_uri, parent_id, results_dir)
    phase_done("summary")
    elapsed = time.time() - started
    timing = ", ".join(f"{name} {seconds:.0f}s" for name, seconds in phases.items())
    finished = len(plans) - failed
    say(f"done in {elapsed:.0f}s ({timing}): {finished} trials finished, {failed} failed")
    return StudyOutcome(
        tracking_uri, experiment_id, parent_id, len(plans), failed, results_dir, phases
    )


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


TEACHER_SCORES = ("score", "accuracy", "rouge_l", "val_accuracy", "val_rouge_l")


def _log_teacher(logger: RunLogger, teacher: PreparedTeacher, name: str | None) -> None:
    """The teacher's scores on the parent run: `teacher_<metric>` for a study's single teacher,
    `teachers/<name>/<metric>` when it has several (analysis.loader reads both)."""
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
    storage: Path,
    client: MlflowClient,
    experiment_id: str,
    tracking_uri: str,
    parent_id: str,
) -> PreparedTeacher:
    kind = config.teacher_kind
    train = config.teacher_train
    if config.zoo == "hub":  # the teacher's SFT sized like a student's (kdray.plan)
        from kdray.plan import gpus_needed

        gpus = gpus_needed(config, name, None)
        train = dataclasses.replace(
            train, num_workers=gpus, zero_stage=3 if gpus > 1 else train.zero_stage
        )
    folder = teacher_folder(world, name, kind, train, config.eval)
    run_id = None
    if not is_complete(folder):
        what = f"{train.steps} SFT steps" if train.epochs is None else f"{train.epochs:g} epochs"
        if kind == "task-unaware":
            what = "the base model, evaluated only"
        say(f"preparing the {kind} teacher {name} ({what}; cached for later studies)")
        run = client.create_run(
            experiment_id,
            run_name=f"teacher {name}",
            tags={"kdray.role": "teacher", "kdray.study_parent": parent_id},
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
