"""Typed, validated configs. Each dataclass documents its fields; invalid values raise
ConfigError in __post_init__ so nothing starts with a bad setting."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kdray.errors import ConfigError

METHODS = ("sft", "kd", "revkd")
"""Training methods: `sft` cross-entropy on the data; `kd` token-level forward
KL(teacher||student) (the study's released code calls this "SeqKD"); `revkd` token-level
reverse KL(student||teacher)."""

LOSS_TOKENS = ("response", "all")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class KDConfig:
    """How the student learns from the teacher."""

    method: str = "kd"
    """One of METHODS."""
    temperature: float = 1.0
    """T > 0, applied to both teacher and student logits inside the KD loss."""
    noise_sigma: float = 0.0
    """sigma >= 0 of Gaussian noise added to the teacher's raw logits (as in the study)."""
    ce_weight: float = 0.0
    """Weight of cross-entropy in (1 - w) * KD + w * CE; 0 is pure KD, as in the study."""
    scale_by_t2: bool = True
    """Multiply the KD term by T^2 so its gradients keep their size across temperatures."""
    loss_tokens: str = "response"
    """Which tokens count in every loss: `response` (after the prompt) or `all` non-pad tokens."""

    def __post_init__(self) -> None:
        _check(
            self.method in METHODS,
            f"unknown method {self.method!r}: choose one of {', '.join(METHODS)}",
        )
        _check(
            _finite(self.temperature) and self.temperature > 0,
            f"temperature must be > 0, got {self.temperature}: pass a positive T such as 1, 2 or 5",
        )
        _check(
            _finite(self.noise_sigma) and self.noise_sigma >= 0,
            f"noise sigma must be >= 0, got {self.noise_sigma}: pass 0 for no noise",
        )
        _check(
            _finite(self.ce_weight) and 0 <= self.ce_weight <= 1,
            f"ce_weight must be in [0, 1], got {self.ce_weight}",
        )
        _check(
            self.loss_tokens in LOSS_TOKENS,
            f"unknown loss_tokens {self.loss_tokens!r}: choose one of {', '.join(LOSS_TOKENS)}",
        )

    @property
    def uses_teacher(self) -> bool:
        return self.method != "sft"


@dataclass(frozen=True)
class TrainConfig:
    """One training run (teacher preparation or a student trial)."""

    steps: int = 400
    """Optimizer steps; trials are budgeted by steps so methods compare at equal steps."""
    batch_size: int = 32
    """Micro-batch per worker (sequences)."""
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    seed: int = 0
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    num_workers: int = 1
    """Ray Train workers (data-parallel ranks) per run."""
    cpus_per_worker: float = 0.99
    """Logical CPUs per Train worker (drivers take 0.01, so 2 CPUs hold 2 one-worker trials)."""
    use_gpu: bool = False
    """One GPU per worker, nccl backend; CPU + gloo otherwise."""
    report_every: int = 100
    """Steps between progress reports (Ray Train polls reports every 2 s, so not every step)."""
    train_examples: int | None = None
    """Use only the first N training problems (None: the whole split)."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(
            _finite(self.learning_rate) and self.learning_rate > 0,
            f"learning rate must be > 0, got {self.learning_rate}",
        )
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(
            self.zero_stage in (0, 1, 2, 3),
            f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}",
        )
        _check(self.num_workers >= 1, f"num_workers must be >= 1, got {self.num_workers}")
        _check(self.cpus_per_worker > 0, f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        _check(self.report_every >= 1, f"report_every must be >= 1, got {self.report_every}")
        _check(
            self.train_examples is None or self.train_examples >= 1,
            f"train_examples must be >= 1, got {self.train_examples}",
        )


@dataclass(frozen=True)
class EvalConfig:
    """Greedy generation on the held-out test split."""

    max_items: int = 300
    """Evaluate the first N test items."""
    batch_size: int = 100
    max_new_tokens: int = 96

    def __post_init__(self) -> None:
        _check(self.max_items >= 1, f"eval max_items must be >= 1, got {self.max_items}")
        _check(self.batch_size >= 1, f"eval batch_size must be >= 1, got {self.batch_size}")
        _check(self.max_new_tokens >= 1, "eval max_new_tokens must be >= 1")


def _finite(value: float) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as a plain dict (for Ray configs, hashing and MLflow params)."""
    return dataclasses.asdict(config)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"kd": {"temperature": 2}} -> {"kd.temperature": 2}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat
