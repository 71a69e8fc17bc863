"""A study's plan without running it (`--dry-run`): the pairs, the trials, and for hub models
the GPUs per trial and the estimated memory per GPU (kdray.study.memory). Nothing is
downloaded, built or tracked."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from kdray.errors import ConfigError
from kdray.hub.tasks import tasks_for_domain
from kdray.hub.zoo import check_pair, hub_model
from kdray.study.config import StudyConfig
from kdray.study.memory import (
    TrialPlan,
    estimate_trial_memory,
    placement_estimates,
    plan_trial,
    teacher_forward_gpus,
)
from kdray.teacher.signal import CACHE_FULL, CACHE_TOP_K, ONLINE, choose_teacher_signal

GPU_MEMORY_GIB = 80.0
"""The GPU the plan sizes trials for (A100/H100 80 GB)."""
TRAIN_SET_EXAMPLES = {"math": 10_000, "commonsense": 15_000, "instruction": 15_011}
"""Nominal sizes of Math10K, Commonsense15K and Dolly-15K, for the planned step counts."""
TINY_VOCAB_BOUND = 1024
"""The tiny world's tokenizers stay under this many tokens, far below cache_full_vocab_limit,
so its plan can pick teacher signals without building them."""
CACHED = (CACHE_FULL, CACHE_TOP_K)


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
    """One row per student's SFT baseline and per teacher-student pair: trials, size, notes."""
    seeds = len(config.seeds)
    rows = [
        PairPlan(None, s, seeds, *_size(config, s, None, gpu_memory_gib))
        for s in config.distinct_students()
    ]
    for teacher, student in config.teacher_student_pairs():
        settings = config.kd_settings()
        signals = teacher_signals(config, teacher)
        online = ONLINE in signals  # cached trials hold no teacher on their GPUs
        gpus, memory = _size(config, student, teacher if online else None, gpu_memory_gib)
        notes = tuple(check_pair(hub_model(teacher), hub_model(student))) if _hub(config) else ()
        cached = sum(kind in CACHED for kind in signals)
        if cached:
            notes += (f"{cached} of {len(settings)} settings read the teacher cache",)
        trials = len(settings) * seeds * len(config.teacher_kinds)
        rows.append(PairPlan(teacher, student, trials, gpus, memory, notes))
    return rows


def teacher_signals(config: StudyConfig, teacher: str) -> list[str]:
    """The teacher signal kind of each KD setting of the pair (kdray.teacher.signal)."""
    vocab = hub_model(teacher).tokenizer_vocab if _hub(config) else TINY_VOCAB_BOUND
    return [choose_teacher_signal(kd, vocab).kind for kd in config.kd_settings()]


def _hub(config: StudyConfig) -> bool:
    """The study runs hub models (sized by the memory planner), not the tiny world."""
    return config.zoo == "hub"


def cache_build_gpus(
    config: StudyConfig, teacher: str, gpu_memory_gib: float = GPU_MEMORY_GIB
) -> int:
    """GPUs each task of a teacher cache build holds: 1 in the tiny world, else as many as the
    hub teacher's forward needs (kdray.study.memory.teacher_forward_gpus)."""
    if not _hub(config):
        return 1
    train = config.student_train
    return teacher_forward_gpus(
        hub_model(teacher), gpu_memory_gib, micro_batch=train.batch_size, seq_len=train.max_length
    )


def _cache_lines(config: StudyConfig, gpu_memory_gib: float) -> list[str]:
    """(hub) The teachers whose caches the study builds, with the GPUs of each build task."""
    cached = [
        teacher
        for teacher in config.teachers()
        if any(kind in CACHED for kind in teacher_signals(config, teacher))
    ]
    if not cached:
        return []
    sizes = []
    for teacher in cached:
        try:
            gpus = cache_build_gpus(config, teacher, gpu_memory_gib)
            sizes.append(f"{teacher} ({_count(gpus, 'GPU')} per task)")
        except ConfigError as error:
            sizes.append(f"{teacher} ({error})")
    return [
        "teacher caches (built once per teacher and data, in parallel Ray tasks): "
        + ", ".join(sizes),
        "",
    ]


def _memory_options(config: StudyConfig) -> dict:
    """The students' training settings that the memory estimate takes."""
    train = config.student_train
    return dict(
        finetune=train.finetune,
        lora_rank=train.lora_rank,
        lora_targets=train.lora_targets,
        micro_batch=train.batch_size,
        seq_len=train.max_length,
    )


def trial_layout(
    config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float = GPU_MEMORY_GIB
) -> TrialPlan | None:
    """The memory planner's layout of one hub trial with the study's teacher placement: fewest
    GPUs, ZeRO-2 unless only ZeRO-3 fits (one GPU: the study's own stage); None for tiny
    models or when not even 8 GPUs hold it."""
    if not _hub(config):
        return None
    options = _memory_options(config)
    s, t = hub_model(student), hub_model(teacher) if teacher else None
    try:
        plan = plan_trial(s, t, gpu_memory_gib, (config.kd.teacher_placement,), **options)
    except ConfigError:
        return None
    if plan.gpus == 1:  # nothing to shard: the stage the study asked for
        stage = config.student_train.zero_stage
        estimate = estimate_trial_memory(
            s, t, zero_stage=stage, teacher_placement=config.kd.teacher_placement, **options
        )
        plan = dataclasses.replace(plan, zero_stage=stage, estimate=estimate)
    return plan


