"""Flags -> StudyConfig: the preset, then the user's flags, then the design's grid; every folder
checked writable before anything runs."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdray.cli.config_file import apply_config_file
from kdray.cli.parser import study_parser
from kdray.config.pretrain import PretrainConfig
from kdray.config.run import EvalConfig, TrainConfig
from kdray.errors import ConfigError
from kdray.folders import check_writable
from kdray.study.config import StudyConfig
from kdray.study.designs import DESIGNS, StudyDesign
from kdray.study.presets import PRESETS
from kdray.tracking.stores import sqlite_path, store_problem


def config_from_args(design: StudyDesign, args: argparse.Namespace) -> StudyConfig:
    """preset -> the user's flags -> the design's grid, except where a flag already chose."""
    config = PRESETS[args.preset](
        design.name, smoke=args.smoke, domain=args.domain, family=args.family
    )
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    if design.search:
        _check_search_flags(args)
    grid = _grid_flags(args)
    kd_flags = {k: v for k, v in _kd_flags(args).items() if v is not None}
    kd_template = dataclasses.replace(config.kd, **kd_flags)
    student_train, teacher_train, evaluation = _training_flags(config, args)
    if config.pairs and (args.teacher or args.students):  # narrow the preset's pairs
        grid["pairs"] = _narrowed_pairs(config, args)
        grid.pop("teacher"), grid.pop("students")
    chosen = {k: v for k, v in grid.items() if v is not None}
    if args.no_pretrain:
        chosen["pretrain"] = None
    if args.pretrain_steps is not None:
        chosen["pretrain"] = _pretrain_steps(config, args)
    config = dataclasses.replace(
        config,
        kd=kd_template,
        student_train=student_train,
        teacher_train=teacher_train,
        eval=evaluation,
        **chosen,
    )
    if args.students:
        chosen["students"] = True
    if config.pairs and (args.teacher or args.students):
        chosen["pairs"] = True  # the user narrowed the preset's pairs
    config = dataclasses.replace(config, **_design_fields(design, config, args, chosen))
    check_folders(config)
    return config


def _pretrain_steps(config: StudyConfig, args: argparse.Namespace) -> PretrainConfig:
    """The preset's pretraining with the students' bases pretrained `--pretrain-steps`."""
    if args.no_pretrain or config.pretrain is None:
        raise ConfigError(
            "--pretrain-steps sets how long the tiny preset's bases pretrain, so it cannot go "
            "with --no-pretrain or --preset paper: drop one of them"
        )
    return dataclasses.replace(config.pretrain, steps=args.pretrain_steps)


def _check_search_flags(args: argparse.Namespace) -> None:
    """A search samples T and seeds its trials itself: grid flags it would ignore are refused."""
    ignored = [f for f, v in (("--temperatures", args.temperatures), ("--seeds", args.seeds)) if v]
    if ignored:
        raise ConfigError(
            f"{' and '.join(ignored)}: the search samples T (0.5 to 5) and seeds its trials "
            "0, 1, ... itself; pass --search-seeds/--confirm-seeds, or run a grid study"
        )


def _grid_flags(args: argparse.Namespace) -> dict[str, Any]:
    """StudyConfig fields the user set (None: not set)."""
    return {
        "teacher_kinds": (args.teacher_kind,) if args.teacher_kind else None,
        "methods": args.methods,
        "temperatures": args.temperatures,
        "noise_sigmas": args.noise_sigmas,
        "students": args.students,
        "teacher": args.teacher,
        "seeds": args.seeds,
        "resume": args.resume or None,
        "max_concurrent": args.max_concurrent,
        "train_runs": args.train_runs,
        "system_metrics_seconds": args.system_metrics_seconds,
        "tracking_uri": args.tracking_uri,
        "tracking_wait": args.tracking_wait,
        "experiment": args.experiment,
        "log_models": args.log_models,
        "cache_dir": args.cache_dir,
        "results_dir": args.results_dir,
        "data_dir": args.data_dir,
    }


def _kd_flags(args: argparse.Namespace) -> dict[str, Any]:
    """KDConfig fields the user set (None: not set)."""
    return {
        "ce_weight": args.ce_weight,
        "beta": args.beta,
        "on_policy_fraction": args.on_policy_fraction,
        "skew_alpha": args.skew_alpha,
        "seqkd_kd_weight": args.seqkd_kd_weight,
        "noise_on": args.noise_on,
        "loss_tokens": args.loss_tokens,
        "teacher_signal": args.teacher_signal,
        "cache_top_k": args.cache_top_k,
        "teacher_placement": args.teacher_placement,
        "gkd_temperature_in_loss": False if args.gkd_ignore_temperature else None,
        "scale_by_t2": False if args.no_t2_scaling else None,
    }


def _training_flags(
    config: StudyConfig, args: argparse.Namespace
) -> tuple[TrainConfig, TrainConfig, EvalConfig]:
    """The students' and the teacher's training, and the evaluation, with the user's flags."""
    train = {
        "steps": args.steps,
        "learning_rate": args.learning_rate,
        "zero_stage": args.zero_stage,
        "num_workers": args.num_workers,
        "placement_strategy": args.placement_strategy,
        "grad_accum_steps": args.grad_accum_steps,
        "eval_every": args.eval_every,
        "train_examples": args.train_examples,
    }
    train = {k: v for k, v in train.items() if v is not None}
    if args.finetune:
        train["finetune"] = args.finetune
    student_train = dataclasses.replace(config.student_train, **train)
    pool = getattr(config.world, "train_size", None)  # a hub dataset's size is known later
    if pool is not None and (student_train.train_examples or 0) > pool:
        raise ConfigError(
            f"--train-examples {student_train.train_examples} is more than the world's "
            f"{pool} training items; pass at most {pool}"
        )
    teacher_train = config.teacher_train
    if args.teacher_finetune:
        teacher_train = dataclasses.replace(teacher_train, finetune=args.teacher_finetune)
    if args.use_gpu:
        student_train = dataclasses.replace(student_train, use_gpu=True)
        teacher_train = dataclasses.replace(teacher_train, use_gpu=True)
    evaluation = config.eval
    if args.decoding:
        evaluation = dataclasses.replace(evaluation, decoding=args.decoding)
    return student_train, teacher_train, evaluation


