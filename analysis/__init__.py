"""The analysis package: tracked runs (MLflow or a CSV in the tidy schema) to the study's
tables, statistics, figures and report. `python -m analysis --help` for the command line."""

from analysis.conventions import Conventions, observations
from analysis.hypothesis_tests import run_tests
from analysis.loader import (
    REQUIRED_COLUMNS,
    SCHEMA_COLUMNS,
    load_experiment_results,
    load_mlflow_results,
    read_results_csv,
)
from analysis.study_report import write_report
from analysis.tables import results_table

__all__ = [
    "REQUIRED_COLUMNS",
    "SCHEMA_COLUMNS",
    "Conventions",
    "load_experiment_results",
    "load_mlflow_results",
    "observations",
    "read_results_csv",
    "results_table",
    "run_tests",
    "write_report",
]
