"""Everything a study's trials share, built once before any trial starts: the world, the parent
run, the teachers, seqkd responses and teacher caches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from kdray.cache import is_complete
from kdray.config.run import TrainConfig, flatten, to_dict
from kdray.console import say
from kdray.hub.world import HubWorld, build_hub_world
from kdray.hub.zoo import check_pair
from kdray.study.bases import init_dir, prepare_bases
from kdray.study.config import StudyConfig
from kdray.study.plan import cache_build_gpus, layout_needed
from kdray.study.preflight import hub_data_spec
from kdray.study.runtime import PhaseClock, connect_ray
from kdray.study.side_runs import TeacherRuns
from kdray.study.teacher_signals import attach_teacher_signals
from kdray.study.teachers import (
    PreparedTeacher,
    prepare_teacher,
    prepare_teacher_responses,
    teacher_folder,
)
from kdray.study.trials import trial_plans
from kdray.tracking.datasets import log_splits
from kdray.tracking.runs import (
    ROLE_TAG,
    RUN_NAME_TAG,
    RunLogger,
    ensure_experiment,
    mark_failed,
    package_versions,
    resolve_tracking_uri,
    run_tags,
)
from kdray.world.build import World, build_world


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
            "log_models": self.config.log_models,
        }


def prepare_study(config: StudyConfig) -> PreparedStudy:
    """World, parent run, teachers, seqkd responses and teacher caches: everything the trials
    share, built (or reused from the cache) once before any trial starts."""
    tracking_uri = resolve_tracking_uri(config.tracking_uri)
    cache_root = config.cache_root()
    clock = PhaseClock()

    world = _world(config, cache_root)
    clock.done("world")
    notes = pair_notes(config, world)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, config.experiment_name, tracking_uri)
    tags = run_tags(config.preset, config.domain, config.name)
    parent_id = open_parent_run(client, experiment_id, config, tags)
    parent_log = RunLogger(tracking_uri, parent_id)
    parent_log.log_params(parent_params(config, world, notes))
    log_splits(client, parent_id, str(world.data_dir), world.root.name)  # the study's data
    say(f"MLflow: {tracking_uri}, experiment {config.experiment_name!r}, parent run {parent_id}")
    try:
        connect_ray()
        storage = cache_root / "ray_results"
        plans = trial_plans(config, world)  # before teachers: a pair that cannot fit fails now
        run = TeacherRuns(client, experiment_id, tracking_uri, parent_id)
        prepare_bases(config, world, run)
        clock.done("bases")
        teachers = prepare_teachers(config, world, storage, run, parent_log)
        clock.done("teachers")
        responses = seqkd_responses(config, world, plans, teachers)
        attach_teachers(config, plans, teachers, responses)
        attach_teacher_signals(
            plans, cache_root, say, lambda teacher: cache_build_gpus(config, teacher)
        )
        clock.done("teacher_signals")
        for plan in plans:
            plan["spec"] = plan["spec"].to_dict()
    except BaseException:
        mark_failed(client, parent_id)
        raise
    return PreparedStudy(
        config, client, tracking_uri, experiment_id, parent_id, tags, storage, plans, clock
    )


def pair_notes(config: StudyConfig, world: World | HubWorld) -> list[str]:
    """What the pair rules note of each teacher-student pair (printed and logged)."""
    notes = []
    for teacher_name, student in config.teacher_student_pairs():
        for note in check_pair(world.built_model(teacher_name), world.built_model(student)):
            say(f"note: {note}")
            notes.append(note)
    return notes


def open_parent_run(
    client: MlflowClient, experiment_id: str, config: StudyConfig, tags: dict[str, str]
) -> str:
    """The study's parent run (its trials are its children), named by study and start time."""
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    parent = client.create_run(
        experiment_id,
        run_name=f"{config.name} {stamp}",
        tags={**tags, ROLE_TAG: "study", RUN_NAME_TAG: f"{config.name} {stamp}"},
    )
    return parent.info.run_id


