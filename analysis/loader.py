"""Tracked runs to the tidy results schema (one row per evaluated run and task)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.conventions import REFERENCE_METHODS, RUN_METRICS
from kdray.config.run import METHODS, TEACHER_KINDS, score_metric
from kdray.errors import KdrayError
from kdray.tracking.runs import role_is
from kdray.tracking.stores import check_readable_store

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
    "nll",
    "kl_teacher_student",
    "answer_token_accuracy",
    "nll_teacher_unsure",
    "nll_teacher_sure",
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
    "nll",
    "kl_teacher_student",
    "answer_token_accuracy",
    "nll_teacher_unsure",
    "nll_teacher_sure",
)
OPTIONAL_COLUMNS = [c for c in SCHEMA_COLUMNS if c not in REQUIRED_COLUMNS]
PARAM_COLUMNS = [c for c in SCHEMA_COLUMNS if c not in ("accuracy", *RUN_METRICS)]
EXTRA_COLUMNS = ("metric", "run_id", "seed", "role")
"""`metric` says what `accuracy` holds: `accuracy` (percent) or `rouge_l` (instruction
following, ROUGE-L F x 100)."""
TASK_PREFIX = "score/"


def task_scores(metrics: dict[str, float], prefix: str = "") -> dict[str, float]:
    """Per-task scores logged as `<prefix>score/<task>`."""
    start = f"{prefix}{TASK_PREFIX}"
    return {k[len(start) :]: v for k, v in metrics.items() if k.startswith(start)}


def _all_runs(client, experiment_ids: list[str], filter_string: str):
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
    Trials and teacher give one row per task they were evaluated on. Extra columns: metric,
    run_id, seed, role."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    parent = client.get_run(parent_run_id)
    experiment_id = parent.info.experiment_id
    children = _all_runs(client, [experiment_id], f"tags.`mlflow.parentRunId` = '{parent_run_id}'")
    rows = [row for run in children if run.info.status == "FINISHED" for row in _trial_rows(run)]
    rows += _teacher_rows(parent)
    return _typed(pd.DataFrame(rows, columns=[*SCHEMA_COLUMNS, *EXTRA_COLUMNS]))


def _trial_rows(run) -> list[dict]:
    """A finished trial's rows, one per task it was scored on."""
    base = {c: run.data.params.get(c, "") for c in PARAM_COLUMNS}
    base.update({m: run.data.metrics.get(m) for m in RUN_METRICS})
    base.update(
        metric=score_metric(base["domain"]),
        run_id=run.info.run_id,
        seed=run.data.params.get("seed"),
        role="student",
    )
    per_task = task_scores(run.data.metrics) or {base["task"]: run.data.metrics.get("accuracy")}
    return [{**base, "task": task, "accuracy": score} for task, score in per_task.items()]


def _teacher_rows(parent) -> list[dict]:
    """The teachers' rows (method `sft`, role `teacher`) from the parent run's metrics."""
    params, metrics = parent.data.params, parent.data.metrics
    teacher = {
        "study": params.get("study", ""),
        "teacher": "",
        "student": params.get("teacher", ""),
        "student_params_b": params.get("teacher_params_b"),
        "method": "sft",
        "teacher_kind": params.get("teacher_kind", ""),
        "domain": params.get("domain", ""),
        "metric": score_metric(params.get("domain", "")),
        "run_id": parent.info.run_id,
        "role": "teacher",
    }
    per_task = task_scores(metrics, "teacher_")
    if not per_task and "teacher_accuracy" in metrics:
        per_task = {params.get("task", ""): metrics["teacher_accuracy"]}
    rows = [{**teacher, "task": task, "accuracy": score} for task, score in per_task.items()]
    # Several teachers: `teachers/<name>/score/<task>`, or `teachers/<name>/<kind>/score/<task>`
    # when the study compares teacher kinds.
    prefixes = {}
    for key in metrics:
        parts = key.split("/")
        if parts[0] == "teachers" and len(parts) > 2:
            kind = parts[2] if parts[2] in TEACHER_KINDS else None
            prefixes["/".join(parts[: 3 if kind else 2]) + "/"] = (parts[1], kind)
    for prefix, (name, kind) in sorted(prefixes.items()):
        scores = task_scores(metrics, prefix)
        kind = kind or teacher["teacher_kind"]
        rows += [
            {**teacher, "student": name, "teacher_kind": kind, "task": task, "accuracy": score,
             "student_params_b": None}
            for task, score in scores.items()
        ]  # fmt: skip
    return rows


def find_experiment(tracking_uri: str, experiment: str):
    """(a client of the store, the experiment named `experiment`); one line naming the fix
    when the store or the experiment does not exist."""
    from mlflow.tracking import MlflowClient

    check_readable_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise KdrayError(
            f"no MLflow experiment {experiment!r} at {tracking_uri} (experiments there: "
            f"{names}); pass --experiment NAME and --tracking-uri URI of the study's store"
        )
    return client, found


