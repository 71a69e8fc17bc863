"""`python -m analysis`'s input, checked before anything is written and before matplotlib
loads (its font cache goes under the home folder): the output folder, the report's convention
flags and results file, the tracking store and what the command reads from it. Each problem
is one line (KdrayError). Pandas loads only to read a results file, MLflow only once the
store is known to exist."""

from __future__ import annotations

import math
from pathlib import Path

from kdray.config.run import METHODS, TEACHER_KINDS
from kdray.errors import KdrayError
from kdray.folders import check_writable
from kdray.tracking.runs import ROLE_TAG
from kdray.tracking.stores import check_readable_store, resolve_tracking_uri


def check_inputs(args) -> None:
    """Everything the command `args.command` would refuse after reading or computing, refused
    now; reads (the results file, the store) but writes nothing."""
    if getattr(args, "out", None) is not None:
        check_writable(Path(args.out), "pass --out DIR")
    if args.command == "report":
        check_conventions(args)
        if args.results is not None:
            _check_results_file(Path(args.results))
            return
    if hasattr(args, "tracking_uri"):
        uri = resolve_tracking_uri(args.tracking_uri)
        check_readable_store(uri)
        _check_in_store(args, uri)


def check_conventions(args) -> None:
    """The conventions' flags name things the schema knows, before anything is read."""
    if args.baseline_method not in METHODS or _is_reference(args.baseline_method):
        raise KdrayError(
            f"--baseline-method {args.baseline_method!r} is not a method: choose one of "
            f"{', '.join(METHODS)} (sft, the study's baseline, by default)"
        )
    if args.main_teacher_kind not in TEACHER_KINDS:
        raise KdrayError(
            f"--main-teacher-kind {args.main_teacher_kind!r} is unknown: choose one of "
            f"{', '.join(TEACHER_KINDS)}"
        )
    if not math.isfinite(args.max_noise_sigma) or args.max_noise_sigma < 0:
        raise KdrayError(f"--max-noise-sigma must be a number >= 0, got {args.max_noise_sigma:g}")


def _is_reference(method: str) -> bool:
    from analysis.conventions import REFERENCE_METHODS  # pandas

    return method in REFERENCE_METHODS


def _check_results_file(path: Path) -> None:
    """The results CSV: a file, with every value the schema needs (analysis.loader)."""
    if path.is_dir():
        raise KdrayError(f"{path} is a folder: pass --results FILE, a CSV in the tidy schema")
    from analysis.loader import read_results_csv

    read_results_csv(path)


def _check_in_store(args, uri: str) -> None:
    """What the command reads from the store exists: the report's experiment and study runs,
    the summary's parent run, best's experiment."""
    from analysis.loader import find_experiment, study_parent_runs

    if args.command == "report":
        study_parent_runs(uri, args.experiment, args.study, args.parent_run)
    elif args.command == "summary":
        _check_study_run(uri, args.parent_run)
    elif args.command == "best":
        find_experiment(uri, args.experiment)


def _check_study_run(uri: str, run_id: str) -> None:
    """`run_id` is a study's parent run in the store."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(uri).get_run(run_id)
    except MlflowException:
        raise KdrayError(
            f"no run {run_id!r} at {uri}: pass --parent-run, the study run id the study "
            "printed (or see `mlflow ui`), and --tracking-uri of its store"
        ) from None
    if run.data.tags.get(ROLE_TAG) != "study":
        raise KdrayError(
            f"run {run_id} is not a study's parent run (a trial's or a teacher's?): pass "
            "--parent-run of the study run"
        )