def parent_params(config: StudyConfig, world: World | HubWorld, notes: list[str]) -> dict:
    """The parent run's params: the whole config, package versions and the study's identity."""
    sizes = world.parameter_counts()
    single = config.teachers()[0] if len(config.teachers()) == 1 else None
    return {
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


def prepare_teachers(
    config: StudyConfig,
    world: World | HubWorld,
    storage: Path,
    runs: TeacherRuns,
    parent_log: RunLogger,
) -> dict[tuple[str, str], PreparedTeacher]:
    """Each (teacher, kind) of the study prepared or reused, its scores on the parent run."""
    teachers: dict[tuple[str, str], PreparedTeacher] = {}
    for kind in config.teacher_kinds:
        for name in config.teachers():
            teacher = _teacher(config, world, name, kind, storage, runs)
            teachers[name, kind] = teacher
            label = name if len(config.teachers()) > 1 else None
            if len(config.teacher_kinds) > 1:
                label = f"{name}/{kind}"
            _log_teacher(parent_log, teacher, label)
            metric = "ROUGE-L" if config.domain == "instruction" else "accuracy"
            say(f"{kind} teacher {name}: test {metric} {teacher.metrics['score']:.1f}")
    return teachers


def seqkd_responses(
    config: StudyConfig,
    world: World | HubWorld,
    plans: list[dict],
    teachers: dict[tuple[str, str], PreparedTeacher],
) -> dict[tuple[str, str], str]:
    """The responses file of each teacher that a seqkd trial trains on (generated once)."""
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
    return responses


def attach_teachers(
    config: StudyConfig,
    plans: list[dict],
    teachers: dict[tuple[str, str], PreparedTeacher],
    responses: dict[tuple[str, str], str],
) -> None:
    """Each trial's spec gets its teacher's folder, test predictions and seqkd responses."""
    single = config.teachers()[0] if len(config.teachers()) == 1 else None
    for plan in plans:
        # An sft student is compared with the study's (first kind of) teacher when there
        # is just one teacher.
        kind = plan["teacher_kind"] or config.teacher_kinds[0]
        teacher = teachers.get((plan["teacher"] or single, kind))
        plan["spec"] = dataclasses.replace(
            plan["spec"],
            teacher_dir=str(teacher.folder) if plan["teacher"] else None,
            teacher_predictions=str(teacher.predictions_file) if teacher else None,
            eval_teacher_dir=str(teacher.folder) if teacher else None,
            teacher_responses=responses.get((plan["teacher"], plan["teacher_kind"])),
        )


def _world(config: StudyConfig, cache_root: Path) -> World | HubWorld:
    """The study's world: hub data or the tiny world of its family, built or reused."""
    if config.zoo == "hub":
        source = config.data_dir or "the Hugging Face hub"
        say(f"preparing the {config.domain} data from {source} (cached)")
        world, built = build_hub_world(hub_data_spec(config), cache_root)
        say(f"{config.domain} data {'built' if built else 'reused'}: {world.root}")
        return world
    world, built = build_world(config.world, cache_root, config.family)
    state = "built" if built else "reused"
    say(f"tiny {config.domain} world, {config.family} family {state}: {world.root}")
    return world


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
    runs: TeacherRuns,
) -> PreparedTeacher:
    """One teacher prepared (tracked as its own MLflow run) or reused from the cache."""
    train = config.teacher_train
    if config.zoo == "hub":  # the teacher's SFT sized like a student's (kdray.study.plan)
        layout = layout_needed(config, name, None)
        train = dataclasses.replace(train, num_workers=layout.gpus, zero_stage=layout.zero_stage)
    start = init_dir(config, world, name, train.seed, teacher=True)
    start = None if start == str(world.model_dir(name)) else start
    folder = teacher_folder(world, name, kind, train, config.eval, start)
    run_id = None
    if not is_complete(folder):
        run_id = open_teacher_run(config, name, kind, train, runs)
    try:
        teacher = prepare_teacher(
            world, name, kind, train, config.eval, storage, runs.tracking_uri, run_id, start
        )
    except BaseException:
        if run_id:
            mark_failed(runs.client, run_id)
        raise
    if run_id:
        runs.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    else:
        say(f"teacher {name} reused from cache: {teacher.folder}")
    return teacher


def open_teacher_run(
    config: StudyConfig, name: str, kind: str, train: TrainConfig, runs: TeacherRuns
) -> str:
    """The MLflow run of a teacher about to be prepared, with its training params."""
    what = f"{train.steps} SFT steps" if train.epochs is None else f"{train.epochs:g} epochs"
    if kind == "task-unaware":
        what = "the base model, evaluated only"
        if config.pretrain is not None and config.zoo == "tiny":
            what = "the pretrained base, not fine-tuned on the task; evaluated only"
    say(f"preparing the {kind} teacher {name} ({what}; cached for later studies)")
    params = {"model": name, "teacher_kind": kind, **flatten(to_dict(train), "train.")}
    return runs.open(config, "teacher", f"teacher {name} ({kind})", params)