def _narrowed_pairs(config: StudyConfig, args: argparse.Namespace) -> tuple:
    """The preset's (teacher, student) pairs that --teacher/--students keep."""
    pairs = tuple(
        (t, s)
        for t, s in config.pairs
        if (not args.teacher or t == args.teacher) and (not args.students or s in args.students)
    )
    if not pairs:
        raise ConfigError("no pair of the preset matches --teacher/--students (kdray pairs)")
    return pairs


def _design_fields(
    design: StudyDesign, config: StudyConfig, args: argparse.Namespace, chosen: dict
) -> dict[str, Any]:
    """The design's grid, less what the user `chosen` already."""
    fields = {k: v for k, v in design.grid(config, args.smoke).items() if k not in chosen}
    if "kd" in fields and args.teacher_placement:  # the user's placement wins over the design's
        fields["kd"] = dataclasses.replace(fields["kd"], teacher_placement=args.teacher_placement)
    if args.num_samples and not args.seeds and not design.search:
        fields["seeds"] = tuple(config.seeds[0] + i for i in range(args.num_samples))
    return fields


def check_folders(config: StudyConfig) -> None:
    """The cache, results and SQLite store folders can be written, before anything runs."""
    check_writable(config.cache_root(), "pass --cache-dir DIR (or set KDRAY_CACHE)")
    check_writable(Path(config.results_dir), "pass --results-dir DIR")
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri and (problem := store_problem(uri)):
        raise ConfigError(problem)
    if store := sqlite_path(uri):
        check_writable(store.parent, "pass --tracking-uri sqlite:///DIR/mlflow.db")


def config_from_flags(name: str, flags: Sequence[str] = ()) -> StudyConfig:
    """The StudyConfig that `python studies/<name>.py FLAGS` would run."""
    design = DESIGNS[name]
    parser = study_parser(design)
    apply_config_file(parser, list(flags))
    return config_from_args(design, parser.parse_args(list(flags)))
