"""Tracked runs to the tidy results schema (one row per evaluated run and task)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

SCHEMA_COLUMNS = (
    "study",
    "teacher",
    "student",
    "student_params_b",
    "teacher_params_b",
    "method",
    "temperature",
    "noise_sigma",
    "teacher_kind",
    "domain",
    "task",
    "accuracy",
    "agreement",
    "fidelity",
)
REQUIRED_COLUMNS = ("study", "student", "method", "task", "accuracy")
NUMERIC_COLUMNS = (
    "student_params_b",
    "teacher_params_b",
    "temperature",
    "noise_sigma",
    "accuracy",
    "agreement",
    "fidelity",
)
PARAM_COLUMNS = [c for c in SCHEMA_COLUMNS if c not in ("accuracy", "agreement", "fidelity")]


def _all_runs(client: MlflowClient, experiment_ids: list[str], filter_string: str):
    token = None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def load_mlflow_results(tracking_uri: str, parent_run_id: str) -> pd.DataFrame:
    """The study's rows: one per finished trial (child runs of `parent_run_id`), plus the
    teacher's own row (method `sft`, logged on the parent run), in the tidy schema.
    Extra columns: run_id, seed, role."""
    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    rows = []
    children = _all_runs(client, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    for run in children:
        if run.info.status != "FINISHED":
            continue
        row = {c: run.data.params.get(c, "") for c in PARAM_COLUMNS}
        row.update({m: run.data.metrics.get(m) for m in ("accuracy", "agreement", "fidelity")})
        row.update(run_id=run.info.run_id, seed=run.data.params.get("seed"), role="student")
        rows.append(row)
    params, metrics = parent.data.params, parent.data.metrics
    if "teacher_accuracy" in metrics:
        rows.append(
            {
                "study": params.get("study", ""),
                "teacher": "",
                "student": params["teacher"],
                "student_params_b": params.get("teacher_params_b"),
                "teacher_params_b": None,
                "method": "sft",
                "temperature": None,
                "noise_sigma": None,
                "teacher_kind": "",
                "domain": params.get("domain", ""),
                "task": params.get("task", ""),
                "accuracy": metrics["teacher_accuracy"],
                "run_id": parent_run_id,
                "role": "teacher",
            }
        )
    return _typed(pd.DataFrame(rows, columns=[*SCHEMA_COLUMNS, "run_id", "seed", "role"]))


def read_results_csv(path: Path) -> pd.DataFrame:
    """Results produced elsewhere, in the same schema; optional columns may be missing."""
    frame = pd.read_csv(path)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks required columns {', '.join(missing)}")
    for column in SCHEMA_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if "role" not in frame.columns:
        frame["role"] = "student"
    return _typed(frame)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce")
    return frame
