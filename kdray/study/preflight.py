"""What a study checks before any work: the checks of its plan (every one `--dry-run` makes,
and what preparing the trials would refuse after minutes of work), the paper preset's data
folder, one probe of the Hugging Face hub, and the GPUs a GPU study needs. Each problem is
one line (ConfigError); nothing is built, downloaded, tracked or written. Light: Ray is
imported only to look for a cluster, MLflow and torch not at all."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from kdray.cache import is_complete
from kdray.errors import ConfigError
from kdray.study.config import StudyConfig
from kdray.study.plan import PairPlan, check_plan, format_plan, plan_pairs

if TYPE_CHECKING:
    from kdray.hub.world import HubData


def check_before_work(config: StudyConfig, dry_run: bool = False, search: bool = False) -> str:
    """The study's plan (what --dry-run prints), after every check that can be made without
    running anything; with `dry_run`, only the plan's own checks (no data, hub or GPUs). A
    `search` samples its settings per trial (kdray.study.search), so the layouts of its
    config's grid are not refused."""
    plan = format_plan(config)
    if dry_run:
        return plan
    rows = plan_pairs(config) if search else check_plan(config)
    check_data(config)
    if problem := hub_problem_of(config):
        raise ConfigError(problem)
    if problem := gpu_problem(config, rows):
        raise ConfigError(problem)
    return plan


def hub_data_spec(config: StudyConfig) -> HubData:
    """What names and builds the paper preset's data (kdray.hub.world.build_hub_world)."""
    from kdray.hub.world import HubData

    validation = config.validation_items or 500
    return HubData(config.domain, config.data_dir, validation, config.student_train.seed)


def check_data(config: StudyConfig) -> None:
    """The paper preset's --data-dir: every file the study reads, read and checked now, unless
    its data folder is built already (ConfigError naming the file and record)."""
    if config.zoo != "hub" or config.data_dir is None:
        return
    from kdray.hub.world import domain_records, hub_data_folder

    spec = hub_data_spec(config)
    if not is_complete(hub_data_folder(spec, config.cache_root())):
        domain_records(spec)


def hub_problem_of(config: StudyConfig) -> str | None:
    """One probe of the Hugging Face hub for the hub zoo's models (kdray.hub.probe)."""
    if config.zoo != "hub":
        return None
    from kdray.hub.probe import hub_problem
    from kdray.hub.zoo import hub_model

    models = dict.fromkeys(m for pair in config.teacher_student_pairs() for m in pair)
    return hub_problem([hub_model(name).hub_id for name in models])


def gpu_problem(config: StudyConfig, rows: list[PairPlan]) -> str | None:
    """A GPU study that would start a Ray of its own on this machine needs the GPUs of its
    largest trial here. On a Ray cluster (RAY_ADDRESS, or a `ray start` here) trials wait for
    GPU nodes, which an autoscaler adds, so nothing is checked there."""
    if not (config.student_train.use_gpu or config.teacher_train.use_gpu):
        return None
    if ray_cluster_address():
        return None
    needed = max(
        [config.student_train.num_workers, *(r.gpus_per_trial for r in rows if r.gpus_per_trial)]
    )
    have = local_gpus()
    if have >= needed:
        return None
    fix = "drop --use-gpu" if config.zoo == "tiny" else "plan it with --dry-run"
    return (
        f"this study trains on GPUs ({needed} per trial) and would start a Ray of its own on "
        f"this machine, which has {have}: run it on a GPU machine, join a GPU cluster "
        f"(`ray start`, RAY_ADDRESS), or {fix}"
    )


def ray_cluster_address() -> str | None:
    """The Ray cluster a study would join (kdray.study.runtime.connect_ray): RAY_ADDRESS
    ("local" means none), else the cluster of the last `ray start` on this machine."""
    address = os.environ.get("RAY_ADDRESS", "")
    if address:
        return None if address == "local" else address
    from ray._private.services import find_bootstrap_address

    return find_bootstrap_address(None)


def local_gpus() -> int:
    """GPUs a local Ray would count on this machine (those CUDA_VISIBLE_DEVICES shows)."""
    from ray._private.accelerators import get_accelerator_manager_for_resource

    manager = get_accelerator_manager_for_resource("GPU")
    count = manager.get_current_node_num_accelerators()
    visible = manager.get_current_process_visible_accelerator_ids()
    return count if visible is None else min(count, len(visible))
