"""Presets: complete study configurations. `tiny` is the embedded default (built offline,
2 CPUs); its `smoke` variant keeps the path and shrinks steps, items and the grid."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from kdray.config import EvalConfig, TrainConfig
from kdray.study_config import StudyConfig
from kdray.world.synthetic_math import MathWorldConfig

# Calibrated on 2 CPUs (README, "The tiny world"): arithmetic facts, not capacity, limit what
# these models learn per step, so the task keeps numbers small and the teacher gets more steps
# and a larger pool than the students.
TINY_WORLD = MathWorldConfig(
    max_start=12, max_operand=4, max_factor=1, max_value=16, distractor_prob=0.3
)
TINY_TEACHER_TRAIN = TrainConfig(
    steps=1500, batch_size=32, learning_rate=5e-3, cpus_per_worker=1.98, report_every=300
)
TINY_STUDENT_TRAIN = TrainConfig(
    steps=600, batch_size=32, learning_rate=1e-2, train_examples=2000, report_every=200
)


def tiny(name: str, smoke: bool = False) -> StudyConfig:
    config = StudyConfig(
        name=name,
        world=TINY_WORLD,
        teacher_train=TINY_TEACHER_TRAIN,
        student_train=TINY_STUDENT_TRAIN,
        eval=EvalConfig(max_items=300),
        results_dir=f"results/{name}",
    )
    if not smoke:
        return config
    return dataclasses.replace(
        config,
        name=f"{name}-smoke",
        temperatures=(2.0,),
        world=dataclasses.replace(TINY_WORLD, train_size=2000, validation_size=40, test_size=40),
        teacher_train=dataclasses.replace(TINY_TEACHER_TRAIN, steps=120, report_every=60),
        student_train=dataclasses.replace(TINY_STUDENT_TRAIN, steps=20, report_every=10),
        eval=EvalConfig(max_items=40, max_new_tokens=48),
        results_dir=f"results/{name}-smoke",
    )


PRESETS: dict[str, Callable[..., StudyConfig]] = {"tiny": tiny}
