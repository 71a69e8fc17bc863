"""The study's experiments as designs: what each one varies on top of a preset.

A design turns the preset's StudyConfig into the experiment's grid (methods, temperatures,
noise, students, teacher kinds). The command line's own flags win over a design's choices,
so `python studies/noise.py --noise-sigmas 0,10` still works. `optimal` is a search, not a
grid: kdray/study/search.py runs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kdray.errors import ConfigError
from kdray.study.config import StudyConfig

DEFAULT_SEARCH_TRIALS = 7
"""optimal.py: Optuna trials per student size, as many as the temperature grid runs per
student (SFT + KD and Rev-KD x 3 temperatures)."""
SMOKE_SEARCH_TRIALS = 3
ALL_KD_METHODS = ("kd", "revkd", "seqkd", "gkd", "skew_fkl", "skew_rkl")


@dataclass(frozen=True)
class StudyDesign:
    """One experiment of the study (one script in studies/)."""

    name: str
    description: str
    """One line for --help and the summary."""
    grid: Callable[[StudyConfig, bool], dict[str, Any]]
    """(preset's config with the user's flags, smoke) -> StudyConfig fields to set."""
    default_preset: str = "tiny"
    search: bool = False
    """An Optuna search per student size (kdray/study/search.py) instead of a grid."""


def _temperature(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    # Rev-KD is one flag away (--methods kd,revkd): the default keeps three seeds per setting
    # inside the 15-minute budget instead. The smoke run keeps both losses' path.
    if smoke:
        return {"methods": ("kd", "revkd"), "temperatures": (2.0,)}
    return {"methods": ("kd",), "temperatures": (1.0, 2.0, 5.0)}


def _noise(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    sigmas = (0.0, 5.0) if smoke else (0.0, 1.0, 2.0, 5.0)
    return {"methods": ("kd",) if smoke else ("kd", "revkd"), "temperatures": (1.0,),
            "noise_sigmas": sigmas}  # fmt: skip


def _methods(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"methods": ALL_KD_METHODS, "temperatures": (1.0,)}
    if smoke:  # one student keeps the smoke run to 7 trials
        fields["students"] = config.students[-1:]
    return fields


def _student_size(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    fields: dict[str, Any] = {"methods": ("kd",), "temperatures": (1.0,)}
    if config.zoo == "tiny":
        from kdray.world.zoo import family_models

        order = list(family_models(config.family))  # the zoo lists each family by size
        fields["students"] = tuple(order[: order.index(config.teacher)])
        if not fields["students"]:
            raise ConfigError(
                f"no model of the {config.family} family is smaller than the teacher "
                f"{config.teacher}: pass a larger --teacher ({', '.join(order[1:])}) or "
                "--students"
            )
    else:  # per family, its largest teacher (or the one --teacher kept) and all its students
        from kdray.hub.zoo import hub_model

        largest: dict[str, str] = {}
        for teacher, _ in config.pairs:  # pairs come largest teacher first
            largest.setdefault(hub_model(teacher).family, teacher)
        fields["pairs"] = tuple((t, s) for t, s in config.pairs if t in largest.values())
    return fields


def _teacher_domain(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    return {"methods": ("kd",), "temperatures": (1.0,),
            "teacher_kinds": ("task-aware", "task-unaware")}  # fmt: skip


def _paper(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"methods": ("kd", "seqkd"), "temperatures": (1.0,)}
    fields: dict[str, Any] = {
        "methods": ("kd", "revkd", "seqkd", "gkd"),
        "temperatures": (1.0, 2.0, 5.0),
    }
    if config.zoo == "hub":  # T=5 reads no cache: a 70B teacher fits only sharded (study.plan)
        fields["kd"] = dataclasses.replace(config.kd, teacher_placement="zero3")
    return fields


def _optimal(config: StudyConfig, smoke: bool) -> dict[str, Any]:
    return {}  # the search space lives in kdray/study/search.py


DESIGNS: dict[str, StudyDesign] = {
    design.name: design
    for design in (
        StudyDesign(
            "temperature", "KD and Rev-KD across temperatures T for each student", _temperature
        ),
        StudyDesign(
            "noise", "Gaussian noise sigma on the teacher's logits, KD and Rev-KD at T=1", _noise
        ),
        StudyDesign(
            "methods",
            "SFT, KD, Rev-KD, Seq-KD, GKD and the skew KLs for every pair (one-way ANOVA)",
            _methods,
        ),
        StudyDesign(
            "student_size",
            "one teacher, every smaller student of its family (Spearman vs student size)",
            _student_size,
        ),
        StudyDesign(
            "teacher_domain",
            "task-aware vs task-unaware teacher for each pair, KD at T=1",
            _teacher_domain,
        ),
        StudyDesign(
            "optimal",
            "Optuna TPE + ASHA search per student size over method, T, sigma, CE weight, "
            "beta, lambda and learning rate",
            _optimal,
            search=True,
        ),
        StudyDesign(
            "paper",
            "the study's replication grid: KD, Rev-KD, Seq-KD, GKD x T for every pair",
            _paper,
            default_preset="paper",
        ),
    )
}
