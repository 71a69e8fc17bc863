"""Where an online teacher runs during a trial (KDConfig.teacher_placement).

- `replica`: every Train worker loads the whole teacher next to its student. Fastest while it
  fits: no communication beyond the student's own.
- `zero3`: the teacher is wrapped in a DeepSpeed ZeRO-3 engine without optimizer, so each of
  the trial's ranks keeps 1/N of its weights and gathers a layer at a time in the forward (all
  ranks run every forward together, as the training loop already does). For teachers that do
  not fit on one GPU beside the student. Each rank still reads the full checkpoint into host
  memory once before DeepSpeed partitions it.
- `actor`: one Ray actor per trial holds the teacher (on its own GPU when the trial uses GPUs)
  and answers each micro-batch with its logits, so the training GPUs hold no teacher at all.
  The logits travel through Ray's object store: b * s * V * 4 bytes per micro-batch, which is
  cheap for small vocabularies and the price of the placement for 152k ones.

kdray.study.memory prints what each placement costs per GPU before a study runs (`--dry-run`);
a top-k or full teacher cache (kdray/teacher/cache.py) needs no placement at all."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import ray
import torch
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from kdray.config.deepspeed import deepspeed_config
from kdray.models import inference_device, load_model, quiet_libraries

if TYPE_CHECKING:
    from kdray.config.run_spec import RunSpec

SERVER_NAMESPACE = "kdray"
SERVER_CPUS_WITHOUT_GPU = 0.01
"""On CPU a worker waits while the server computes its logits, so the server borrows that
worker's core instead of reserving one (which 2-CPU machines do not have to spare)."""


class OnlineTeacher(Protocol):
    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The teacher's raw logits for a batch, on the caller's device, without gradient."""


def _forward(model: torch.nn.Module, input_ids, attention_mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits


@dataclass
class ReplicaTeacher:
    model: torch.nn.Module

    def logits(self, input_ids, attention_mask):
        return _forward(self.model, input_ids, attention_mask)


@dataclass
class Zero3Teacher:
    engine: object
    """A DeepSpeed ZeRO-3 engine over the frozen teacher (no optimizer)."""

    def logits(self, input_ids, attention_mask):
        return _forward(self.engine, input_ids, attention_mask)


@dataclass
class ActorTeacher:
    server: object
    """Handle of the trial's TeacherServer actor."""
    device: torch.device

    def logits(self, input_ids, attention_mask):
        logits = ray.get(self.server.logits.remote(input_ids.cpu(), attention_mask.cpu()))
        return logits.to(self.device)


def zero3_inference_config(spec: RunSpec) -> dict:
    """The trial's DeepSpeed config with stage 3 and nothing an optimizer would need."""
    config = deepspeed_config(spec.train)
    config["zero_optimization"] = {"stage": 3}
    config.pop("gradient_clipping", None)
    return config


def online_teacher(spec: RunSpec, device: torch.device) -> OnlineTeacher:
    """The trial's teacher in its configured placement (inside a Train worker)."""

    placement = spec.kd.teacher_placement
    if placement == "actor":
        if not spec.teacher_server:
            raise ValueError(
                "teacher_placement=actor needs a running server (RunSpec.teacher_server)"
            )
        return ActorTeacher(ray.get_actor(spec.teacher_server, SERVER_NAMESPACE), device)
    _, dtype = inference_device(spec.train.use_gpu)
    if placement == "replica":
        return ReplicaTeacher(
            load_model(spec.teacher_dir, device, dtype).eval().requires_grad_(False)
        )
    if not spec.train.use_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    import deepspeed  # after DS_ACCELERATOR: DeepSpeed picks its accelerator at import

    model = load_model(spec.teacher_dir, torch.device("cpu"), dtype).eval().requires_grad_(False)
    engine, *_ = deepspeed.initialize(
        model=model, config=zero3_inference_config(spec), dist_init_required=False
    )
    engine.eval()
    return Zero3Teacher(engine)


@ray.remote
class TeacherServer:
    """The `actor` placement: one teacher answering the trial's workers."""

    def __init__(self, teacher_dir: str, use_gpu: bool, threads: int) -> None:

        quiet_libraries()
        if not use_gpu:
            torch.set_num_threads(threads)
        self.device, dtype = inference_device(use_gpu)
        self.model = load_model(teacher_dir, self.device, dtype).eval()
        self.model.requires_grad_(False)

    def ready(self) -> bool:
        return True

    def logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        inputs = input_ids.to(self.device), attention_mask.to(self.device)
        return _forward(self.model, *inputs).float().cpu()


def needs_server(spec: RunSpec) -> bool:
    return (
        spec.kd.teacher_placement == "actor"
        and spec.kd.needs_teacher_logits
        and not spec.teacher_cache
    )


def start_teacher_server(spec: RunSpec) -> tuple[str, object]:
    """Start the trial's teacher server; (its actor name, its handle). The caller kills it."""
    name = f"kdray-teacher-{uuid.uuid4().hex[:12]}"
    use_gpu = spec.train.use_gpu
    server = TeacherServer.options(
        name=name,
        namespace=SERVER_NAMESPACE,
        # Outside the Tune trial's placement group, as Train's own controller and workers are.
        scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=None),
        num_gpus=1 if use_gpu else 0,
        num_cpus=1 if use_gpu else SERVER_CPUS_WITHOUT_GPU,
    ).remote(spec.teacher_dir, use_gpu, max(1, round(spec.train.cpus_per_worker)))
    ray.get(server.ready.remote())  # load errors surface here, not in a worker
    return name, server
