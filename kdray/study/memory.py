"""A rough per-GPU memory estimate for one KD trial, so a dry run can say how many GPUs a
trial needs before anything is loaded.

It is an ESTIMATE from the architecture numbers (kdray.hub.zoo), not a measurement. Per GPU it
counts, in GiB:

- student_weights: student parameters at `dtype_bytes` (+ LoRA adapters);
- teacher_weights: teacher parameters at `dtype_bytes` (frozen, no grads or optimizer);
- trainable_optimizer: AdamW in mixed precision per trainable parameter: fp32 master copy and
  two fp32 moments (12 bytes, as in the ZeRO paper) plus its gradient at `dtype_bytes`;
- activations: stored for the student's backward, 34 * b * s * h bytes per layer (Korthikanti
  et al. 2022, 16-bit activations, fused/flash attention so no s^2 score matrix); with gradient
  checkpointing only each layer's input (2 * b * s * h bytes) plus one layer's 34 * b * s * h.
  LoRA still needs them: the gradient flows back through the frozen layers. SwiGLU MLPs wider
  than 4h store somewhat more; the rule is deliberately simple;
- logits: student and teacher logits in fp32 for the KD loss at their lm_head width,
  b * s * V * 4 bytes each, plus one gradient of the student's;
- overhead: CUDA context, cuBLAS workspace and allocator slack (a fixed CUDA_OVERHEAD_GIB),
  plus under ZeRO-3 the layers gathered for compute (current + prefetched: 2 layers).

ZeRO over `gpus` data-parallel ranks: stage 1 shards optimizer states, 2 also gradients, 3 also
the student's weights. The online teacher's placement (kdray/teacher/placement.py) decides its
share: "replica" keeps a full copy on every rank, "zero3" shards it over the ranks (a stage-3
engine without optimizer, whatever the student's stage), "actor" keeps it off the training GPUs
on a Ray actor of its own (estimate_teacher_server_memory sizes that GPU); the teacher's logits
reach the loss in every placement. Micro batch is per GPU, so activations and logits do not
shrink.

Ignored: fragmentation, the teacher's transient forward activations, the loss's softmax
temporaries beyond the counted tensors, communication buckets and DeepSpeed's other buffers,
the tokenizer and data pipeline. Leave headroom: a plan that fills a GPU to the last GiB may not
run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from kdray.config.run import TEACHER_PLACEMENTS
from kdray.errors import ConfigError
from kdray.hub.zoo import HubModel

GIB = 1024**3
CUDA_OVERHEAD_GIB = 1.0
ADAM_STATE_BYTES = 12  # fp32 master weights + two fp32 moments per trainable parameter
ACTIVATION_FACTOR = 34  # bytes per (token, hidden unit, layer): Korthikanti et al. 2022
GPU_COUNTS = (1, 2, 4, 8)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated memory of one KD trial on each GPU, in GiB (see the module docstring)."""

    student_weights: float
    """Student weights (and LoRA adapters), sharded under ZeRO-3."""
    teacher_weights: float
    """Frozen teacher weights; 0 without a teacher (SFT)."""
    trainable_optimizer: float
    """AdamW states (fp32 master + 2 moments) and gradients of the trainable parameters."""
    activations: float
    """Student activations kept for the backward pass."""
    logits: float
    """fp32 student and teacher logits for the loss, plus the student logits' gradient."""
    overhead: float
    """CUDA context and allocator slack, plus ZeRO-3's gathered layers."""
    total: float
    """Sum of the above: the per-GPU need to compare with the GPU's memory."""

    def summary(self) -> str:
        parts = ", ".join(f"{f.name} {getattr(self, f.name):.1f}" for f in fields(self)[:-1])
        return f"{self.total:.1f} GiB per GPU ({parts})"


