"""Typed, validated configs. Each dataclass documents its fields; invalid values raise
ConfigError in __post_init__ so nothing starts with a bad setting."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kdray.errors import ConfigError

FAMILIES = ("qwen", "llama")
"""Model families (tiny and hub alike): a teacher and its student are always of one family."""
METHODS = ("sft", "kd", "revkd", "seqkd", "gkd", "skew_fkl", "skew_rkl")
"""Training methods (names map 1:1 to losses, configs and tests; README has the formulas):
`sft` cross-entropy on the data; `kd` token-level forward KL(teacher||student) (the study's
released code calls this "SeqKD"); `revkd` token-level reverse KL(student||teacher); `seqkd`
Kim & Rush sequence-level KD: cross-entropy on the teacher's generated responses (optionally
mixed with `kd` on them); `gkd` generalized JSD(beta) with on-policy fraction lambda;
`skew_fkl`/`skew_rkl` DistiLLM's skew forward/reverse KL."""
TEACHER_LOGIT_METHODS = ("kd", "revkd", "gkd", "skew_fkl", "skew_rkl")
NOISE_PLACEMENTS = ("raw", "tempered")
LOSS_TOKENS = ("response", "all")
FINETUNE_MODES = ("full", "lora")
LR_SCHEDULES = ("cosine", "linear")
DECODING = ("greedy", "sampling")
TEACHER_SIGNALS = ("auto", "online", "cache")
TEACHER_PLACEMENTS = ("replica", "zero3", "actor")
TEACHER_KINDS = ("task-aware", "task-unaware")
"""`task-aware`: fine-tuned on the domain first; `task-unaware`: the base model as it is."""
STUDY_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "up_proj", "down_proj")


def _check(condition: bool, message: str) -> None:
    """ConfigError(message) unless the condition holds."""
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
    """Which tokens count in every loss: `response` (after the prompt) or `all` non-pad tokens
    (the study's code)."""
    noise_on: str = "raw"
    """Where noise goes: `raw` teacher logits (the study) or `tempered` logits (after / T)."""
    beta: float = 0.5
    """gkd: JSD interpolation; 0 is forward KL, 1 reverse KL (their limits, as in TRL)."""
    on_policy_fraction: float = 0.0
    """gkd: lambda, the chance that a batch's responses are the student's own samples."""
    gkd_temperature_in_loss: bool = True
    """gkd: apply T in the loss too; False reproduces the study's code (T only in sampling)."""
    skew_alpha: float = 0.1
    """skew_fkl / skew_rkl: alpha of the skewed mixture (DistiLLM's default 0.1)."""
    seqkd_kd_weight: float = 0.0
    """seqkd: weight k of forward KL in (1 - k) * CE + k * KD on the teacher's responses."""
    chunk_tokens: int | None = None
    """Tokens per chunk in the loss: peak extra memory is bounded by the chunk, not the batch.
    None: as many tokens as make 1M logits (4 MiB per fp32 temporary), e.g. 6 at 152k vocab."""
    teacher_signal: str = "auto"
    """Where teacher logits come from: `online` (the teacher runs in every step), `cache` (its
    log-probs on the training data, computed once and shared by every trial; an error where the
    cache cannot represent the setting) or `auto`: the cache where it is exact or measured
    harmless, online otherwise (kdray/teacher/signal.py has the rules)."""
    teacher_placement: str = "replica"
    """Where an online teacher runs (kdray/teacher/placement.py): `replica` (a full copy in
    every worker), `zero3` (sharded over the trial's ranks by a DeepSpeed ZeRO-3 engine) or
    `actor` (a Ray actor of its own serves the logits). `--dry-run` prints each one's memory."""
    cache_top_k: int = 128
    """Tokens per position a top-k cache keeps (with one bucket for the remaining mass)."""
    cache_full_vocab_limit: int = 8192
    """Vocabularies up to this size are cached whole, which is exact for every T and sigma;
    larger ones (hub models: 128k-152k) keep the top cache_top_k."""

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
        for name in ("beta", "on_policy_fraction", "skew_alpha", "seqkd_kd_weight"):
            value = getattr(self, name)
            _check(_finite(value) and 0 <= value <= 1, f"{name} must be in [0, 1], got {value}")
        # alpha = 1 mixes a distribution with itself: skew KL is 0 whatever the student does.
        _check(
            self.skew_alpha < 1 or self.method not in ("skew_fkl", "skew_rkl"),
            f"skew_alpha = 1 makes {self.method} zero for every student (nothing to learn): "
            "use skew_alpha in [0, 1)",
        )
        _check(
            self.noise_on in NOISE_PLACEMENTS,
            f"unknown noise_on {self.noise_on!r}: choose one of {', '.join(NOISE_PLACEMENTS)}",
        )
        _check(
            self.chunk_tokens is None or self.chunk_tokens >= 1,
            f"chunk_tokens must be >= 1, got {self.chunk_tokens}",
        )
        _check(
            self.loss_tokens in LOSS_TOKENS,
            f"unknown loss_tokens {self.loss_tokens!r}: choose one of {', '.join(LOSS_TOKENS)}",
        )
        _check(
            self.teacher_signal in TEACHER_SIGNALS,
            f"unknown teacher_signal {self.teacher_signal!r}: "
            f"choose one of {', '.join(TEACHER_SIGNALS)}",
        )
        _check(
            self.teacher_placement in TEACHER_PLACEMENTS,
            f"unknown teacher_placement {self.teacher_placement!r}: "
            f"choose one of {', '.join(TEACHER_PLACEMENTS)}",
        )
        _check(self.cache_top_k >= 1, f"cache_top_k must be >= 1, got {self.cache_top_k}")
        _check(
            self.cache_full_vocab_limit >= 0,
            f"cache_full_vocab_limit must be >= 0, got {self.cache_full_vocab_limit}",
        )

    @property
    def uses_teacher(self) -> bool:
        """The trial is distillation (it has a teacher), whatever signal it takes from it."""
        return self.method != "sft"

    @property
    def needs_teacher_logits(self) -> bool:
        return self.method in TEACHER_LOGIT_METHODS or (
            self.method == "seqkd" and self.seqkd_kd_weight > 0
        )


