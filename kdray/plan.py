"""A study's plan without running it (`--dry-run`): the pairs, the trials, and for hub models
the GPUs per trial and the estimated memory per GPU (kdray.memory_plan). Nothing is
downloaded, built or tracked."""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdray.errors import ConfigError
from kdray.hub_zoo import check_pair, hub_model
from kdray.memory_plan import estimate_trial_memory, gpus_per_trial
from kdray.study_config import StudyConfig
from kdray.tasks import tasks_for_domain

GPU_MEMORY_GIB = 80.0
"""The GPU the plan sizes trials for (A100/H100 80 GB)."""
TRAIN_SET_EXAMPLES = {"math": 10_000, "commonsense": 15_000, "instruction": 15_011}
"""Nominal sizes of Math10K, Commonsense15K and Dolly-15K, for the planned step counts."""


@dataclass(frozen=True)
class PairPlan:
    teacher: str | None
    """None for a student's SFT baseline."""
    student: str
    trials: int
    gpus_per_trial: int | None
    """None when not even 8 GPUs hold the trial as the code runs it today."""
    memory_gib: float | None
    notes: tuple[str, ...] = ()


def plan_pairs(config: StudyConfig, gpu_memory_gib: float = GPU_MEMORY_GIB) -> list[PairPlan]:
    seeds = len(config.seeds)
    rows = [
        PairPlan(None, s, seeds, *_size(config, s, None, gpu_memory_gib))
        for s in config.distinct_students()
    ]
    for teacher, student in config.teacher_student_pairs():
        settings = config.kd_settings()
        logits = any(kd.needs_teacher_logits for kd in settings)
        gpus, memory = _size(config, student, teacher if logits else None, gpu_memory_gib)
        notes = tuple(check_pair(hub_model(teacher), hub_model(student))) if _hub(config) else ()
        rows.append(PairPlan(teacher, student, len(settings) * seeds, gpus, memory, notes))
    return rows


def _hub(config: StudyConfig) -> bool:
    return config.zoo == "hub"


def _size(config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float):
    """(GPUs per trial, estimated GiB per GPU) for hub models; (None, None) for tiny ones."""
    if not _hub(config):
        return None, None
    train = config.student_train
    options = dict(
        finetune=train.finetune,
        lora_rank=train.lora_rank,
        lora_targets=train.lora_targets,
        micro_batch=train.batch_size,
        seq_len=train.max_length,
        shard_teacher=False,  # today each rank holds the whole teacher
    )
    s, t = hub_model(student), hub_model(teacher) if teacher else None
    try:
        gpus = gpus_per_trial(s, t, gpu_memory_gib, zero_stage=train.zero_stage, **options)
    except ConfigError:
        return None, None
    stage = train.zero_stage if gpus == 1 else 3
    memory = estimate_trial_memory(s, t, zero_stage=stage, gpus=gpus, **options).total
    return gpus, memory


def gpus_needed(
    config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float = GPU_MEMORY_GIB
) -> int:
    """GPUs one hub trial takes; ConfigError (one line) when not even 8 hold it."""
    gpus, _ = _size(config, student, teacher, gpu_memory_gib)
    if gpus is None:
        pair = f"{teacher} -> {student}" if teacher else student
        raise ConfigError(
            f"{pair} does not fit on 8 x {gpu_memory_gib:g} GiB GPUs while every rank holds "
            "the whole teacher (estimate): leave this pair out (--teacher/--students)"
        )
    return gpus


def steps_per_trial(config: StudyConfig) -> int | None:
    """Optimizer steps of a trial when the study budgets by epochs over a known train set."""
    train = config.student_train
    if train.epochs is None:
        return train.steps
    examples = TRAIN_SET_EXAMPLES[config.domain] - (config.validation_items or 0)
    return train.resolved_steps(examples, 1)


