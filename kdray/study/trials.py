"""A study's trials: one plan per trial (identity key, run name, MLflow params, teacher,
RunSpec), expanded from a StudyConfig over a built world."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from kdray.config.run import KDConfig, TrainConfig
from kdray.config.run_spec import RunSpec
from kdray.study.bases import init_dir
from kdray.study.config import StudyConfig
from kdray.study.plan import layout_needed
from kdray.teacher.signal import ONLINE, choose_teacher_signal

if TYPE_CHECKING:
    from kdray.hub.world import HubWorld
    from kdray.world.build import World


def trial_plans(config: StudyConfig, world: World | HubWorld) -> list[dict[str, Any]]:
    """One plan per trial: its identity, MLflow params (the tidy schema), the teacher it
    distils from (None for sft) and its RunSpec. SFT runs once per student and seed."""
    plans = []
    for seed in config.seeds:
        for student in config.distinct_students():
            plans.append(trial_plan(config, world, None, student, seed, KDConfig("sft")))
        for teacher, student in config.teacher_student_pairs():
            for kind in config.teacher_kinds:
                for kd in config.kd_settings():
                    plans.append(trial_plan(config, world, teacher, student, seed, kd, kind))
    return plans


def trial_plan(
    config: StudyConfig,
    world: World | HubWorld,
    teacher: str | None,
    student: str,
    seed: int,
    kd: KDConfig,
    teacher_kind: str = "",
) -> dict:
    """The plan of one trial: key, run name, teacher, teacher kind, params and RunSpec."""
    label = run_label(kd, student, teacher, teacher_kind, len(config.teacher_kinds) > 1)
    run_name = f"{label} seed={seed}" if len(config.seeds) > 1 else label
    train = dataclasses.replace(config.student_train, seed=seed)
    if config.zoo == "hub":  # as many GPUs as the trial needs (kdray.study.plan), ZeRO-3
        train = hub_trial_train(config, world, teacher, student, kd, train)
    return {
        "key": trial_key(teacher, student, seed, kd, teacher_kind),
        "run_name": run_name,
        "label": label,
        "teacher": teacher,
        "teacher_kind": teacher_kind if teacher else None,
        "params": trial_params(config, world, teacher, student, seed, kd, teacher_kind),
        "spec": RunSpec.in_world(
            world,
            "student",
            student,
            train,
            kd,
            config.eval,
            init_dir=init_dir(config, world, student, seed, teacher=False),
            system_metrics_seconds=config.system_metrics_seconds,
        ),  # fmt: skip
    }


def seed_groups(plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Tune trials of a grid when each setting's seeds share one Train run: one plan per
    setting, its `members` the setting's plans in seed order (kdray.trial.driver trains them
    in turn), so the fixed cost of a Train run is paid once per setting. A setting with one
    seed stays its own plan."""
    settings: dict[str, list[dict[str, Any]]] = {}
    for plan in plans:
        settings.setdefault(setting_key(plan), []).append(plan)
    groups = []
    for setting, members in settings.items():
        if len(members) == 1:
            groups.append(members[0])
            continue
        members.sort(key=lambda plan: plan["params"]["seed"])
        seeds = ",".join(str(plan["params"]["seed"]) for plan in members)
        groups.append(
            {
                "key": f"{setting}|seeds={seeds}",
                "run_name": f"{members[0]['label']} seeds {seeds}",
                "members": members,
            }
        )
    return groups


def setting_key(plan: dict[str, Any]) -> str:
    """A trial's key without its seed: what the seeds of one setting share."""
    return plan["key"].replace(f"|seed={plan['params']['seed']}", "")


def packed_groups(plans: list[dict[str, Any]], slots: int) -> list[dict[str, Any]]:
    """The Tune trials of a grid packed into `slots` Train runs (the trials that run at
    once): its runs, longest first, each onto the Train run with the least expected work so
    far, so the Train runs end together and each pays a Train run's fixed cost once. A Train
    run trains its runs in the grid's order, setting by setting. A grid with no more runs
    than slots keeps a Train run per run."""
    if len(plans) <= slots:
        return plans
    bins: list[list[dict[str, Any]]] = [[] for _ in range(slots)]
    loads = [0.0] * slots
    for plan in longest_first(plans):
        emptiest = loads.index(min(loads))
        bins[emptiest].append(plan)
        loads[emptiest] += expected_work(plan)
    order = {id(plan): position for position, plan in enumerate(plans)}
    packed = []
    for number, chosen in enumerate(bins, start=1):
        members = sorted(chosen, key=lambda plan: (setting_key(plan), order[id(plan)]))
        packed.append(
            {
                "key": "+".join(plan["key"] for plan in members),
                "run_name": f"Train run {number} of {slots} ({len(members)} runs)",
                "members": members,
                "packed": True,
            }
        )
    return packed


