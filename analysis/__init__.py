"""The analysis package: tracked runs (MLflow or a CSV in the tidy schema) to the study's
tables, statistics, figures and report. `python -m analysis --help` for the command line.

Its names load on first use, so `python -m analysis` checks its input before pandas, MLflow
and matplotlib load (they are slow, and write caches and ids under the home folder)."""

from importlib import import_module

_HOMES = {
    "Conventions": "analysis.conventions",
    "observations": "analysis.conventions",
    "run_tests": "analysis.hypothesis_tests",
    "REQUIRED_COLUMNS": "analysis.loader",
    "SCHEMA_COLUMNS": "analysis.loader",
    "load_experiment_results": "analysis.loader",
    "load_mlflow_results": "analysis.loader",
    "read_results_csv": "analysis.loader",
    "write_report": "analysis.study_report",
    "results_table": "analysis.tables",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
