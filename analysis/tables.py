"""The results table of a study: accuracy, improvement over the same student's SFT,
agreement and fidelity per student x method x temperature (x noise), averaged over seeds."""

from __future__ import annotations

import pandas as pd

METHOD_ORDER = {"base": 0, "sft": 1, "kd": 2, "revkd": 3, "seqkd": 4, "gkd": 5}
GROUP_COLUMNS = ["student", "method", "temperature", "noise_sigma", "teacher_kind", "task"]
LIKELIHOOD_COLUMNS = ("nll", "kl_teacher_student", "answer_token_accuracy")
"""Held-out teacher-forced metrics (per run); shown where the runs logged them."""


def results_table(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (student, method, T, sigma, task) over the student runs of `frame`.

    improvement = accuracy - the mean accuracy of the same student's `sft` runs on the task
    (the study's convention); NaN when that student has no SFT run."""
    students = frame[frame["role"] != "teacher"] if "role" in frame else frame
    students = students.assign(teacher_kind=students["teacher_kind"].fillna(""))
    keys = students[GROUP_COLUMNS].astype(object).where(students[GROUP_COLUMNS].notna(), "")
    grouped = (
        students.assign(**{c: keys[c] for c in GROUP_COLUMNS})
        .groupby(GROUP_COLUMNS, sort=False)
        .agg(
            student_params_b=("student_params_b", "first"),
            accuracy=("accuracy", "mean"),
            accuracy_sd=("accuracy", "std"),
            agreement=("agreement", "mean"),
            fidelity=("fidelity", "mean"),
            **{m: (m, "mean") for m in LIKELIHOOD_COLUMNS if m in students},
            runs=("accuracy", "size"),
        )
        .reset_index()
    )
    sft = grouped[grouped["method"] == "sft"].set_index(["student", "task"])["accuracy"]
    baseline = [sft.get((s, t)) for s, t in zip(grouped["student"], grouped["task"], strict=True)]
    grouped["improvement"] = grouped["accuracy"] - pd.to_numeric(
        pd.Series(baseline), errors="coerce"
    )
    grouped["method_rank"] = grouped["method"].map(METHOD_ORDER).fillna(99)
    ordered = grouped.sort_values(
        ["student_params_b", "student", "task", "method_rank", "temperature", "noise_sigma"],
        ascending=[False, True, True, True, True, True],
        key=lambda column: column if column.name != "temperature" else pd.to_numeric(column),
    )
    columns = [
        "student",
        "method",
        "temperature",
        "noise_sigma",
        "teacher_kind",
        "task",
        "accuracy",
        "improvement",
        "agreement",
        "fidelity",
        *[m for m in LIKELIHOOD_COLUMNS if m in ordered],
        "runs",
        "accuracy_sd",
    ]
    return ordered[columns].reset_index(drop=True)


def across_tasks(frame: pd.DataFrame, label: str = "all tasks") -> pd.DataFrame:
    """One row per run: its mean score over the tasks it was evaluated on (the study's
    average accuracy), with `task` set to `label`. Frames of one task pass through."""
    if frame["task"].nunique() <= 1:
        return frame
    keys = [c for c in frame.columns if c not in ("task", "accuracy")]
    filled = frame[keys].astype(object).where(frame[keys].notna(), "")
    merged = (
        frame.assign(**{c: filled[c] for c in keys})
        .groupby(keys, sort=False, dropna=False)["accuracy"]
        .mean()
        .reset_index()
    )
    merged["task"] = label
    for column in frame.columns:  # back to numbers where the frame had numbers
        if pd.api.types.is_numeric_dtype(frame[column]) and column != "accuracy":
            merged[column] = pd.to_numeric(merged[column].replace("", None), errors="coerce")
    return merged[frame.columns]


def teacher_accuracy(frame: pd.DataFrame) -> pd.Series:
    """Teacher accuracy per task (the teacher model's own `sft` row)."""
    teachers = frame[frame.get("role", pd.Series(dtype=str)) == "teacher"]
    return teachers.groupby("task")["accuracy"].mean()


def largest_gap_student(frame: pd.DataFrame) -> str | None:
    """The student whose SFT accuracy is furthest below the teacher's."""
    teacher = teacher_accuracy(frame)
    sft = frame[(frame["method"] == "sft") & (frame.get("role") != "teacher")]
    if sft.empty or teacher.empty:
        return None
    gaps = sft.groupby("student").apply(
        lambda rows: (teacher.reindex(rows["task"]).to_numpy() - rows["accuracy"].to_numpy()).mean()
    )
    return str(gaps.idxmax())


def to_markdown(table: pd.DataFrame) -> str:
    shown = table.drop(columns=["accuracy_sd"]).copy()
    if shown["teacher_kind"].replace("", None).nunique() <= 1:  # shown when a study compares
        shown = shown.drop(columns=["teacher_kind"])
    for column in ("accuracy", "improvement", "agreement", "fidelity", "answer_token_accuracy"):
        if column in shown:
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.1f}")
    for column in ("nll", "kl_teacher_student"):
        if column in shown:
            if shown[column].isna().all():
                shown = shown.drop(columns=[column])
                continue
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{v:.4f}")
    return shown.to_markdown(index=False)
