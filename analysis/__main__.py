"""python -m analysis summary: rebuild a study's results table and figure from MLflow."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from kdray.errors import KdrayError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis")
    commands = parser.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summary", help="results table and figure of one study run")
    summary.add_argument("--parent-run", required=True, help="the study's MLflow parent run id")
    summary.add_argument("--tracking-uri", help="default $MLFLOW_TRACKING_URI or ./mlflow.db")
    summary.add_argument("--out", default="results/summary", help="output folder")
    args = parser.parse_args(argv)

    from mlflow.exceptions import MlflowException

    from analysis.report import write_study_summary
    from kdray.tracking import resolve_tracking_uri

    try:
        write_study_summary(
            resolve_tracking_uri(args.tracking_uri), args.parent_run, Path(args.out)
        )
    except (KdrayError, MlflowException) as error:
        print(f"python -m analysis: error: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