def study_parent_runs(
    tracking_uri: str, experiment: str, study: str | None = None, parent_run: str | None = None
) -> list[str]:
    """The study parent runs of an MLflow experiment (newest first), optionally only those of
    one study name or one parent run id."""
    client, found = find_experiment(tracking_uri, experiment)
    query = role_is("study")
    if study:
        query += f" and tags.`kdray.study` = '{study}'"
    parents = [r.info.run_id for r in _all_runs(client, [found.experiment_id], query)]
    if parent_run:
        parents = [p for p in parents if p == parent_run]
    if not parents:
        raise KdrayError(
            f"experiment {experiment!r} holds no study run"
            + (f" of study {study!r}" if study else "")
            + (f" with id {parent_run}" if parent_run else "")
            + ": check the names with `mlflow ui` or run the study first"
        )
    return parents


def load_experiment_results(tracking_uri: str, parent_runs: list[str]) -> pd.DataFrame:
    """The tidy rows of several study runs together (their finished trials and teachers)."""
    frames = [load_mlflow_results(tracking_uri, parent) for parent in parent_runs]
    return _typed(pd.concat(frames, ignore_index=True))


def read_results_csv(path: Path) -> pd.DataFrame:
    """Results produced elsewhere, in the same schema; optional columns may be missing."""
    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise KdrayError(
            f"no results file {path}: pass the path of a CSV in the tidy schema"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        columns = ", ".join(REQUIRED_COLUMNS)
        raise KdrayError(
            f"{path} is not a readable CSV ({reason}): write it with a header row and the "
            f"columns {columns}"
        ) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise KdrayError(
            f"{path} lacks required columns {', '.join(missing)}: the tidy schema needs "
            f"{', '.join(REQUIRED_COLUMNS)} (optional: {', '.join(OPTIONAL_COLUMNS)})"
        )
    if frame.empty:
        raise KdrayError(f"{path} has a header but no rows: nothing to analyse")
    _check_values(frame, path)
    known = [*REFERENCE_METHODS, *METHODS]
    if unknown := sorted(set(frame["method"].astype(str)) - set(known)):
        raise KdrayError(
            f"{path}: unknown method {', '.join(map(repr, unknown))} in column `method`: the "
            f"tidy schema knows {', '.join(known)} (base: the untrained model, a reference row)"
        )
    for column in SCHEMA_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    if "role" not in frame.columns:
        frame["role"] = "student"
    return _typed(frame)


PERCENT_COLUMNS = ("accuracy", "agreement", "fidelity", "answer_token_accuracy")
POSITIVE_COLUMNS = ("temperature",)
NON_NEGATIVE_COLUMNS = ("noise_sigma", "student_params_b", "teacher_params_b", "nll",
                        "kl_teacher_student", "nll_teacher_unsure", "nll_teacher_sure")  # fmt: skip


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    """Every value where the schema expects one: numbers in numeric columns (a blank is
    missing, a word is an error), percentages in 0-100, T > 0, σ and sizes >= 0, an accuracy in
    every row, known teacher kinds. The first bad cell is named by file, row (as a spreadsheet
    counts, the header is row 1) and column."""

    def refuse(index, column: str, problem: str) -> None:
        raise KdrayError(f"{path}, row {index + 2}, column {column}: {problem}")

    for column in NUMERIC_COLUMNS:
        if column not in frame:
            continue
        raw = frame[column]
        given = raw.notna() & (raw.astype(str).str.strip() != "")
        numbers = pd.to_numeric(raw.where(given), errors="coerce")
        if (bad := given & numbers.isna()).any():
            index = bad.idxmax()
            refuse(index, column, f"{raw[index]!r} is not a number")
        if (bad := numbers.isin([float("inf"), float("-inf")])).any():
            refuse(bad.idxmax(), column, "is infinite")
        if column in PERCENT_COLUMNS and (bad := (numbers < 0) | (numbers > 100)).any():
            index = bad.idxmax()
            refuse(index, column, f"{numbers[index]:g} is outside 0-100 (a percentage)")
        if column in POSITIVE_COLUMNS and (bad := numbers <= 0).any():
            index = bad.idxmax()
            refuse(index, column, f"{numbers[index]:g} must be > 0")
        if column in NON_NEGATIVE_COLUMNS and (bad := numbers < 0).any():
            index = bad.idxmax()
            refuse(index, column, f"{numbers[index]:g} must be >= 0")
        if column == "accuracy" and (missing := ~given).any():
            refuse(missing.idxmax(), column, "is empty: every row needs its score")
    if "teacher_kind" in frame:
        kinds = frame["teacher_kind"].fillna("").astype(str)
        if (bad := ~kinds.isin(["", *TEACHER_KINDS])).any():
            index = bad.idxmax()
            refuse(index, "teacher_kind", f"unknown kind {kinds[index]!r}: the schema knows "
                   f"{', '.join(TEACHER_KINDS)} (or empty)")  # fmt: skip


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    for column in NUMERIC_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].replace("", None), errors="coerce")
    return frame
