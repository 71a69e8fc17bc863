"""Run RunSpecs as one Ray Train TorchTrainer (DeepSpeed inside each worker): a single run, or
a sequence of runs of the same shape (a setting's seeds) trained one after another by the
same workers."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.fs
import ray
from ray.train import (
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchConfig, TorchTrainer

from kdray.config.run_spec import RunSpec
from kdray.teacher.placement import needs_server, start_teacher_server
from kdray.train.loop import (
    FAILURE_FILE,
    RUNS_KEY,
    NonFiniteLossError,
    run_output,
    train_worker,
)

REPORT_POLL_SECONDS = "0.2"
"""Ray Train V2 drains worker reports every 2 s by default, which stalls short runs; the
driver's value propagates to the Train controller and workers."""


def build_trainer(
    specs: Sequence[RunSpec], name: str, storage_path: Path, callbacks=()
) -> TorchTrainer:
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_SECONDS)
    train = specs[0].train
    shapes = {(s.train.num_workers, s.train.use_gpu, s.train.cpus_per_worker) for s in specs}
    if len(shapes) > 1:  # one worker group trains them all
        raise ValueError(f"runs of one Train run need the same workers, got {sorted(shapes)}")
    return TorchTrainer(
        train_worker,
        train_loop_config={RUNS_KEY: [spec.to_dict() for spec in specs]},
        torch_config=TorchConfig(backend="nccl" if train.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=train.num_workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker},
            placement_strategy=train.placement_strategy,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage_path),
            # A dead worker restarts the group from the latest checkpoint (kdray.train.loop).
            failure_config=FailureConfig(max_failures=train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest is enough
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
    )


def fit(spec: RunSpec, name: str, storage_path: Path, callbacks=()) -> Path:
    """Train one run; its output folder (model folder, metrics.json, predictions.json) in the
    final checkpoint. A run whose loss stopped being finite raises NonFiniteLossError."""
    folder = fit_runs([spec], name, storage_path, callbacks)
    output = run_output(folder, 0)
    if (output / FAILURE_FILE).is_file():
        raise NonFiniteLossError(json.loads((output / FAILURE_FILE).read_text())["reason"])
    return output


def fit_runs(specs: Sequence[RunSpec], name: str, storage_path: Path, callbacks=()) -> Path:
    """Train `specs` in turn in one Train run; the final checkpoint's local folder, which holds
    run i's outputs in `run_output(folder, i)`: a model folder, or failure.json for a run
    whose loss stopped being finite (the later runs are trained all the same)."""
    server, specs = None, list(specs)
    if needs_server(specs[0]):  # teacher_placement=actor: the runs' own teacher server
        server_name, server = start_teacher_server(specs[0])  # the runs share their teacher
        specs = [dataclasses.replace(spec, teacher_server=server_name) for spec in specs]
    try:
        result = build_trainer(specs, name, storage_path, callbacks).fit()
    finally:
        if server is not None:
            ray.kill(server)
    if result.checkpoint is None:
        raise RuntimeError(f"Train run {name} ended without a checkpoint: {result.error}")
    checkpoint = result.checkpoint
    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return Path(checkpoint.path)
    return Path(checkpoint.to_directory())  # remote storage: a local copy