def _size(config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float):
    """(GPUs per trial, estimated GiB per GPU) for hub models; (None, None) for tiny ones."""
    plan = trial_layout(config, student, teacher, gpu_memory_gib)
    return (plan.gpus, plan.estimate.total) if plan else (None, None)


def layout_needed(
    config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float = GPU_MEMORY_GIB
) -> TrialPlan:
    """The layout one hub trial takes; ConfigError (one line) when not even 8 GPUs hold it."""
    plan = trial_layout(config, student, teacher, gpu_memory_gib)
    if plan is None:
        raise _does_not_fit(config, student, teacher, gpu_memory_gib)
    return plan


def _does_not_fit(
    config: StudyConfig, student: str, teacher: str | None, gpu_memory_gib: float
) -> ConfigError:
    pair = f"{teacher} -> {student}" if teacher else student
    return ConfigError(
        f"{pair} does not fit on 8 x {gpu_memory_gib:g} GiB GPUs with teacher placement "
        f"{config.kd.teacher_placement} (estimate): try --teacher-placement zero3 or actor, "
        "or leave this pair out (--teacher/--students)"
    )


def check_plan(config: StudyConfig, gpu_memory_gib: float = GPU_MEMORY_GIB) -> list[PairPlan]:
    """What preparing the study would refuse after minutes of work, refused before any (the
    dry-run plan shows each as a note): a hub teacher's fine-tuning, a teacher cache's forward
    or a trial that 8 GPUs do not hold. Teacher signals that cannot be (gkd's on-policy
    batches from a cache) are refused by plan_pairs itself. Returns the plan's rows."""
    rows = plan_pairs(config, gpu_memory_gib)
    if not _hub(config):
        return rows
    for teacher in config.teachers():
        if "task-aware" in config.teacher_kinds:
            layout_needed(config, teacher, None, gpu_memory_gib)
        if any(kind in CACHED for kind in teacher_signals(config, teacher)):
            cache_build_gpus(config, teacher, gpu_memory_gib)
    for row in rows:
        if row.gpus_per_trial is None:
            raise _does_not_fit(config, row.student, row.teacher, gpu_memory_gib)
    return rows


def steps_per_trial(config: StudyConfig) -> int | None:
    """Optimizer steps of a trial when the study budgets by epochs over a known train set."""
    train = config.student_train
    if train.epochs is None:
        return train.steps
    examples = TRAIN_SET_EXAMPLES[config.domain] - (config.validation_items or 0)
    return train.resolved_steps(examples, 1)


def format_plan(config: StudyConfig, gpu_memory_gib: float = GPU_MEMORY_GIB) -> str:
    """The dry-run plan: the study's settings, its pairs' table, (hub) the teachers'
    fine-tuning, caches and placements, and a closing count of trials."""
    rows = plan_pairs(config, gpu_memory_gib)
    lines = _settings_lines(config)
    lines += ["", _table(rows, _hub(config)), ""]
    if "task-aware" in config.teacher_kinds and _hub(config):
        lines += [_teacher_fine_tuning_line(config, gpu_memory_gib), ""]
    if _hub(config):
        lines += _cache_lines(config, gpu_memory_gib)
        lines += _placement_lines(config, rows, gpu_memory_gib)
    lines.append(_summary_line(config, rows, gpu_memory_gib))
    return "\n".join(lines)


def _settings_lines(config: StudyConfig) -> list[str]:
    """What the study varies, how it trains, its loss and evaluation (and hub tasks)."""
    settings = config.kd_settings()
    lines = [
        f"plan of study {config.name!r} ({config.zoo} zoo, domain {config.domain}, "
        f"family {config.family}, {config.teacher_kind} teachers)",
        f"  methods: sft per student + {', '.join(config.methods)}; T {_join(config.temperatures)}"
        f"; sigma {_join(config.noise_sigmas)}; seeds {_join(config.seeds)}; "
        f"{len(settings)} KD settings per pair",
        _training_line(config),
        _loss_line(config),
    ]
    if config.pretrain is not None:
        bases = len(config.teachers()) + len(config.distinct_students()) * len(config.seeds)
        lines.insert(2, (
            f"  pretraining: {bases} bases on the world's generic text (the teacher's "
            f"{config.pretrain.teacher_steps} steps, a student's {config.pretrain.steps} per "
            "seed), cached; every run starts from its base"
        ))  # fmt: skip
    if _hub(config):
        tasks = ", ".join(t.display for t in tasks_for_domain(config.domain))
        lines.append(f"  evaluation tasks: {tasks}")
        if config.validation_items:
            lines.append(
                f"  validation: {config.validation_items} examples held out of the training set"
            )
    return lines


