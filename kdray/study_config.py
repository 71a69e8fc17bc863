"""StudyConfig: what a study varies and what it fixes, validated before anything runs.
Kept free of Ray and MLflow imports so the command line answers bad input at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdray.cache import default_cache_dir
from kdray.config import EvalConfig, KDConfig, TrainConfig, _check
from kdray.run_spec import RunSpec
from kdray.world.synthetic_math import MathWorldConfig
from kdray.world.zoo import TINY_QWEN2

if TYPE_CHECKING:
    from kdray.world.build import World

DOMAIN, TASK = "math", "synthetic-math"


@dataclass(frozen=True)
class StudyConfig:
    """What a study varies (methods, temperatures, noise, students, seeds) and what it fixes."""

    name: str = "temperature"
    teacher: str = "tiny-qwen2-m"
    students: tuple[str, ...] = ("tiny-qwen2-xs", "tiny-qwen2-s")
    methods: tuple[str, ...] = ("kd", "revkd")
    """KD methods of the grid; every student also gets one `sft` trial per seed (the baseline)."""
    temperatures: tuple[float, ...] = (1.0, 2.0, 5.0)
    noise_sigmas: tuple[float, ...] = (0.0,)
    seeds: tuple[int, ...] = (0,)
    kd: KDConfig = field(default_factory=KDConfig)
    """Knobs shared by the KD trials (CE weight, beta, lambda, alpha, ...); each trial sets its
    own method, temperature and noise."""
    world: MathWorldConfig = field(default_factory=MathWorldConfig)
    teacher_train: TrainConfig = field(default_factory=TrainConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: str | None = None
    """MLflow experiment; default `kdray-<name>`."""
    tracking_uri: str | None = None
    """MLflow store; default MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db."""
    cache_dir: str | None = None
    """Worlds, teachers and Ray results; default KDRAY_CACHE or ~/.cache/kdray."""
    max_concurrent: int | None = None
    """Trials in flight; default what the cluster's CPUs (or GPUs) can run at once."""
    results_dir: str = "results"
    """Where the results table and figure are written (also logged to MLflow)."""

    def __post_init__(self) -> None:
        known = ", ".join(TINY_QWEN2)
        for model in (self.teacher, *self.students):
            _check(model in TINY_QWEN2, f"unknown model {model!r}: choose from {known}")
        for label, values in (
            ("students", self.students),
            ("methods", self.methods),
            ("temperatures", self.temperatures),
            ("noise sigmas", self.noise_sigmas),
            ("seeds", self.seeds),
        ):
            _check(len(values) > 0, f"no {label} given: pass at least one")
        _check("sft" not in self.methods, "sft is always run per student; list only KD methods")
        self.kd_settings()  # validates every (method, T, sigma) of the grid

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

    def trial_plans(self, world: World) -> list[dict[str, Any]]:
        """One plan per trial: its identity, MLflow params (the tidy schema) and RunSpec."""
        sizes = world.parameter_counts()
        plans = []
        for student in self.students:
            for seed in self.seeds:
                for kd in [KDConfig("sft"), *self.kd_settings()]:
                    plans.append(self._plan(world, student, seed, kd, sizes))
        return plans

    def _plan(self, world: World, student: str, seed: int, kd: KDConfig, sizes) -> dict:
        teacher_used, tempered = kd.uses_teacher, kd.needs_teacher_logits
        label = f"{kd.method} T={kd.temperature:g}" if tempered else kd.method
        if tempered and kd.noise_sigma:
            label += f" sigma={kd.noise_sigma:g}"
        key = f"{student}|{kd.method}|T={kd.temperature:g}|sigma={kd.noise_sigma:g}|seed={seed}"
        params = {
            "study": self.name,
            "teacher": self.teacher if teacher_used else "",
            "student": student,
            "student_params_b": sizes[student] / 1e9,
            "teacher_params_b": sizes[self.teacher] / 1e9,
            "method": kd.method,
            "temperature": kd.temperature if tempered else "",
            "noise_sigma": kd.noise_sigma if tempered else "",
            "teacher_kind": "task-aware",
            "domain": DOMAIN,
            "task": TASK,
            "seed": seed,
        }
        train = dataclasses.replace(self.student_train, seed=seed)
        spec = RunSpec.in_world(world, "student", student, train, kd, self.eval)
        return {
            "key": key,
            "run_name": f"{student} {label} seed={seed}",
            "params": params,
            "spec": spec,
        }
