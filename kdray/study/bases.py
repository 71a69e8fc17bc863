"""The study's pretrained tiny bases (kdray.world.bases): the teacher's and one per student and
seed, built before the teachers as parallel Ray tasks of one CPU each, each tracked as its own
MLflow run (role `pretrain`) and cached for later studies."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ray
from mlflow.entities import RunStatus
from ray.util.queue import Queue

from kdray.cache import is_complete
from kdray.config.pretrain import PretrainConfig
from kdray.config.run import flatten
from kdray.console import say
from kdray.hub.world import HubWorld
from kdray.study.config import StudyConfig
from kdray.study.side_runs import TeacherRuns
from kdray.tracking.runs import RunLogger, mark_failed
from kdray.world.bases import (
    base_folder,
    base_recipe,
    build_base,
    install_packaged_base,
    packaged_base,
    pretraining_record,
)
from kdray.world.build import World


@dataclass(frozen=True)
class BaseNeed:
    model: str
    seed: int
    teacher: bool
    """The teacher's base (pretrained longer)."""


PROGRESS_SECONDS = 30.0
"""How often a line says where the bases in pretraining are."""


def needed_bases(config: StudyConfig) -> list[BaseNeed]:
    """Every teacher's base (its training seed) and every student's base per study seed."""
    needs = [BaseNeed(t, config.teacher_train.seed, True) for t in config.teachers()]
    needs += [BaseNeed(s, seed, False) for seed in config.seeds for s in config.distinct_students()]
    return list(dict.fromkeys(needs))


def init_dir(
    config: StudyConfig, world: World | HubWorld, model: str, seed: int, teacher: bool
) -> str:
    """The folder a run of `model` starts from: its pretrained base on the tiny world with
    pretraining, else the world's own model folder (a hub id, or a random initialisation)."""
    if config.pretrain is None or isinstance(world, HubWorld):
        return str(world.model_dir(model))
    return str(base_folder(world, model, seed, config.pretrain, teacher))


def prepare_bases(config: StudyConfig, world: World | HubWorld, runs: TeacherRuns) -> None:
    """Pretrain the bases the study needs that the cache lacks, in parallel, one MLflow run
    each."""
    if config.pretrain is None or isinstance(world, HubWorld):
        return
    needs = needed_bases(config)
    missing = [need for need in needs if not is_complete(_folder(config, world, need))]
    reused = len(needs) - len(missing)
    if reused:
        say(f"{reused} pretrained base(s) reused from the cache")
    packaged = [need for need in missing if packaged_base(world, _folder(config, world, need))]
    if packaged:
        say(f"{len(packaged)} pretrained base(s) taken from the package (checksums verified)")
    for need in packaged:
        _install(config, world, need, runs)
    missing = [need for need in missing if need not in packaged]
    if not missing:
        return
    steps = f"{config.pretrain.steps} steps, the teacher's {config.pretrain.teacher_steps}"
    say(f"pretraining {len(missing)} tiny base(s) on the world's generic text ({steps}; cached)")
    run_ids = {need: _open_run(config, need, runs) for need in missing}
    try:
        for need, folder, seconds in pretrain_in_parallel(world, missing, config.pretrain):
            curve = _close_run(runs, run_ids.pop(need), folder)
            say(f"  base {need.model} seed {need.seed}: loss {curve[-1][1]:.3f} ({seconds:.0f} s)")
    except BaseException:
        for run_id in run_ids.values():
            mark_failed(runs.client, run_id)
        raise