def _training_line(config: StudyConfig) -> str:
    """The students' fine-tuning, optimiser, batch and budget (and best-checkpoint rule)."""
    train = config.student_train
    steps = steps_per_trial(config)
    return (
        f"  training: {train.finetune}"
        + (
            f" (r={train.lora_rank}, alpha={train.lora_alpha}, dropout {train.lora_dropout}, "
            f"{', '.join(train.lora_targets)})"
            if train.finetune == "lora"
            else ""
        )
        + f", lr {train.learning_rate:g}, warmup {train.warmup_steps}, {train.lr_schedule} decay"
        + (f" to {train.min_lr_ratio:g} of the peak" if train.min_lr_ratio else "")
        + f", weight decay {train.weight_decay:g}, "
        f"batch {train.batch_size} x {train.grad_accum_steps} accumulation, max length "
        f"{train.max_length}, seed {train.seed}, "
        + (f"{train.epochs:g} epochs" if train.epochs else f"{train.steps} steps")
        + (f" (= {steps} steps)" if steps and train.epochs else "")
        + (
            f" on the first {train.train_examples} training items"
            if train.train_examples
            else " on all the training items"
        )
        + (
            f"; best of the validation loss every {train.eval_every} steps"
            if train.eval_every
            else ""
        )
    )


def _loss_line(config: StudyConfig) -> str:
    """The loss's CE weight and tokens, and how the students are evaluated."""
    kd, evaluation = config.kd, config.eval
    return (
        f"  loss: CE weight {kd.ce_weight:g}, tokens {kd.loss_tokens}; evaluation: "
        f"{evaluation.decoding}"
        + (
            f" (T={evaluation.sampling_temperature:g}, top_k={evaluation.top_k}, "
            f"seed {evaluation.sampling_seed})"
            if evaluation.decoding == "sampling"
            else ""
        )
        + f", {evaluation.max_new_tokens} new tokens"
    )


def _teacher_fine_tuning_line(config: StudyConfig, gpu_memory_gib: float) -> str:
    """GPUs and memory of each hub teacher's one-off LoRA SFT."""
    prep = []
    for teacher in config.teachers():
        gpus, memory = _size(config, teacher, None, gpu_memory_gib)
        prep.append(
            f"{teacher} ({_count(gpus, 'GPU')}, {memory:.1f} GiB)"
            if gpus
            else f"{teacher} (> 8 GPUs)"
        )
    return f"teacher fine-tuning (LoRA SFT on the domain, once): {', '.join(prep)}"


def _summary_line(config: StudyConfig, rows: list[PairPlan], gpu_memory_gib: float) -> str:
    """Pairs, students, teachers and trials; (hub) GPU-trials and what does not fit."""
    trials = sum(r.trials for r in rows)
    teachers = config.teachers()
    summary = (
        f"{_count(len(config.teacher_student_pairs()), 'pair')}, "
        f"{_count(len(config.distinct_students()), 'student')}, "
        f"{_count(len(teachers), 'teacher')} ({config.teacher_kind}"
        + (", each fine-tuned once and cached" if "task-aware" in config.teacher_kinds else "")
        + f"), {_count(trials, 'trial')}"
    )
    if _hub(config):
        sized = [r for r in rows if r.gpus_per_trial]
        gpu_trials = sum(r.trials * r.gpus_per_trial for r in sized)
        summary += f", {gpu_trials} GPU-trials on {gpu_memory_gib:g} GiB GPUs"
        unsized = sum(r.trials for r in rows if r.gpus_per_trial is None)
        if unsized:
            summary += (
                f"; {unsized} trials do not fit on 8 GPUs with teacher placement "
                f"{config.kd.teacher_placement} (see the placements above)"
            )
    return summary


def _placement_lines(config: StudyConfig, rows: list[PairPlan], gpu_memory_gib: float) -> list[str]:
    """Per pair with online-teacher trials: GPUs and memory of each teacher placement
    (--teacher-placement picks one)."""
    lines = []
    for row in rows:
        if row.teacher is None or ONLINE not in teacher_signals(config, row.teacher):
            continue
        estimates = placement_estimates(
            hub_model(row.student), hub_model(row.teacher), gpu_memory_gib,
            zero_stage=config.student_train.zero_stage, **_memory_options(config),
        )  # fmt: skip
        chosen = config.kd.teacher_placement
        lines.append(f"online teacher {row.teacher} -> {row.student}, per placement (estimate):")
        lines += [
            f"  {name}{' (chosen)' if name == chosen else ''}: {text}"
            for name, text in estimates.items()
        ]
    return lines + [""] if lines else []


def _table(rows: list[PairPlan], hub: bool) -> str:
    """The pairs' markdown table (with GPUs, memory and notes for hub models)."""
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
    """Values comma-separated, floats in their shortest form."""
    return ",".join(
        f"{v:g}" if isinstance(v, float) and not math.isnan(v) else str(v) for v in values
    )


def _count(number: int, noun: str) -> str:
    """A count and its noun, plural unless 1: `1 trial`, `2 trials`."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
