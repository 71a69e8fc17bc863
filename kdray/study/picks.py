"""The optimal-settings search's picks in the MLflow model registry: per student, the run of its
best trial (seed 0, or its first seed) registered as a new version of `<experiment>-<student>`
(prefixed `kdray-` where the name lacks it), with its setting, student, teacher and scores as
tags. A pick
whose student was not logged during the search (`--log-models picks`) is logged first, from the
folder its run exported it to. `python -m analysis best` reads them back."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.tracking import MlflowClient

from kdray.console import say
from kdray.study.config import StudyConfig
from kdray.tracking.models import (
    EXPERIMENT_TAG,
    MODEL_FOLDER_TAG,
    register_student,
    registered_name,
    student_model_id,
)
from kdray.tracking.outage import is_unreachable
from kdray.trial.closing import log_run_student

SETTING = (
    "method", "temperature", "noise_sigma", "ce_weight", "beta", "on_policy_fraction",
    "learning_rate",
)  # fmt: skip
"""The best-settings table's columns that make a pick's setting (empty where unused)."""
SCORES = ("val_score", "test_score", "seeds", "test_mean", "test_ci", "test_sd")
PARENT_TAG = "kdray.parent_run"


def register_picks(
    config: StudyConfig,
    tracking_uri: str,
    parent_id: str,
    table: pd.DataFrame,
    describe: Callable[[dict[str, Any]], str],
) -> list[ModelVersion]:
    """Register each student's pick of the best-settings `table` (its `run_id` column), one
    progress line each; `describe` writes a setting in one line. Nothing with --log-models
    none."""
    if config.log_models == "none":
        say("the picks are not registered as MLflow models (--log-models none)")
        return []
    client = MlflowClient(tracking_uri)
    teacher = client.get_run(parent_id).data.params.get("teacher", "")
    versions = []
    for row in table.to_dict("records"):
        if _given(row.get("run_id")):  # else no trial of the student completed
            run = client.get_run(row["run_id"])
            tags = pick_tags(row, run, teacher, describe)
            tags.update({EXPERIMENT_TAG: config.experiment_name, PARENT_TAG: parent_id})
            try:
                version = _register(client, tracking_uri, config.experiment_name, run, tags)
            except Exception as error:  # the search's results stand; one line, not a traceback
                if is_unreachable(error):
                    raise
                first = (str(error).strip().splitlines() or [""])[0][:300]
                say(f"{row['student']}'s pick is not registered: {type(error).__name__}: {first}")
                continue
            if version:
                versions.append(version)
    return versions


def pick_tags(
    row: dict[str, Any], run, teacher: str, describe: Callable[[dict[str, Any]], str]
) -> dict[str, str]:
    """The pick's setting (each knob, and all in one line as `setting`), student, teacher,
    seed and scores, as registry tags."""
    setting = {k: row[k] for k in SETTING if _given(row.get(k))}
    tags = {k: str(v) for k, v in setting.items()}
    tags.update({k: f"{row[k]:.4g}" for k in SCORES if _given(row.get(k))})
    sample = {k: v if k == "method" else float(v) for k, v in setting.items()}
    tags.update(
        setting=describe(sample),
        student=row["student"],
        teacher=run.data.params.get("teacher") or teacher,
        seed=run.data.params.get("seed", ""),
    )
    return tags


def _register(
    client: MlflowClient, tracking_uri: str, experiment: str, run, tags: dict[str, str]
) -> ModelVersion | None:
    """A new registry version for the pick's run, its student logged first if need be."""
    run_id, student = run.info.run_id, tags["student"]
    model_id = student_model_id(client, run_id)
    if model_id is None:
        folder = run.data.tags.get(MODEL_FOLDER_TAG)
        if not folder or not Path(folder).is_dir():
            say(
                f"{student}'s pick is not registered: its run {run_id} has no logged model and "
                f"its exported folder ({folder or 'not recorded'}) is not on this machine"
            )
            return None
        model_id = log_run_student(tracking_uri, run_id, Path(folder))
    name = registered_name(experiment, student)
    description = f"{student}'s pick of {experiment}: {tags['setting']} (run {run_id})"
    version = register_student(tracking_uri, name, model_id, run_id, tags, description)
    say(
        f"registered {student}'s pick {tags['setting']} as MLflow model {name} version "
        f"{version.version} (models:/{name}/{version.version})"
    )
    return version


def _given(value: Any) -> bool:
    """A table cell that holds something: not None, empty or NaN."""
    if value is None or value == "":
        return False
    return not (isinstance(value, float) and math.isnan(value))
