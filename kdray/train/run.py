"""Run one RunSpec as a Ray Train TorchTrainer (DeepSpeed inside each worker)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import ray
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
)
from ray.train.torch import TorchConfig, TorchTrainer

from kdray.config.run_spec import RunSpec
from kdray.teacher.placement import needs_server, start_teacher_server
from kdray.train.loop import FAILURE_KEY, NonFiniteLossError, train_worker

REPORT_POLL_SECONDS = "0.2"
"""Ray Train V2 drains worker reports every 2 s by default, which stalls short runs; the
driver's value propagates to the Train controller and workers."""


def build_trainer(spec: RunSpec, name: str, storage_path: Path, callbacks=()) -> TorchTrainer:
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", REPORT_POLL_SECONDS)
    train = spec.train
    return TorchTrainer(
        train_worker,
        train_loop_config=spec.to_dict(),
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


def fit(spec: RunSpec, name: str, storage_path: Path, callbacks=()) -> Checkpoint:
    """Train and return the final checkpoint (model folder, metrics.json, predictions.json)."""
    server = None
    if needs_server(spec):  # teacher_placement=actor: the trial's own teacher server
        server_name, server = start_teacher_server(spec)
        spec = dataclasses.replace(spec, teacher_server=server_name)
    try:
        result = build_trainer(spec, name, storage_path, callbacks).fit()
    finally:
        if server is not None:
            ray.kill(server)
    if result.checkpoint is None:
        raise RuntimeError(f"Train run {name} ended without a checkpoint: {result.error}")
    if reason := (result.metrics or {}).get(FAILURE_KEY):
        raise NonFiniteLossError(reason)
    return result.checkpoint
