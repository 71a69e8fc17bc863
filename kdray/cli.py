"""Command line of the study scripts: flags -> StudyConfig -> run_study. Bad input gives
one line on stderr and exit code 2 before anything runs or is written."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from kdray.config import DECODING, FINETUNE_MODES, METHODS, TEACHER_PLACEMENTS
from kdray.config_file import add_config_flag, apply_config_file
from kdray.errors import ConfigError, KdrayError, TrackingUnreachableError
from kdray.one_line_parser import EXIT_USAGE, OneLineParser
from kdray.presets import PRESETS
from kdray.study_config import StudyConfig
from kdray.study_designs import DEFAULT_SEARCH_TRIALS, DESIGNS, SMOKE_SEARCH_TRIALS, StudyDesign

EXIT_INTERRUPTED = 130
EXIT_TRACKING_UNREACHABLE = 3
"""The tracking server did not answer: what ran is kept, --resume continues once it does."""
"""Exit code of a study stopped by Ctrl-C (128 + SIGINT), resumable with --resume."""


def _comma_list(cast: Callable[[str], object], kind: str) -> Callable[[str], tuple]:
    def parse(text: str) -> tuple:
        try:
            return tuple(cast(v) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind}, got {text!r}"
            ) from None

    return parse


_numbers = _comma_list(float, "numbers")
_integers = _comma_list(int, "integers")


def _names(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def study_parser(design: StudyDesign) -> OneLineParser:
    parser = OneLineParser(prog=f"{design.name}.py", description=design.description)
    add_config_flag(parser)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=design.default_preset,
        help="model/data world: tiny = built offline on this machine, paper = the study's hub "
        f"models on a GPU cluster (default {design.default_preset})",
    )
    parser.add_argument(
        "--domain",
        choices=["math", "commonsense", "instruction"],
        default="math",
        help="task domain (default math)",
    )
    parser.add_argument(
        "--family",
        choices=["qwen", "llama"],
        help="model family: tiny Qwen2 or Llama zoo (default qwen); paper: all 21 pairs if unset",
    )
    parser.add_argument(
        "--teacher-kind",
        choices=["task-aware", "task-unaware"],
        help="task-aware: teacher fine-tuned on the domain first (default); task-unaware: base",
    )
    parser.add_argument(
        "--finetune", choices=FINETUNE_MODES, help="students: full fine-tuning or LoRA (peft)"
    )
    parser.add_argument(
        "--teacher-finetune", choices=FINETUNE_MODES, help="task-aware teacher: full or LoRA"
    )
    parser.add_argument(
        "--decoding", choices=DECODING, help="evaluation: greedy or the study's sampling"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan (pairs, trials, GPUs) and exit"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="reduced run (fewer steps, items and trials), same code path",
    )
    parser.add_argument(
        "--methods",
        type=_names,
        help=f"KD methods, comma-separated ({', '.join(m for m in METHODS if m != 'sft')}); "
        "sft always runs per student",
    )
    parser.add_argument("--temperatures", type=_numbers, help="e.g. 1,2,5")
    parser.add_argument("--noise-sigmas", type=_numbers, help="teacher-logit noise, e.g. 0,1")
    parser.add_argument("--students", type=_names, help="student models, comma-separated")
    parser.add_argument("--teacher", help="teacher model")
    parser.add_argument("--seeds", type=_integers, help="e.g. 0,1,2")
    parser.add_argument(
        "--num-samples",
        type=int,
        help="grid studies: runs of each setting, seeds counted up from the preset's (default "
        "1; --seeds wins); optimal: Optuna trials per student size"
        + (f" (default {DEFAULT_SEARCH_TRIALS})" if design.search else ""),
    )
    if design.search:
        parser.add_argument(
            "--confirm-seeds",
            type=int,
            default=1,
            help="train each student's pick again until it has N seeds and report the test "
            "mean and sd (default 1: the search's own run only)",
        )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest unfinished run of this study in the experiment: finished "
        "trials are kept, the rest run",
    )
    parser.add_argument("--ce-weight", type=float, help="CE weight in [0, 1] (default 0: pure KD)")
    parser.add_argument("--beta", type=float, help="gkd: JSD interpolation in [0, 1] (0.5)")
    parser.add_argument("--on-policy-fraction", type=float, help="gkd: lambda in [0, 1] (0)")
    parser.add_argument(
        "--gkd-ignore-temperature",
        action="store_true",
        help="gkd: T only in sampling, not in the loss (reproduces the study's code)",
    )
    parser.add_argument("--skew-alpha", type=float, help="skew_fkl/skew_rkl: alpha (0.1)")
    parser.add_argument("--seqkd-kd-weight", type=float, help="seqkd: weight of KD on (0)")
    parser.add_argument("--noise-on", choices=["raw", "tempered"], help="noise placement (raw)")
    parser.add_argument(
        "--loss-tokens", choices=["response", "all"], help="tokens that count (response)"
    )
    parser.add_argument(
        "--teacher-signal",
        choices=["auto", "online", "cache"],
        help="teacher logits: auto (cache where exact or measured harmless; default), "
        "online (run the teacher every step) or cache (required)",
    )
    parser.add_argument(
        "--teacher-placement",
        choices=TEACHER_PLACEMENTS,
        help="online teacher: replica (a copy per worker; default), zero3 (sharded over the "
        "trial's workers) or actor (served by a Ray actor of its own)",
    )
    parser.add_argument(
        "--cache-top-k", type=int, help="tokens per position in a top-k teacher cache (128)"
    )
    parser.add_argument("--grad-accum-steps", type=int, help="micro-batches per optimizer step")
    parser.add_argument(
        "--no-t2-scaling", action="store_true", help="do not multiply KD losses by T^2"
    )
    parser.add_argument("--steps", type=int, help="optimizer steps per student trial")
    parser.add_argument(
        "--eval-every",
        type=int,
        help="validation loss every N steps; the best point's weights are kept (default: last)",
    )
    parser.add_argument("--zero-stage", type=int, help="DeepSpeed ZeRO stage 0-3")
    parser.add_argument("--num-workers", type=int, help="Ray Train workers per trial")
    parser.add_argument(
        "--use-gpu",
        action="store_true",
        help="one GPU per Train worker (teacher and students), bf16, nccl (the paper preset's "
        "default)",
    )
    parser.add_argument(
        "--placement-strategy",
        type=str.upper,
        help="PACK (default: workers on as few nodes as possible) or SPREAD (across nodes)",
    )
    parser.add_argument("--max-concurrent", type=int, help="trials in flight (default: what fits)")
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default $MLFLOW_TRACKING_URI, else sqlite:///./mlflow.db)",
    )
    parser.add_argument(
        "--tracking-wait",
        type=float,
        help="seconds to wait for an unreachable tracking server before stopping (600)",
    )
    parser.add_argument("--experiment", help="MLflow experiment name (default kdray-<study>)")
    parser.add_argument(
        "--cache-dir", help="worlds, teachers, Ray results (default $KDRAY_CACHE or ~/.cache/kdray)"
    )
    parser.add_argument(
        "--data-dir",
        help="paper preset: folder with the LLM-Adapters/MiniLLM data files (default: the hub)",
    )
    parser.add_argument(
        "--results-dir", help="where the table and figure go (default results/<study>)"
    )
    return parser


def config_from_args(design: StudyDesign, args: argparse.Namespace) -> StudyConfig:
    """preset -> the user's flags -> the design's grid, except where a flag already chose."""
    name = design.name
    config = PRESETS[args.preset](name, smoke=args.smoke, domain=args.domain, family=args.family)
    if args.num_samples is not None and args.num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {args.num_samples}")
    grid = {
        "teacher_kinds": (args.teacher_kind,) if args.teacher_kind else None,
        "methods": args.methods,
        "temperatures": args.temperatures,
        "noise_sigmas": args.noise_sigmas,
        "students": args.students,
        "teacher": args.teacher,
        "seeds": args.seeds,
        "resume": args.resume or None,
        "max_concurrent": args.max_concurrent,
        "tracking_uri": args.tracking_uri,
        "tracking_wait": args.tracking_wait,
        "experiment": args.experiment,
        "cache_dir": args.cache_dir,
        "results_dir": args.results_dir,
        "data_dir": args.data_dir,
    }
    kd = {
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
    kd_template = dataclasses.replace(config.kd, **{k: v for k, v in kd.items() if v is not None})
    train = {
        "steps": args.steps,
        "zero_stage": args.zero_stage,
        "num_workers": args.num_workers,
        "placement_strategy": args.placement_strategy,
        "grad_accum_steps": args.grad_accum_steps,
        "eval_every": args.eval_every,
    }
    train = {k: v for k, v in train.items() if v is not None}
    if args.finetune:
        train["finetune"] = args.finetune
    student_train = dataclasses.replace(config.student_train, **train)
    teacher_train = config.teacher_train
    if args.teacher_finetune:
        teacher_train = dataclasses.replace(teacher_train, finetune=args.teacher_finetune)
    if args.use_gpu:
        student_train = dataclasses.replace(student_train, use_gpu=True)
        teacher_train = dataclasses.replace(teacher_train, use_gpu=True)
    evaluation = config.eval
    if args.decoding:
        evaluation = dataclasses.replace(evaluation, decoding=args.decoding)
    if config.pairs and (args.teacher or args.students):  # narrow the preset's pairs
        grid["pairs"] = tuple(
            (t, s)
            for t, s in config.pairs
            if (not args.teacher or t == args.teacher) and (not args.students or s in args.students)
        )
        if not grid["pairs"]:
            raise ConfigError("no pair of the preset matches --teacher/--students (kdray pairs)")
        grid.pop("teacher"), grid.pop("students")
    chosen = {k: v for k, v in grid.items() if v is not None}
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
    fields = {k: v for k, v in design.grid(config, args.smoke).items() if k not in chosen}
    if "kd" in fields and args.teacher_placement:  # the user's placement wins over the design's
        fields["kd"] = dataclasses.replace(fields["kd"], teacher_placement=args.teacher_placement)
    if args.num_samples and not args.seeds and not design.search:
        fields["seeds"] = tuple(config.seeds[0] + i for i in range(args.num_samples))
    config = dataclasses.replace(config, **fields)
    check_writable(config.cache_root(), "pass --cache-dir DIR (or set KDRAY_CACHE)")
    check_writable(Path(config.results_dir), "pass --results-dir DIR")
    uri = config.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if uri.startswith("sqlite:///"):
        fix = "pass --tracking-uri sqlite:///DIR/mlflow.db"
        check_writable(Path(uri.removeprefix("sqlite:///")).parent, fix)
    return config


def check_writable(folder: Path, fix: str) -> None:
    """The folder exists and is writable, or can be created: the nearest existing ancestor is
    a writable folder. Checked before anything runs; creates nothing."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{folder} cannot be a folder ({existing} is a file): {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder} is not writable ({existing} is not): {fix}")


