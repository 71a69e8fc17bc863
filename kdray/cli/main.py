"""Command line of the study scripts: flags -> StudyConfig -> run_study. Bad input gives
one line on stderr and exit code 2 before anything runs or is written."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from functools import partial

from kdray.cli.args import config_from_args
from kdray.cli.config_file import apply_config_file
from kdray.cli.one_line_parser import EXIT_USAGE
from kdray.cli.parser import study_parser
from kdray.errors import KdrayError, TrackingUnreachableError
from kdray.study.config import StudyConfig
from kdray.study.designs import (
    ALL_KD_METHODS,
    DEFAULT_SEARCH_TRIALS,
    DESIGNS,
    SMOKE_SEARCH_TRIALS,
    StudyDesign,
)
from kdray.study.preflight import check_before_work
from kdray.study.resume import check_resumable

EXIT_INTERRUPTED = 130
"""Exit code of a study stopped by Ctrl-C (128 + SIGINT), resumable with --resume."""
EXIT_TRACKING_UNREACHABLE = 3
"""The tracking server did not answer: what ran is kept, --resume continues once it does."""


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an error's message (its type's name if empty), cut to `limit`."""
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:limit]


def study_main(
    name: str, argv: Sequence[str] | None = None, run: Callable[..., object] | None = None
) -> int:
    """A study script's main: parse, validate, then run the design's grid (or search).
    `run(config)` replaces the study runner in tests."""
    design = DESIGNS[name]
    parser = study_parser(design)
    try:
        apply_config_file(parser, sys.argv[1:] if argv is None else argv)
    except KdrayError as error:
        print(f"{name}.py: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(argv)
    try:
        config, plan = checked_config(design, args)
        if args.dry_run:
            print(plan)
            return 0
        if run is None and design.search:
            outcome = _run_search(config, args)
        else:
            if run is None:
                from kdray.study.grid import run_study  # Ray, MLflow: only once the input is valid

                run = run_study
            outcome = run(config)
    except Exception as error:
        return _exit_code_of(name, error)
    if getattr(outcome, "interrupted", False):  # tests' runners may return other objects
        return EXIT_INTERRUPTED
    return 0 if getattr(outcome, "failed", 0) == 0 else 1


def checked_config(design: StudyDesign, args: argparse.Namespace) -> tuple[StudyConfig, str]:
    """The study's config and plan after every check that runs nothing (kdray.study.preflight;
    with --resume, kdray.study.resume); --dry-run makes those of the plan."""
    config = config_from_args(design, args)
    if design.search:
        check_search_methods(config, args)
    plan = check_before_work(config, dry_run=args.dry_run, search=design.search)
    if config.resume and not args.dry_run:  # a search logs the config of its plans
        check_resumable(config, partial(_search_plans, config, args) if design.search else None)
    return config, plan


def _run_search(config: StudyConfig, args: argparse.Namespace):
    """The optimal-settings search of the design, sized by --smoke/--num-samples."""
    from kdray.study.search import run_search  # Ray, Optuna: valid input only

    return run_search(config, _search_config(config, args))


def _search_config(config: StudyConfig, args: argparse.Namespace):
    """The search's SearchConfig from the flags."""
    from kdray.study.search import SearchConfig

    trials = SMOKE_SEARCH_TRIALS if args.smoke else DEFAULT_SEARCH_TRIALS
    chosen = {"methods": args.methods, "noise_sigmas": args.noise_sigmas}
    return SearchConfig(
        num_samples=args.num_samples or trials,
        score_items=min(SearchConfig.score_items, config.eval.max_items),
        search_seeds=args.search_seeds or default_search_seeds(config, args.smoke),
        confirm_seeds=args.confirm_seeds,
        **{k: v for k, v in chosen.items() if v},
    )


def _search_plans(config: StudyConfig, args: argparse.Namespace) -> StudyConfig:
    """The config a search's preparation logs on its parent run (kdray.study.search)."""
    from kdray.study.search import search_plans

    return search_plans(config, _search_config(config, args))


def check_search_methods(config: StudyConfig, args: argparse.Namespace) -> None:
    """Every method the search may sample (--methods, else every KD method) takes the KD
    flags (skew alpha = 1 would make the skew KLs zero)."""
    for method in args.methods or ALL_KD_METHODS:
        dataclasses.replace(config.kd, method=method)


def default_search_seeds(config: StudyConfig, smoke: bool) -> int:
    """Seeds per search trial: 2 on the tiny preset, where one seed's score is mostly noise;
    1 for --smoke (the path) and on the hub models (their cost)."""
    return 2 if config.preset == "tiny" and not smoke else 1


def _exit_code_of(name: str, error: Exception) -> int:
    """One line on stderr and the exit code for kdray's errors and an unreachable tracking
    server; anything else is a bug and raised as it is."""
    if isinstance(error, TrackingUnreachableError):
        print(f"{name}.py: error: {error}", file=sys.stderr)
        return EXIT_TRACKING_UNREACHABLE
    if isinstance(error, KdrayError):
        print(f"{name}.py: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    from kdray.tracking.outage import is_unreachable  # MLflow is loaded by now

    if not is_unreachable(error):
        raise error
    print(
        f"{name}.py: error: the MLflow tracking server does not answer ({first_line(error)}): "
        "start it again, then rerun (with --resume if the study had started)",
        file=sys.stderr,
    )
    return EXIT_TRACKING_UNREACHABLE