def format_plan(config: StudyConfig, gpu_memory_gib: float = GPU_MEMORY_GIB) -> str:
    rows = plan_pairs(config, gpu_memory_gib)
    train, kd, evaluation = config.student_train, config.kd, config.eval
    settings = config.kd_settings()
    steps = steps_per_trial(config)
    lines = [
        f"plan of study {config.name!r} ({config.zoo} zoo, domain {config.domain}, "
        f"family {config.family}, {config.teacher_kind} teachers)",
        f"  methods: sft per student + {', '.join(config.methods)}; T {_join(config.temperatures)}"
        f"; sigma {_join(config.noise_sigmas)}; seeds {_join(config.seeds)}; "
        f"{len(settings)} KD settings per pair",
        f"  training: {train.finetune}"
        + (
            f" (r={train.lora_rank}, alpha={train.lora_alpha}, dropout {train.lora_dropout}, "
            f"{', '.join(train.lora_targets)})"
            if train.finetune == "lora"
            else ""
        )
        + f", lr {train.learning_rate:g}, warmup {train.warmup_steps}, {train.lr_schedule} decay, "
        f"batch {train.batch_size} x {train.grad_accum_steps} accumulation, max length "
        f"{train.max_length}, seed {train.seed}, "
        + (f"{train.epochs:g} epochs" if train.epochs else f"{train.steps} steps")
        + (f" (= {steps} steps)" if steps and train.epochs else "")
        + (
            f"; best of the validation loss every {train.eval_every} steps"
            if train.eval_every
            else ""
        ),
        f"  loss: CE weight {kd.ce_weight:g}, tokens {kd.loss_tokens}; evaluation: "
        f"{evaluation.decoding}"
        + (
            f" (T={evaluation.sampling_temperature:g}, top_k={evaluation.top_k}, "
            f"seed {evaluation.sampling_seed})"
            if evaluation.decoding == "sampling"
            else ""
        )
        + f", {evaluation.max_new_tokens} new tokens",
    ]
    if _hub(config):
        tasks = ", ".join(t.display for t in tasks_for_domain(config.domain))
        lines.append(f"  evaluation tasks: {tasks}")
        if config.validation_items:
            lines.append(
                f"  validation: {config.validation_items} examples held out of the training set"
            )
    lines += ["", _table(rows, _hub(config)), ""]
    if config.teacher_kind == "task-aware" and _hub(config):
        prep = []
        for teacher in config.teachers():
            gpus, memory = _size(config, teacher, None, gpu_memory_gib)
            prep.append(
                f"{teacher} ({_count(gpus, 'GPU')}, {memory:.1f} GiB)"
                if gpus
                else f"{teacher} (> 8 GPUs)"
            )
        lines += [f"teacher fine-tuning (LoRA SFT on the domain, once): {', '.join(prep)}", ""]
    trials = sum(r.trials for r in rows)
    teachers = config.teachers()
    summary = (
        f"{_count(len(config.teacher_student_pairs()), 'pair')}, "
        f"{_count(len(config.distinct_students()), 'student')}, "
        f"{_count(len(teachers), 'teacher')} ({config.teacher_kind}"
        + (", each fine-tuned once and cached" if config.teacher_kind == "task-aware" else "")
        + f"), {_count(trials, 'trial')}"
    )
    if _hub(config):
        sized = [r for r in rows if r.gpus_per_trial]
        gpu_trials = sum(r.trials * r.gpus_per_trial for r in sized)
        summary += f", {gpu_trials} GPU-trials on {gpu_memory_gib:g} GiB GPUs"
        unsized = sum(r.trials for r in rows if r.gpus_per_trial is None)
        if unsized:
            summary += (
                f"; {unsized} trials do not fit on 8 GPUs while every rank holds the whole "
                "teacher (cache its log-probs or shard it)"
            )
    lines.append(summary)
    return "\n".join(lines)


def _table(rows: list[PairPlan], hub: bool) -> str:
    header = ["teacher", "student", "trials"]
    if hub:
        header += ["GPUs/trial", "GiB/GPU (est.)", "notes"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.teacher or "(sft)", row.student, str(row.trials)]
        if hub:
            cells += [
                str(row.gpus_per_trial) if row.gpus_per_trial else "> 8",
                f"{row.memory_gib:.1f}" if row.memory_gib else "-",
                "; ".join(row.notes),
            ]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _join(values) -> str:
    return ",".join(
        f"{v:g}" if isinstance(v, float) and not math.isnan(v) else str(v) for v in values
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"