def config_from_flags(name: str, flags: Sequence[str] = ()) -> StudyConfig:
    """The StudyConfig that `python studies/<name>.py FLAGS` would run."""
    design = DESIGNS[name]
    parser = study_parser(design)
    apply_config_file(parser, list(flags))
    return config_from_args(design, parser.parse_args(list(flags)))


def first_line(error: BaseException, limit: int = 200) -> str:
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
        config = config_from_args(design, args)
        if args.dry_run:
            from kdray.plan import format_plan

            print(format_plan(config))
            return 0
        if run is None and design.search:
            from kdray.search import SearchConfig, run_search  # Ray, Optuna: valid input only

            trials = SMOKE_SEARCH_TRIALS if args.smoke else DEFAULT_SEARCH_TRIALS
            chosen = {"methods": args.methods, "noise_sigmas": args.noise_sigmas}
            search = SearchConfig(
                num_samples=args.num_samples or trials,
                score_items=min(SearchConfig.score_items, config.eval.max_items),
                confirm_seeds=args.confirm_seeds,
                **{k: v for k, v in chosen.items() if v},
            )
            outcome = run_search(config, search)
        else:
            if run is None:
                from kdray.study import run_study  # Ray, MLflow: only once the input is valid

                run = run_study
            outcome = run(config)
    except TrackingUnreachableError as error:
        print(f"{name}.py: error: {error}", file=sys.stderr)
        return EXIT_TRACKING_UNREACHABLE
    except KdrayError as error:
        print(f"{name}.py: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        from kdray.tracking_outage import is_unreachable  # MLflow is loaded by now

        if not is_unreachable(error):
            raise
        print(
            f"{name}.py: error: the MLflow tracking server does not answer ({first_line(error)}): "
            "start it again, then rerun (with --resume if the study had started)",
            file=sys.stderr,
        )
        return EXIT_TRACKING_UNREACHABLE
    if getattr(outcome, "interrupted", False):
        return EXIT_INTERRUPTED
    return 0 if getattr(outcome, "failed", 0) == 0 else 1
