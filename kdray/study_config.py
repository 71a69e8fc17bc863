"""StudyConfig: what a study varies and what it fixes, validated before anything runs.
Kept free of Ray and MLflow imports so the command line answers bad input at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.cache import default_cache_dir
from kdray.config import TEACHER_KINDS, EvalConfig, KDConfig, TrainConfig, _check
from kdray.hub_zoo import check_pair, hub_model
from kdray.run_spec import RunSpec
from kdray.world.domains import WorldConfig, check_domain, domain_of
from kdray.world.synthetic_math import MathWorldConfig
from kdray.world.zoo import FAMILIES, tiny_model

if TYPE_CHECKING:
    from kdray.hub_world import HubWorld
    from kdray.world.build import World

ZOOS = ("tiny", "hub")


@dataclass(frozen=True)
class StudyConfig:
    """What a study varies (methods, temperatures, noise, students, seeds) and what it fixes."""

    name: str = "temperature"
    preset: str = "tiny"
    """The preset it started from (`tiny` or `paper`), tagged on every MLflow run."""
    resume: bool = False
    """Continue the latest unfinished run of this study in its experiment (kdray.study)."""
    zoo: str = "tiny"
    """`tiny`: models and data built here (kdray.world); `hub`: the study's Hugging Face
    checkpoints and benchmarks (kdray.hub_zoo, kdray.tasks)."""
    domain: str = "math"
    """`math`, `commonsense` or `instruction`; must be the domain of `world`."""
    family: str = "qwen"
    """Model family (`qwen` or `llama`; `all` for hub pairs of both): teacher and students
    come from it, sharing its tokenizer."""
    teacher_kinds: tuple[str, ...] = ("task-aware",)
    """Kinds of teacher each KD setting distils from. `task-aware`: the teacher is first
    fine-tuned on the domain's training data (cached); `task-unaware`: the family's base
    model as it is (the study's ablation). Both: every KD trial runs once with each."""
    teacher: str = "tiny-qwen2-m"
    students: tuple[str, ...] = ("tiny-qwen2-xs", "tiny-qwen2-s")
    pairs: tuple[tuple[str, str], ...] = ()
    """(teacher, student) pairs; when given they replace `teacher` x `students`."""
    methods: tuple[str, ...] = ("kd", "revkd")
    """KD methods of the grid; every student also gets one `sft` trial per seed (the baseline)."""
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0)
    noise_sigmas: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    kd: KDConfig = field(default_factory=KDConfig)
    """Knobs shared by the KD trials (CE weight, beta, lambda, alpha, ...); each trial sets its
    own method, temperature and noise."""
    world: WorldConfig | None = field(default_factory=MathWorldConfig)
    """The tiny world's task (None for the hub zoo)."""
    data_dir: str | None = None
    """Hub zoo: a local folder with the LLM-Adapters / MiniLLM data files (None: the hub)."""
    validation_items: int | None = None
    """Validation items held out of the training set (None: the world's own split)."""
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: str | None = None
    """MLflow experiment; default `kdray-<name>`."""
    tracking_uri: str | None = None
    """MLflow store; default MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db."""
    tracking_wait: float = 600.0
    """Seconds a trial waits for an unreachable tracking server before the study stops (its
    results kept on disk for --resume); training itself goes on meanwhile."""
    cache_dir: str | None = None
    """Worlds, teachers and Ray results; default KDRAY_CACHE or ~/.cache/kdray."""
    max_concurrent: int | None = None
    """Trials in flight; default what the cluster's CPUs (or GPUs) can run at once."""
    results_dir: str = "results"
    """Where the results table and figure are written (also logged to MLflow)."""

    def __post_init__(self) -> None:
        _check(
            self.tracking_wait >= 0,
            f"--tracking-wait must be >= 0 seconds, got {self.tracking_wait:g}",
        )
        check_domain(self.domain)
        _check(self.zoo in ZOOS, f"unknown zoo {self.zoo!r}: choose tiny or hub")
        families = (*FAMILIES, "all") if self.zoo == "hub" else FAMILIES
        _check(
            self.family in families,
            f"unknown family {self.family!r}: choose one of {', '.join(families)}",
        )
        object.__setattr__(self, "teacher_kinds", tuple(self.teacher_kinds))
        for kind in self.teacher_kinds:
            _check(
                kind in TEACHER_KINDS,
                f"unknown teacher kind {kind!r}: choose one of {', '.join(TEACHER_KINDS)}",
            )
        _check(
            self.data_dir is None or Path(self.data_dir).is_dir(),
            f"data directory {self.data_dir} does not exist: pass the folder holding the "
            "LLM-Adapters dataset folders, or omit --data-dir to use the hub",
        )
        if self.zoo == "tiny":
            _check(self.data_dir is None, "--data-dir is for the paper preset's real data")
            _check(self.world is not None, "the tiny zoo needs a world config")
            _check(
                domain_of(self.world) == self.domain,
                f"the world config is for {domain_of(self.world)}, not {self.domain}",
            )
        for teacher, student in self.teacher_student_pairs():
            for model in (teacher, student):
                spec = tiny_model(model) if self.zoo == "tiny" else hub_model(model)
                _check(
                    self.family in ("all", spec.family),
                    f"{model} is a {spec.family} model but the study's family is "
                    f"{self.family}: pass --family {spec.family} or a {self.family} model",
                )
            if self.zoo == "hub":  # tiny sizes are known once the world is built
                check_pair(hub_model(teacher), hub_model(student))
        for label, values in (
            ("students", self.students),
            ("methods", self.methods),
            ("temperatures", self.temperatures),
            ("noise sigmas", self.noise_sigmas),
            ("seeds", self.seeds),
            ("teacher kinds", self.teacher_kinds),
        ):
            _check(len(values) > 0, f"no {label} given: pass at least one")
        _check("sft" not in self.methods, "sft is always run per student; list only KD methods")
        self.kd_settings()  # validates every (method, T, sigma) of the grid

    def teacher_student_pairs(self) -> list[tuple[str, str]]:
        if self.pairs:
            return list(self.pairs)
        return [(self.teacher, student) for student in self.students]

    def teachers(self) -> list[str]:
        return list(dict.fromkeys(t for t, _ in self.teacher_student_pairs()))

    def distinct_students(self) -> list[str]:
        return list(dict.fromkeys(s for _, s in self.teacher_student_pairs()))

    @property
    def teacher_kind(self) -> str:
        """The kinds as one label: `task-aware`, or `task-aware,task-unaware` when compared."""
        return ",".join(self.teacher_kinds)

    @property
    def experiment_name(self) -> str:
        return self.experiment or f"kdray-{self.name}"

    def cache_root(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()

    def kd_settings(self) -> list[KDConfig]:
        """The grid's KD settings. Methods that take no teacher logits (seqkd with k = 0) do
        not vary with T or sigma, so they get one setting instead of identical copies."""
        settings = []
        for method in self.methods:
            base = dataclasses.replace(self.kd, method=method)
            if not base.needs_teacher_logits:
                settings.append(dataclasses.replace(base, temperature=1.0, noise_sigma=0.0))
                continue
            for temperature in self.temperatures:
                for sigma in self.noise_sigmas:
                    settings.append(
                        dataclasses.replace(base, temperature=temperature, noise_sigma=sigma)
                    )
        return settings

    def trial_plans(self, world: World | HubWorld) -> list[dict[str, Any]]:
        """One plan per trial: its identity, MLflow params (the tidy schema), the teacher it
        distils from (None for sft) and its RunSpec. SFT runs once per student and seed."""
        plans = []
        for seed in self.seeds:
            for student in self.distinct_students():
                plans.append(self._plan(world, None, student, seed, KDConfig("sft")))
            for teacher, student in self.teacher_student_pairs():
                for kind in self.teacher_kinds:
                    for kd in self.kd_settings():
                        plans.append(self._plan(world, teacher, student, seed, kd, kind))
        return plans

    def _plan(
        self,
        world: World | HubWorld,
        teacher: str | None,
        student: str,
        seed: int,
        kd: KDConfig,
        teacher_kind: str = "",
    ) -> dict:
        sizes, widths = world.parameter_counts(), world.lm_head_widths()
        tempered = kd.needs_teacher_logits
        run_name = run_label(kd, student, teacher, teacher_kind, len(self.teacher_kinds) > 1)
        if len(self.seeds) > 1:
            run_name += f" seed={seed}"
        pair = f"{teacher}>{student}" if teacher else student
        key = f"{pair}|{kd.method}|T={kd.temperature:g}|sigma={kd.noise_sigma:g}|seed={seed}"
        if teacher_kind != "task-aware" and teacher:  # keys of task-aware trials stay as they were
            key += f"|{teacher_kind}"
        params = {
            "study": self.name,
            "teacher": teacher or "",
            "student": student,
            "student_params_b": sizes[student] / 1e9,
            "teacher_params_b": sizes[teacher] / 1e9 if teacher else "",
            "method": kd.method,
            "temperature": kd.temperature if tempered else "",
            "noise_sigma": kd.noise_sigma if tempered else "",
            "teacher_kind": teacher_kind if teacher else "",
            "domain": self.domain,
            "family": self.family,
            "tasks": ",".join(world.tasks()),
            "seed": seed,
            "finetune": self.student_train.finetune,
        }
        if tempered:  # lm_head widths may differ within a family: KD runs over the tokenizer's
            params.update(
                vocab_compared=world.built_model(student).tokenizer_vocab,
                teacher_lm_head_width=widths[teacher],
                student_lm_head_width=widths[student],
            )
        train = dataclasses.replace(self.student_train, seed=seed)
        if self.zoo == "hub":  # as many GPUs as the trial needs (kdray.plan), ZeRO-3 across them
            from kdray.plan import layout_needed
            from kdray.teacher_signal import ONLINE, choose_teacher_signal

            vocab = world.built_model(student).tokenizer_vocab
            # Only an online teacher takes GPU memory in the trial; a cached one is read.
            online = tempered and choose_teacher_signal(kd, vocab).kind == ONLINE
            layout = layout_needed(self, student, teacher if online else None)
            train = dataclasses.replace(
                train, num_workers=layout.gpus, zero_stage=layout.zero_stage
            )
        spec = RunSpec.in_world(world, "student", student, train, kd, self.eval)
        return {
            "key": key,
            "run_name": run_name,
            "teacher": teacher,
            "teacher_kind": teacher_kind if teacher else None,
            "params": params,
            "spec": spec,
        }


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
