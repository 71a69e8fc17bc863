"""python -m analysis: the study's report (statistics, figures, tables) and a study run's
results summary, from MLflow or from a CSV in the tidy schema; an optimal.py experiment's
registered picks (`best`)."""

from __future__ import annotations

import sys
from pathlib import Path

from analysis.inputs import check_conventions, check_inputs
from kdray.errors import KdrayError, OneLineParser


def _report_parser(commands) -> None:
    report = commands.add_parser(
        "report",
        help="t-tests, ANOVA, Spearman correlations, ablations and figures: report.md/.html, "
        "tests.csv, PNG figures, LaTeX tables",
    )
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--experiment", help="MLflow experiment (e.g. kdray-temperature)")
    source.add_argument("--results", type=Path, help="a CSV in the tidy results schema")
    report.add_argument("--tracking-uri", help="with --experiment: default $MLFLOW_TRACKING_URI "
                        "or ./mlflow.db")  # fmt: skip
    report.add_argument("--study", help="with --experiment: only the runs of this study name")
    report.add_argument("--parent-run", help="with --experiment: only this study run")
    report.add_argument("--out", type=Path, required=True, help="output folder")
    conventions = report.add_argument_group("conventions (defaults: the paper's)")
    conventions.add_argument("--baseline-method", default="sft",
                             help="improvement is measured against this method (sft)")  # fmt: skip
    conventions.add_argument("--no-average", action="store_true",
                             help="do not add the Average pseudo-task")  # fmt: skip
    conventions.add_argument(
        "--every-temperature",
        action="store_true",
        help="each temperature is an observation (default: best over T)",
    )
    conventions.add_argument("--main-teacher-kind", default="task-aware",
                             help="teacher kind of the main tests (task-aware)")  # fmt: skip
    conventions.add_argument("--max-noise-sigma", type=float, default=0.0,
                             help="noisier rows are ablations (0)")  # fmt: skip


def report_main(args) -> int:
    from analysis.conventions import Conventions
    from analysis.loader import (
        load_experiment_results,
        read_results_csv,
        study_parent_runs,
    )
    from analysis.study_report import write_report
    from kdray.tracking.runs import RunLogger, resolve_tracking_uri

    check_conventions(args)
    conventions = Conventions(
        baseline_method=args.baseline_method,
        average_task=None if args.no_average else "Average",
        best_over_temperatures=not args.every_temperature,
        main_teacher_kind=args.main_teacher_kind,
        max_noise_sigma=args.max_noise_sigma,
    )
    if args.results:
        frame, parents, source = read_results_csv(args.results), [], str(args.results)
    else:
        uri = resolve_tracking_uri(args.tracking_uri)
        parents = study_parent_runs(uri, args.experiment, args.study, args.parent_run)
        frame = load_experiment_results(uri, parents)
        source = f"MLflow experiment {args.experiment} at {uri}, study runs {', '.join(parents)}"
    if frame.empty:
        raise KdrayError(f"no finished runs in {source}: nothing to analyse")
    files = write_report(frame, args.out, conventions, source)
    for parent in parents:  # the report beside the runs it came from
        RunLogger(uri, parent).log_dir(args.out, "report")
    print(f"[kdray] {files.headline}")
    print(f"[kdray] report written to {args.out.resolve()}/report.md (and .html, tests.csv, "
          "figures/, tables/)" + (" and logged to the study runs" if parents else ""))  # fmt: skip
    return 0


def best_main(args) -> int:
    from analysis.best import best_lines
    from kdray.tracking.runs import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    print("\n".join(best_lines(uri, args.experiment, args.student)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m analysis")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    _report_parser(commands)
    summary = commands.add_parser("summary", help="results table and figure of one study run")
    summary.add_argument("--parent-run", required=True, help="the study's MLflow parent run id")
    summary.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or ./mlflow.db")
    summary.add_argument("--out", default="results/summary", help="output folder")
    best = commands.add_parser(
        "best", help="an optimal.py experiment's registered picks: settings, scores, how to load"
    )
    best.add_argument("--experiment", required=True, help="MLflow experiment (kdray-optimal)")
    best.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or ./mlflow.db")
    best.add_argument("--student", help="only this student's pick")
    args = parser.parse_args(argv)
    try:
        check_inputs(args)  # before matplotlib, MLflow or anything else writes
    except KdrayError as error:
        return _refuse(error)

    from mlflow.exceptions import MlflowException

    from analysis.report import write_study_summary
    from kdray.tracking.runs import resolve_tracking_uri

    try:
        if args.command == "report":
            return report_main(args)
        if args.command == "best":
            return best_main(args)
        write_study_summary(
            resolve_tracking_uri(args.tracking_uri), args.parent_run, Path(args.out)
        )
    except (KdrayError, MlflowException, OSError) as error:
        return _refuse(error)
    return 0


def _refuse(error: Exception) -> int:
    """Bad input: one line on stderr, exit code 2."""
    print(f"python -m analysis: error: {str(error).splitlines()[0]}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
