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
from kdray.config.run import flatten, to_dict
from kdray.console import say
from kdray.hub.world import HubWorld, build_hub_world
from kdray.hub.zoo import check_pair
from kdray.study.config import StudyConfig
from kdray.study.plan import cache_build_gpus
from kdray.study.runtime import PhaseClock, connect_ray
from kdray.study.teacher_signals import attach_teacher_signals
from kdray.study.teachers import (
    PreparedTeacher,
    prepare_teacher,
    prepare_teacher_responses,
    teacher_folder,
)
from kdray.study.trials import trial_plans
from kdray.tracking.runs import (
    RUN_NAME_TAG,
    RunLogger,
    ensure_experiment,
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
        }


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
        plans = trial_plans(config, world)  # before teachers: a pair that cannot fit fails now
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
    if config.zoo == "hub":  # the teacher's SFT sized like a student's (kdray.study.plan)
        from kdray.study.plan import layout_needed

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
