"""The analysis package: tracked runs (MLflow or a CSV in the tidy schema) to tables and
figures. `python -m analysis --help` for the command line."""

from analysis.loader import REQUIRED_COLUMNS, SCHEMA_COLUMNS, load_mlflow_results, read_results_csv
from analysis.tables import results_table

__all__ = [
    "REQUIRED_COLUMNS",
    "SCHEMA_COLUMNS",
    "load_mlflow_results",
    "read_results_csv",
    "results_table",
]
