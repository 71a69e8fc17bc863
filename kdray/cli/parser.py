"""The study scripts' flags: one parser per study design (kdray's one-line errors)."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from kdray.cli.config_file import add_config_flag
from kdray.cli.one_line_parser import OneLineParser, count
from kdray.config.run import DECODING, FINETUNE_MODES, METHODS, TEACHER_PLACEMENTS
from kdray.study.config import LOG_MODELS, TRAIN_RUNS
from kdray.study.designs import DEFAULT_SEARCH_TRIALS, StudyDesign
from kdray.study.presets import PRESETS


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
    """The flags of a study script (the same for every design, plus the search's own)."""
    parser = OneLineParser(prog=f"{design.name}.py", description=design.description)
    add_config_flag(parser)
    _world_flags(parser, design)
    _grid_flags(parser, design)
    _method_flags(parser)
    _training_flags(parser)
    _tracking_and_folder_flags(parser)
    return parser


def _world_flags(parser: OneLineParser, design: StudyDesign) -> None:
    """Which world, models and evaluation; --dry-run and --smoke."""
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


def _grid_flags(parser: OneLineParser, design: StudyDesign) -> None:
    """What the study varies: methods, temperatures, noise, students, seeds; --resume."""
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
            "--search-seeds",
            type=count,
            help="seeds each Optuna trial trains its setting with; its value is their mean "
            "validation score, and ASHA stops no trial when k > 1 (default 2 on the tiny "
            "preset, 1 with --smoke and on paper)",
        )
        parser.add_argument(
            "--confirm-seeds",
            type=count,
            default=1,
            help="train each student's pick again until it has N seeds and report the test "
            "mean and 95%% CI (default 1: the search's own runs only)",
        )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the latest unfinished run of this study in the experiment: finished "
        "trials are kept, the rest run",
    )


def _method_flags(parser: OneLineParser) -> None:
    """The KD methods' settings and the teacher's signal and placement."""
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


def _training_flags(parser: OneLineParser) -> None:
    """Training length, DeepSpeed and the resources of a trial."""
    parser.add_argument("--grad-accum-steps", type=int, help="micro-batches per optimizer step")
    parser.add_argument(
        "--no-t2-scaling", action="store_true", help="do not multiply KD losses by T^2"
    )
    parser.add_argument("--steps", type=int, help="optimizer steps per student trial")
    parser.add_argument(
        "--learning-rate",
        type=float,
        metavar="LR",
        help="students' peak learning rate (tiny preset: 2.5e-3; the teacher keeps its own)",
    )
    parser.add_argument(
        "--train-examples",
        type=int,
        metavar="N",
        help="students train on the first N training items (tiny preset: all 16000, as the "
        "teacher does): fewer gives the data-limited regime",
    )
    parser.add_argument(
        "--no-pretrain",
        action="store_true",
        help="tiny preset: start every model from a random initialisation instead of a base "
        "pretrained on the world's generic text",
    )
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        metavar="N",
        help="tiny preset: pretraining steps of each student's base (math: 6000; the "
        "teacher's base keeps its own)",
    )
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
        "--system-metrics-seconds",
        type=float,
        help="each trial's CPU, memory and GPU use sampled into its MLflow run every S seconds "
        "(default 2; 0: off)",
    )
    parser.add_argument(
        "--train-runs",
        choices=TRAIN_RUNS,
        help="how runs share Ray Train runs, whose fixed cost is ~30 s each: packed (default: "
        "as many as run at once, each training its share in turn; CPU students), setting (one "
        "per setting, its seeds in turn) or run (one per run)",
    )


def _tracking_and_folder_flags(parser: OneLineParser) -> None:
    """The MLflow store and experiment, and the cache, data and results folders."""
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
        "--log-models",
        choices=LOG_MODELS,
        help="trained students as MLflow models: all (every trial's; default on the tiny "
        "preset), picks (only optimal.py's picks, registered in the model registry; default on "
        "paper; grid studies then log none) or none",
    )
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