def pretrain_in_parallel(
    world: World, needs: list[BaseNeed], pretrain: PretrainConfig
) -> Iterator[tuple[BaseNeed, Path, float]]:
    """Pretrain `needs` as Ray tasks of one CPU each; yields (need, folder, seconds since the
    start) as each ends. Meanwhile, every PROGRESS_SECONDS, a line says where each base in
    training is: a teacher's base takes minutes, and nothing else is printed until it ends."""
    reports = Queue(actor_options={"num_cpus": 0})
    task = ray.remote(num_cpus=1)(_pretrain)
    pending = {task.remote(world, n.model, n.seed, pretrain, n.teacher, reports): n for n in needs}
    started = last_line = time.perf_counter()
    latest: dict[BaseNeed, tuple[int, float]] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), timeout=PROGRESS_SECONDS)
            for model, seed, teacher, step, loss in reports.get_nowait_batch(reports.qsize()):
                need = BaseNeed(model, seed, teacher)
                if need in pending.values():  # a late report of a base that ended is dropped
                    latest[need] = (step, loss)
            for ref in done:
                need = pending.pop(ref)
                latest.pop(need, None)
                yield need, Path(ray.get(ref)), time.perf_counter() - started
            now = time.perf_counter()
            if latest and now - last_line >= PROGRESS_SECONDS:
                silent = len(pending) - len(latest)  # queued, or before their first report
                say(progress_line(latest, pretrain, silent, now - started))
                last_line = now
    finally:
        reports.shutdown()


def progress_line(
    latest: dict[BaseNeed, tuple[int, float]],
    pretrain: PretrainConfig,
    silent: int,
    seconds: float,
) -> str:
    """`  pretraining: tiny-qwen2-s seed 3 step 900/3000 (loss 0.823), …; 2 queued or starting;
    95 s` (`silent`: the bases not yet started, or started but before their first report)."""
    parts = []
    for need, (step, loss) in latest.items():
        steps = pretrain.train_config(need.teacher, need.seed).steps
        parts.append(f"{need.model} seed {need.seed} step {step}/{steps} (loss {loss:.3f})")
    queued = f"; {silent} queued or starting" if silent > 0 else ""
    return f"  pretraining: {', '.join(parts)}{queued}; {seconds:.0f} s"


def _folder(config: StudyConfig, world: World, need: BaseNeed) -> Path:
    return base_folder(world, need.model, need.seed, config.pretrain, need.teacher)


def _install(config: StudyConfig, world: World, need: BaseNeed, runs: TeacherRuns) -> None:
    """A packaged base into the cache, tracked like a pretrained one (its recorded curve)."""
    run_id = _open_run(config, need, runs, source="package")
    try:
        install_packaged_base(world, _folder(config, world, need))
    except BaseException:
        mark_failed(runs.client, run_id)
        raise
    _close_run(runs, run_id, _folder(config, world, need))


def _close_run(runs: TeacherRuns, run_id: str, folder: Path) -> list:
    """The base's pretraining curve on its run, which ends FINISHED; the curve."""
    curve = pretraining_record(folder)["curve"]
    logger = RunLogger(runs.tracking_uri, run_id)
    logger.log_curve("pretrain_loss", [(step, loss) for step, loss in curve])
    logger.log_metrics({"final_pretrain_loss": curve[-1][1]})
    runs.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FINISHED))
    return curve


def _pretrain(
    world: World, model: str, seed: int, pretrain: PretrainConfig, teacher: bool, reports: Queue
) -> str:
    import torch

    from kdray.models import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(1)  # the task holds one CPU: more threads only oversubscribe it

    report = reporter(reports, (model, seed, teacher))
    folder, _ = build_base(world, model, seed, pretrain, teacher, on_report=report)
    return str(folder)


def reporter(reports: Queue, key: tuple) -> Callable[[int, float, float], None]:
    """A pretraining task's `on_report`: puts (*key, step, loss) on `reports` without waiting.
    A task that waits (Queue.put is a ray.get) gives its CPU back meanwhile, and Ray starts the
    next base on it: three bases ran on 2 CPUs."""

    def report(step: int, loss: float, seconds: float) -> None:
        reports.actor.put_nowait.remote((*key, step, loss))

    return report


def _open_run(
    config: StudyConfig, need: BaseNeed, runs: TeacherRuns, source: str = "pretrained"
) -> str:
    """The base's MLflow run; `source`: pretrained now, or taken from the package."""
    recipe = base_recipe(config.pretrain, need.teacher, need.seed)
    params = {"model": need.model, "seed": need.seed, **flatten(recipe, "pretrain.")}
    params["source"] = source
    return runs.open(config, "pretrain", f"pretrain {need.model} seed={need.seed}", params)