RECOVERY_FIELDS = ("checkpoint_every", "max_failures")


@dataclass(frozen=True)
class TrainConfig:
    """One training run (teacher preparation or a student trial)."""

    steps: int = 400
    """Optimizer steps; trials are budgeted by steps so methods compare at equal steps."""
    batch_size: int = 32
    """Micro-batch per worker (sequences)."""
    grad_accum_steps: int = 1
    """Micro-batches per optimizer step; the loss divides by the whole step's token count."""
    learning_rate: float = 3e-3
    warmup_steps: int = 20
    lr_schedule: str = "cosine"
    """After warm-up: `cosine` or `linear` decay to `min_lr_ratio` at the last step (the
study: linear to zero)."""
    min_lr_ratio: float = 0.0
    """The learning rate's floor, as a fraction of `learning_rate` (0: decay to zero). A floor
    keeps the last steps learning, so where a run is read off its curve matters less."""
    epochs: float | None = None
    """If set, overrides `steps`: epochs over the run's training examples at the effective
    batch (batch_size x grad_accum_steps x workers), as the study budgets its runs."""
    max_length: int = 256
    """Training sequences (prompt + response + EOS) are cut to this many tokens."""
    finetune: str = "full"
    """`full` fine-tuning or `lora` adapters (peft), merged into the weights when exported."""
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = STUDY_LORA_TARGETS
    """Module names that get adapters (the study: q, k, v, up and down projections)."""
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    length_group_window: int = 1
    """Batches per window that are sorted by length before being cut (less padding). 1 draws
    every batch at random: grouping 50 batches ran 1.5x more steps/s here, but its batches of
    alike problems left a 300-step student at 2.3x the held-out KL (benchmarks/vs_trl.py)."""
    seed: int = 0
    zero_stage: int = 0
    """DeepSpeed ZeRO stage 0-3."""
    num_workers: int = 1
    """Ray Train workers (data-parallel ranks) per run."""
    placement_strategy: str = "PACK"
    """How Ray places a run's workers: PACK (as few nodes as possible) or SPREAD (one per
    node where it can: data-parallel training across machines)."""
    cpus_per_worker: float = 0.99
    """Logical CPUs per Train worker (drivers take 0.01, so 2 CPUs hold 2 one-worker trials)."""
    use_gpu: bool = False
    """One GPU per worker, nccl backend; CPU + gloo otherwise."""
    report_every: int = 100
    """Steps between progress reports (Ray Train polls reports every 2 s, so not every step)."""
    report_val_score: int = 0
    """N > 0: every progress report also carries `val_score`, the greedy score on the first N
    validation items, which a search's ASHA scheduler and Optuna compare trials on (the final
    report's `val_score` is the full validation score). 0: reports carry the loss only."""
    checkpoint_every: int | None = None
    """Steps between resumable checkpoints (weights, optimizer, data position, RNG states),
    saved with that step's progress report, from which Ray Train restarts failed workers; a
    multiple of report_every. None: with every progress report."""
    max_failures: int = 2
    """Worker failures (a killed worker, a lost node) a run recovers from by restarting its
    Train workers from the latest checkpoint; -1: no limit, 0: fail at the first."""
    train_examples: int | None = None
    """Use only the first N training problems (None: the whole split)."""
    eval_every: int | None = None
    """Every N steps (and at the last) compute the run's own loss on the validation split and
    export the weights of the best such point, as the study's Trainer does with
    load_best_model_at_end (None: export the last weights)."""
    average_decay: float = 0.0
    """> 0: export and evaluate an exponential moving average of the weights over the steps
    (Polyak averaging; kdray/train/averaging.py) with this decay per step, instead of the last
    weights: 0.99 averages over about the last 100 steps. 0: the last weights."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lora_targets", tuple(self.lora_targets))  # lists from JSON
        self._check_optimisation()
        self._check_workers_and_reports()
        self._check_data_and_schedule()
        self._check_lora()

    def _check_optimisation(self) -> None:
        """Steps, batch size, learning rate, warm-up and ZeRO stage."""
        _check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(
            _finite(self.learning_rate) and self.learning_rate > 0,
            f"learning rate must be > 0, got {self.learning_rate}",
        )
        _check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        _check(
            0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
        )
        _check(
            self.zero_stage in (0, 1, 2, 3),
            f"zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}",
        )

    def _check_workers_and_reports(self) -> None:
        """Workers, their placement and CPUs, progress reports, checkpoints and failures."""
        _check(self.num_workers >= 1, f"num_workers must be >= 1, got {self.num_workers}")
        _check(
            self.placement_strategy in ("PACK", "SPREAD"),
            f"placement_strategy must be PACK or SPREAD, got {self.placement_strategy!r}",
        )
        _check(self.cpus_per_worker > 0, f"cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        _check(self.report_every >= 1, f"report_every must be >= 1, got {self.report_every}")
        _check(
            self.checkpoint_every is None
            or (self.checkpoint_every >= 1 and self.checkpoint_every % self.report_every == 0),
            f"checkpoint_every must be a multiple of report_every ({self.report_every}), "
            f"got {self.checkpoint_every}",
        )
        _check(self.max_failures >= -1, f"max_failures must be >= -1, got {self.max_failures}")
        _check(
            self.report_val_score >= 0,
            f"report_val_score must be >= 0 items, got {self.report_val_score}",
        )
        _check(
            self.grad_accum_steps >= 1,
            f"grad_accum_steps must be >= 1, got {self.grad_accum_steps}",
        )

    def _check_data_and_schedule(self) -> None:
        """Training examples, fine-tuning mode, LR schedule, epochs, evaluation and lengths."""
        _check(
            self.train_examples is None or self.train_examples >= 1,
            f"train_examples must be >= 1, got {self.train_examples}",
        )
        _check(
            self.finetune in FINETUNE_MODES,
            f"unknown finetune {self.finetune!r}: choose one of {', '.join(FINETUNE_MODES)}",
        )
        _check(
            self.lr_schedule in LR_SCHEDULES,
            f"unknown lr_schedule {self.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}",
        )
        _check(
            self.epochs is None or (_finite(self.epochs) and self.epochs > 0),
            f"epochs must be > 0, got {self.epochs}",
        )
        _check(
            self.eval_every is None or self.eval_every >= 1,
            f"eval_every must be >= 1 step, got {self.eval_every}",
        )
        _check(
            _finite(self.average_decay) and 0 <= self.average_decay < 1,
            f"average_decay must be in [0, 1) (0: the last weights), got {self.average_decay}",
        )
        _check(
            not (self.average_decay and self.eval_every),
            "average_decay and eval_every both choose the weights a run exports: set one of them",
        )
        _check(self.max_length >= 8, f"max_length must be >= 8 tokens, got {self.max_length}")
        _check(
            self.length_group_window >= 1,
            f"length_group_window must be >= 1, got {self.length_group_window}",
        )

    def _check_lora(self) -> None:
        """LoRA rank, alpha, dropout and target modules."""
        _check(self.lora_rank >= 1, f"lora_rank must be >= 1, got {self.lora_rank}")
        _check(self.lora_alpha > 0, f"lora_alpha must be > 0, got {self.lora_alpha}")
        _check(
            _finite(self.lora_dropout) and 0 <= self.lora_dropout < 1,
            f"lora_dropout must be in [0, 1), got {self.lora_dropout}",
        )
        _check(len(self.lora_targets) > 0, "lora_targets is empty: name at least one module")

    def checkpoints_at(self, step: int) -> bool:
        """Whether the progress report of `step` carries a resumable checkpoint."""
        return step % (self.checkpoint_every or self.report_every) == 0

    def what_it_trains(self) -> dict[str, Any]:
        """The fields that decide the trained weights, for content keys: how a run recovers
        from failures does not change what it produces."""
        values = to_dict(self)
        for name in RECOVERY_FIELDS:
            values.pop(name)
        return values

    def resolved_steps(self, examples: int, world_size: int) -> int:
        """Optimizer steps of the run: `steps`, or `epochs` over `examples` when set."""
        if self.epochs is None:
            return self.steps
        per_step = self.batch_size * self.grad_accum_steps * world_size
        return max(1, math.ceil(self.epochs * examples / per_step))


@dataclass(frozen=True)
class EvalConfig:
    """Generation on the held-out splits: greedy (the default here) or the study's sampling."""

    max_items: int = 300
    """Evaluate the first N test items."""
    batch_size: int = 100
    max_new_tokens: int = 96
    decoding: str = "greedy"
    """`greedy`, or `sampling` with the temperature, top-k and seed below (the study: T=1,
    top_k=0 i.e. the full distribution, 256 new tokens, seed 6)."""
    sampling_temperature: float = 1.0
    top_k: int = 0
    """0: no top-k cut."""
    sampling_seed: int = 6

    def __post_init__(self) -> None:
        _check(self.max_items >= 1, f"eval max_items must be >= 1, got {self.max_items}")
        _check(self.batch_size >= 1, f"eval batch_size must be >= 1, got {self.batch_size}")
        _check(self.max_new_tokens >= 1, "eval max_new_tokens must be >= 1")
        _check(
            self.decoding in DECODING,
            f"unknown decoding {self.decoding!r}: choose one of {', '.join(DECODING)}",
        )
        _check(
            _finite(self.sampling_temperature) and self.sampling_temperature > 0,
            f"sampling temperature must be > 0, got {self.sampling_temperature}",
        )
        _check(self.top_k >= 0, f"top_k must be >= 0 (0: no cut), got {self.top_k}")


def score_metric(domain: str) -> str:
    """What a domain is scored by: ROUGE-L for instruction following, else accuracy."""
    return "rouge_l" if domain == "instruction" else "accuracy"


def _finite(value: float) -> bool:
    """A real number (int or float), neither NaN nor infinite."""
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
