"""A rough per-GPU memory estimate for one KD trial, so a dry run can say how many GPUs a
trial needs before anything is loaded.

It is an ESTIMATE from the architecture numbers (kdray.hub_zoo), not a measurement. Per GPU it
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
the student's weights. Assumption: under ZeRO-3 the frozen teacher is sharded too (DeepSpeed
can wrap it with the same stage-3 config and no optimizer); pass shard_teacher=False when each
rank holds a full copy. Micro batch is per GPU, so activations and logits do not shrink.

Ignored: fragmentation, the teacher's transient forward activations, the loss's softmax
temporaries beyond the counted tensors, communication buckets and DeepSpeed's other buffers,
the tokenizer and data pipeline. Leave headroom: a plan that fills a GPU to the last GiB may not
run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from kdray.errors import ConfigError
from kdray.hub_zoo import HubModel

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
    shard_teacher: bool = True,
) -> MemoryEstimate:
    """Per-GPU memory estimate of one KD trial (student trained, teacher frozen)."""
    if finetune not in ("lora", "full"):
        raise ConfigError(f"finetune must be 'lora' or 'full', got {finetune!r}")
    if zero_stage not in (0, 1, 2, 3):
        raise ConfigError(f"zero_stage must be 0-3, got {zero_stage}")
    if gpus < 1 or micro_batch < 1 or seq_len < 1:
        raise ConfigError("gpus, micro_batch and seq_len must be at least 1")

    # Divisors per ZeRO stage: what each rank keeps is 1/gpus of the sharded states.
    shard_optimizer = gpus if zero_stage >= 1 else 1
    shard_grads = gpus if zero_stage >= 2 else 1
    shard_weights = gpus if zero_stage >= 3 else 1
    shard_frozen = shard_weights if shard_teacher else 1

    if finetune == "lora":
        trainable = lora_parameters(student, lora_rank, lora_targets)
        student_bytes = (student.parameters + trainable) * dtype_bytes
    else:
        trainable = student.parameters
        student_bytes = student.parameters * dtype_bytes
    optimizer_bytes = (
        trainable * ADAM_STATE_BYTES / shard_optimizer + trainable * dtype_bytes / shard_grads
    )

    tokens = micro_batch * seq_len
    layer_activations = ACTIVATION_FACTOR * tokens * student.hidden
    if gradient_checkpointing:
        activation_bytes = student.layers * 2 * tokens * student.hidden + layer_activations
    else:
        activation_bytes = student.layers * layer_activations
    logit_bytes = 2 * tokens * student.vocab_size * 4  # student logits + their gradient
    if teacher is not None:
        logit_bytes += tokens * teacher.vocab_size * 4

    overhead_bytes = CUDA_OVERHEAD_GIB * GIB
    if zero_stage == 3 and gpus > 1:
        largest = max(
            [student.layer_parameters]
            + ([teacher.layer_parameters] if teacher is not None and shard_teacher else [])
        )
        overhead_bytes += 2 * largest * dtype_bytes

    parts = {
        "student_weights": student_bytes / shard_weights / GIB,
        "teacher_weights": (teacher.parameters * dtype_bytes / shard_frozen / GIB)
        if teacher is not None
        else 0.0,
        "trainable_optimizer": optimizer_bytes / GIB,
        "activations": activation_bytes / GIB,
        "logits": logit_bytes / GIB,
        "overhead": overhead_bytes / GIB,
    }
    return MemoryEstimate(**parts, total=sum(parts.values()))


def gpus_per_trial(
    student: HubModel, teacher: HubModel | None, gpu_memory_gib: float = 80.0, **kwargs
) -> int:
    """The fewest GPUs of 1, 2, 4, 8 whose estimate fits in `gpu_memory_gib` each: one GPU
    with the given zero_stage, more with ZeRO-3. ConfigError (one line) if 8 do not fit."""
    kwargs.pop("gpus", None)
    single_stage = kwargs.pop("zero_stage", 0)
    for gpus in GPU_COUNTS:
        stage = single_stage if gpus == 1 else 3
        estimate = estimate_trial_memory(student, teacher, zero_stage=stage, gpus=gpus, **kwargs)
        if estimate.total <= gpu_memory_gib:
            return gpus
    pair = f"{teacher.name} -> {student.name}" if teacher is not None else student.name
    raise ConfigError(
        f"{pair} needs about {estimate.total:.0f} GiB per GPU even on {GPU_COUNTS[-1]} GPUs "
        f"with ZeRO-3 (estimate, {gpu_memory_gib:g} GiB GPUs): use LoRA, gradient "
        "checkpointing or a smaller micro batch / sequence length"
    )