def expected_work(trial: dict[str, Any]) -> float:
    """A Tune trial's work in relative units: student size x steps, over its runs."""

    def steps(spec) -> int:
        return (spec["train"]["steps"] if isinstance(spec, dict) else spec.train.steps) or 1

    members = trial.get("members", [trial])
    return sum(float(m["params"]["student_params_b"]) * steps(m["spec"]) for m in members)


def longest_first(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Tune trials in order of their expected work, largest first (the grid's order among
    equals), so the last trials to start are short ones and no slot idles long while one long
    trial finishes."""
    return sorted(trials, key=lambda trial: -expected_work(trial))


def trial_key(teacher: str | None, student: str, seed: int, kd: KDConfig, teacher_kind: str) -> str:
    """The trial's identity in a study (what --resume and the outage delivery match on)."""
    pair = f"{teacher}>{student}" if teacher else student
    key = f"{pair}|{kd.method}|T={kd.temperature:g}|sigma={kd.noise_sigma:g}|seed={seed}"
    if teacher_kind != "task-aware" and teacher:  # keys of task-aware trials stay as they were
        key += f"|{teacher_kind}"
    return key


def trial_params(
    config: StudyConfig,
    world: World | HubWorld,
    teacher: str | None,
    student: str,
    seed: int,
    kd: KDConfig,
    teacher_kind: str,
) -> dict[str, Any]:
    """The trial's MLflow params in the tidy schema the analysis reads."""
    sizes, widths = world.parameter_counts(), world.lm_head_widths()
    tempered = kd.needs_teacher_logits
    params = {
        "study": config.name,
        "teacher": teacher or "",
        "student": student,
        "student_params_b": sizes[student] / 1e9,
        "teacher_params_b": sizes[teacher] / 1e9 if teacher else "",
        "method": kd.method,
        "temperature": kd.temperature if tempered else "",
        "noise_sigma": kd.noise_sigma if tempered else "",
        "teacher_kind": teacher_kind if teacher else "",
        "domain": config.domain,
        "family": config.family,
        "tasks": ",".join(world.tasks()),
        "seed": seed,
        "finetune": config.student_train.finetune,
    }
    if tempered:  # lm_head widths may differ within a family: KD runs over the tokenizer's
        params.update(
            vocab_compared=world.built_model(student).tokenizer_vocab,
            teacher_lm_head_width=widths[teacher],
            student_lm_head_width=widths[student],
        )
    return params


def hub_trial_train(
    config: StudyConfig,
    world: World | HubWorld,
    teacher: str | None,
    student: str,
    kd: KDConfig,
    train: TrainConfig,
) -> TrainConfig:
    """A hub trial's training with the GPUs and ZeRO stage its memory plan needs."""
    vocab = world.built_model(student).tokenizer_vocab
    # Only an online teacher takes GPU memory in the trial; a cached one is read.
    online = kd.needs_teacher_logits and choose_teacher_signal(kd, vocab).kind == ONLINE
    layout = layout_needed(config, student, teacher if online else None)
    return dataclasses.replace(train, num_workers=layout.gpus, zero_stage=layout.zero_stage)


def run_label(
    kd: KDConfig, student: str, teacher: str | None, teacher_kind: str, show_kind: bool
) -> str:
    """A trial's MLflow run name, readable at a glance: `kd T=2 σ=0 tiny-qwen2-s ← tiny-qwen2-m`
    (`sft tiny-qwen2-s` for a baseline); the teacher kind is added when a study compares them."""
    label = kd.method
    if kd.needs_teacher_logits:
        label += f" T={kd.temperature:.3g} σ={kd.noise_sigma:.3g}"
    if teacher is None:
        return f"{label} {student}"
    kind = f" ({teacher_kind})" if show_kind else ""
    return f"{label} {student} ← {teacher}{kind}"