def _linear_shapes(model: HubModel) -> dict[str, tuple[int, int]]:
    """(in, out) features of each projection in one decoder layer."""
    q, kv = model.heads * model.head_dim, model.kv_heads * model.head_dim
    h, i = model.hidden, model.intermediate
    return {
        "q_proj": (h, q),
        "k_proj": (h, kv),
        "v_proj": (h, kv),
        "o_proj": (q, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }


def lora_parameters(model: HubModel, rank: int, targets) -> int:
    """LoRA adds A (rank x in) and B (out x rank) to each targeted projection of each layer."""
    shapes = _linear_shapes(model)
    unknown = sorted(set(targets) - set(shapes))
    if unknown:
        known = ", ".join(shapes)
        raise ConfigError(f"unknown LoRA target(s) {', '.join(unknown)}; known: {known}")
    return model.layers * sum(rank * (shapes[t][0] + shapes[t][1]) for t in targets)


def estimate_trial_memory(
    student: HubModel,
    teacher: HubModel | None,
    *,
    finetune: str = "lora",
    lora_rank: int = 8,
    lora_targets=("q_proj", "k_proj", "v_proj", "up_proj", "down_proj"),
    micro_batch: int = 4,
    seq_len: int = 256,
    dtype_bytes: int = 2,
    zero_stage: int = 0,
    gpus: int = 1,
    gradient_checkpointing: bool = False,
    teacher_placement: str = "replica",
) -> MemoryEstimate:
    """Per-GPU memory estimate of one KD trial (student trained, teacher frozen)."""
    _check_layout(finetune, zero_stage, gpus, micro_batch, seq_len, teacher_placement)
    shard_weights = gpus if zero_stage >= 3 else 1
    student_bytes, optimizer_bytes = _student_bytes(
        student, finetune, lora_rank, lora_targets, dtype_bytes, zero_stage, gpus
    )
    tokens = micro_batch * seq_len
    activation_bytes, logit_bytes = _activation_bytes(
        student, teacher, tokens, gradient_checkpointing
    )
    teacher_bytes = _teacher_bytes(teacher, teacher_placement, dtype_bytes, gpus)
    overhead_bytes = _overhead_bytes(
        student, teacher, teacher_placement, dtype_bytes, zero_stage, gpus
    )
    parts = {
        "student_weights": student_bytes / shard_weights / GIB,
        "teacher_weights": teacher_bytes / GIB,
        "trainable_optimizer": optimizer_bytes / GIB,
        "activations": activation_bytes / GIB,
        "logits": logit_bytes / GIB,
        "overhead": overhead_bytes / GIB,
    }
    return MemoryEstimate(**parts, total=sum(parts.values()))


def _check_layout(
    finetune: str, zero_stage: int, gpus: int, micro_batch: int, seq_len: int, placement: str
) -> None:
    """One line for a layout the estimate cannot mean."""
    if placement not in TEACHER_PLACEMENTS:
        raise ConfigError(
            f"teacher_placement must be one of {', '.join(TEACHER_PLACEMENTS)}, got {placement!r}"
        )
    if finetune not in ("lora", "full"):
        raise ConfigError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage must be 0-3, got {zero_stage}")
    if gpus < 1 or micro_batch < 1 or seq_len < 1:
        raise ConfigError("gpus, micro_batch and seq_len must be at least 1")


def _student_bytes(
    student: HubModel,
    finetune: str,
    lora_rank: int,
    lora_targets,
    dtype_bytes: int,
    zero_stage: int,
    gpus: int,
) -> tuple[float, float]:
    """(the student's weights, its AdamW state and gradients per rank) in bytes."""
    # Divisors per ZeRO stage: what each rank keeps is 1/gpus of the sharded states.
    shard_optimizer = gpus if zero_stage >= 1 else 1
    shard_grads = gpus if zero_stage >= 2 else 1
    if finetune == "lora":
        trainable = lora_parameters(student, lora_rank, lora_targets)
        student_bytes = (student.parameters + trainable) * dtype_bytes
    else:
        trainable = student.parameters
        student_bytes = student.parameters * dtype_bytes
    optimizer_bytes = (
        trainable * ADAM_STATE_BYTES / shard_optimizer + trainable * dtype_bytes / shard_grads
    )
    return student_bytes, optimizer_bytes


def _activation_bytes(
    student: HubModel, teacher: HubModel | None, tokens: int, gradient_checkpointing: bool
) -> tuple[float, float]:
    """(the student's activations, the fp32 logits of student and teacher) in bytes."""
    layer_activations = ACTIVATION_FACTOR * tokens * student.hidden
    if gradient_checkpointing:
        activation_bytes = student.layers * 2 * tokens * student.hidden + layer_activations
    else:
        activation_bytes = student.layers * layer_activations
    logit_bytes = 2 * tokens * student.vocab_size * 4  # student logits + their gradient
    if teacher is not None:
        logit_bytes += tokens * teacher.vocab_size * 4
    return activation_bytes, logit_bytes


def _teacher_bytes(teacher: HubModel | None, placement: str, dtype_bytes: int, gpus: int) -> float:
    """The frozen teacher's weights per rank in bytes: all (replica), 1/gpus (zero3), 0 (actor)."""
    if teacher is None or placement == "actor":
        return 0.0
    return teacher.parameters * dtype_bytes / (gpus if placement == "zero3" else 1)


def _overhead_bytes(
    student: HubModel,
    teacher: HubModel | None,
    placement: str,
    dtype_bytes: int,
    zero_stage: int,
    gpus: int,
) -> float:
    """CUDA context and slack, plus the layers a ZeRO-3 forward gathers, in bytes."""
    overhead_bytes = CUDA_OVERHEAD_GIB * GIB
    gathered = []  # layers a ZeRO-3 forward gathers (current + prefetched)
    if zero_stage == 3 and gpus > 1:
        gathered.append(student.layer_parameters)
    if teacher is not None and placement == "zero3" and gpus > 1:  # the sharded teacher's
        gathered.append(teacher.layer_parameters)
    if gathered:
        overhead_bytes += 2 * max(gathered) * dtype_bytes
    return overhead_bytes


def estimate_teacher_server_memory(
    teacher: HubModel, *, micro_batch: int = 4, seq_len: int = 256, dtype_bytes: int = 2
) -> float:
    """GiB on the GPU of the "actor" placement's teacher server: its weights, the fp32 logits of
    one micro-batch it returns, and the CUDA overhead (forward activations are transient)."""
    logits = micro_batch * seq_len * teacher.vocab_size * 4
    return (teacher.parameters * dtype_bytes + logits) / GIB + CUDA_OVERHEAD_GIB


def teacher_forward_gpus(
    teacher: HubModel, gpu_memory_gib: float = 80.0, *, micro_batch: int = 4, seq_len: int = 256
) -> int:
    """The fewest GPUs (1, 2, 4, 8) whose memory holds the teacher's forward (a cache build
    task, or the actor placement's server); ConfigError (one line) when 8 do not."""
    need = estimate_teacher_server_memory(teacher, micro_batch=micro_batch, seq_len=seq_len)
    for gpus in GPU_COUNTS:  # weights and logits spread over the GPUs, each with its overhead
        if (need - CUDA_OVERHEAD_GIB) / gpus + CUDA_OVERHEAD_GIB <= gpu_memory_gib:
            return gpus
    raise ConfigError(
        f"{teacher.name}'s forward needs about {need:.0f} GiB: more than {GPU_COUNTS[-1]} x "
        f"{gpu_memory_gib:g} GiB GPUs (estimate)"
    )


PLACEMENT_PREFERENCE = ("replica", "zero3", "actor")
"""Cheapest first: a replica needs no communication, zero3 gathers the teacher's layers on
every forward, actor adds a GPU and a round trip per batch."""


@dataclass(frozen=True)
class TrialPlan:
    """What the memory planner chose for one trial, and its estimate."""

    gpus: int
    """Training GPUs (data-parallel ranks) of the trial."""
    zero_stage: int
    """2 unless only ZeRO-3 fits on that many GPUs (it also shards the student's weights)."""
    teacher_placement: str | None
    """None for SFT (no teacher)."""
    estimate: MemoryEstimate
    teacher_server_gib: float | None = None
    """The actor placement's teacher server GPU (one more GPU); None otherwise."""

    def describe(self) -> str:
        teacher = f", teacher {self.teacher_placement}" if self.teacher_placement else ""
        server = (
            f" + 1 GPU for the teacher server ({self.teacher_server_gib:.1f} GiB)"
            if self.teacher_server_gib is not None
            else ""
        )
        return (f"{self.gpus} GPU(s), ZeRO-{self.zero_stage}{teacher}: "
                f"{self.estimate.summary()}{server}")  # fmt: skip


def _batch(options: dict) -> dict:
    """The micro batch and sequence length among estimate options, for the teacher server."""
    return {k: options[k] for k in ("micro_batch", "seq_len") if k in options}


def training_layout(
    student: HubModel,
    teacher: HubModel | None,
    gpu_memory_gib: float = 80.0,
    teacher_placement: str = "replica",
    **options,
) -> TrialPlan | None:
    """The fewest training GPUs (1, 2, 4, 8) whose estimate fits `gpu_memory_gib` with this
    teacher placement: ZeRO-2 unless only ZeRO-3 fits on that many (one GPU: nothing to
    shard, so the stage changes nothing). None when not even 8 fit. The actor placement's
    server is sized (teacher_server_gib) but not checked here."""
    for name in ("gpus", "zero_stage"):
        options.pop(name, None)
    for gpus in GPU_COUNTS:
        for stage in (2, 3) if gpus > 1 else (2,):
            estimate = estimate_trial_memory(
                student, teacher, zero_stage=stage, gpus=gpus,
                teacher_placement=teacher_placement, **options,
            )  # fmt: skip
            if estimate.total <= gpu_memory_gib:
                server = None
                if teacher is not None and teacher_placement == "actor":
                    server = estimate_teacher_server_memory(teacher, **_batch(options))
                placement = teacher_placement if teacher is not None else None
                return TrialPlan(gpus, stage, placement, estimate, server)
    return None


def _fails_message(student, teacher, gpu_memory_gib, placements, **options) -> str:
    """Why nothing fits, in one line: the fullest GPU's need with everything sharded over 8
    GPUs (for the actor placement, its teacher server's GPU counts too)."""

    def need(placement: str) -> float:
        total = estimate_trial_memory(student, teacher, zero_stage=3, gpus=GPU_COUNTS[-1],
                                      teacher_placement=placement, **options).total  # fmt: skip
        if teacher is not None and placement == "actor":
            total = max(total, estimate_teacher_server_memory(teacher, **_batch(options)))
        return total

    least = min(need(p) for p in (placements if teacher is not None else ("replica",)))
    pair = f"{teacher.name} -> {student.name}" if teacher is not None else student.name
    how = (f"teacher placement {placements[0]}" if teacher is not None and len(placements) == 1
           else "any ZeRO stage or teacher placement")  # fmt: skip
    return (
        f"{pair} does not fit on {GPU_COUNTS[-1]} x {gpu_memory_gib:g} GiB GPUs with {how} "
        f"(at least {least:.0f} GiB per GPU even on {GPU_COUNTS[-1]} GPUs, estimate): use "
        "LoRA, gradient checkpointing, a smaller micro batch / sequence length, or the cache"
    )


def plan_trial(
    student: HubModel,
    teacher: HubModel | None,
    gpu_memory_gib: float = 80.0,
    placements: tuple[str, ...] = PLACEMENT_PREFERENCE,
    **options,
) -> TrialPlan:
    """The cheapest layout that fits `gpu_memory_gib` per GPU: fewest GPUs in all (the actor
    placement's teacher server counts as one, and must fit on one GPU), then ZeRO-2 over
    ZeRO-3 (less communication), then the placements in the order given. Options are
    estimate_trial_memory's (finetune, micro_batch, seq_len, gradient_checkpointing, ...).
    ConfigError (one line) when nothing fits on 8 training GPUs."""
    for name in ("teacher_placement", "gpus", "zero_stage"):
        options.pop(name, None)
    candidates = []
    for rank, placement in enumerate(placements if teacher is not None else ("replica",)):
        plan = training_layout(student, teacher, gpu_memory_gib, placement, **options)
        if plan is None or (plan.teacher_server_gib or 0.0) > gpu_memory_gib:
            continue
        total_gpus = plan.gpus + (plan.teacher_server_gib is not None)
        candidates.append(((total_gpus, plan.zero_stage, rank), plan))
    if not candidates:
        raise ConfigError(_fails_message(student, teacher, gpu_memory_gib, placements, **options))
    return min(candidates, key=lambda c: c[0])[1]


def placement_estimates(
    student: HubModel, teacher: HubModel, gpu_memory_gib: float = 80.0, **options
) -> dict[str, str]:
    """One line per teacher placement: the fewest GPUs (1, 2, 4, 8) that hold a trial with the
    teacher there (training_layout, as the study runs it), the GiB per training GPU, and for
    `actor` the teacher server's own GPU."""
    lines = {}
    for placement in TEACHER_PLACEMENTS:
        plan = training_layout(student, teacher, gpu_memory_gib, placement, **options)
        if plan is None:
            lines[placement] = f"does not fit on {GPU_COUNTS[-1]} x {gpu_memory_gib:g} GiB GPUs"
            continue
        line = f"{plan.gpus} GPU(s) x {plan.estimate.total:.1f} GiB"
        if plan.teacher_server_gib is not None:
            server = plan.teacher_server_gib
            fits = "" if server <= gpu_memory_gib else " (more than one GPU: not supported)"
            line += f" + the teacher server's GPU: {server:.1f} GiB{fits}"
        lines[placement] = line
    return lines
