"""The study's ablation views: tables of what the main tests leave out or fold away
(temperature, noise, teacher kind) and of what a user wants to pick (best settings). Each
takes the tidy rows (with the Average pseudo-task added) and returns a table, empty when the
rows do not vary that factor."""

from __future__ import annotations

import pandas as pd

from analysis.conventions import (
    REFERENCE_METHODS,
    Conventions,
    _filled,
    is_distilled,
    is_main,
    observations,
)

ID = ["student", "student_params_b", "method"]


def _students(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["role"].fillna("student") != "teacher"] if "role" in frame else frame


def _on(frame: pd.DataFrame, task: str | None) -> pd.DataFrame:
    return frame[frame["task"] == task] if task and (frame["task"] == task).any() else frame


def accuracy_vs(frame: pd.DataFrame, factor: str, conventions: Conventions) -> pd.DataFrame:
    """Accuracy of each (student, KD method) at each value of `factor` (temperature or
    noise_sigma) on the Average, one column per value; SFT alongside. Other ablations out
    (noise for the T view, teacher kind for both)."""
    rows = _on(_students(frame), conventions.average_task)
    kind = rows["teacher_kind"].fillna("").isin(["", conventions.main_teacher_kind])
    rows = rows[kind]
    if factor == "temperature":
        sigma = pd.to_numeric(rows["noise_sigma"], errors="coerce")
        rows = rows[~(sigma > conventions.max_noise_sigma)]
    kd = rows[is_distilled(rows["method"], conventions.baseline_method)]
    if kd[factor].nunique() < 2:
        return pd.DataFrame()
    index = ID if factor == "temperature" else [*ID, "temperature"]
    table = kd.pivot_table(index=index, columns=factor, values="accuracy", aggfunc="mean")
    table.columns = [f"{factor.split('_')[-1]}={c:g}" for c in table.columns]
    sft = rows[rows["method"] == conventions.baseline_method].groupby("student")["accuracy"]
    table = table.reset_index()
    table.insert(3, "sft", table["student"].map(sft.mean()))
    for reference in REFERENCE_METHODS:  # the untrained model's accuracy, where rows have it
        if (rows["method"] == reference).any():
            accuracy = rows[rows["method"] == reference].groupby("student")["accuracy"].mean()
            table.insert(3, reference, table["student"].map(accuracy))
    return table.sort_values(["student_params_b", "method"], ascending=[False, True])


def teacher_kinds(frame: pd.DataFrame, conventions: Conventions) -> pd.DataFrame:
    """Improvement over SFT on the Average with each teacher kind, per (teacher, student,
    method): max over T, no noise, as in the main tests."""
    if frame["teacher_kind"].replace("", None).nunique() < 2:
        return pd.DataFrame()
    per_kind = []
    for kind in sorted(frame["teacher_kind"].replace("", None).dropna().unique()):
        chosen = Conventions(**{**conventions.__dict__, "main_teacher_kind": kind})
        rows = _on(observations(frame, chosen), conventions.average_task)
        per_kind.append(  # the domain too: a study's files may hold several
            rows.set_index(["domain", "teacher", "student", "method"])["improvement"].rename(kind)
        )
    table = pd.concat(per_kind, axis=1).reset_index()
    if len(per_kind) == 2:
        first, second = table.columns[-2:]
        table[f"{first} - {second}"] = table[first] - table[second]
    return table


def agreement_fidelity(frame: pd.DataFrame, conventions: Conventions) -> pd.DataFrame:
    """Agreement with the teacher and BLEU fidelity per student: SFT against KD (the mean of
    every KD run of the main tests), the study's paradox in one table."""
    rows = _on(_students(frame), conventions.average_task)
    rows = rows[is_main(rows, conventions) & ~rows["method"].isin(REFERENCE_METHODS)]
    distilled = rows[is_distilled(rows["method"], conventions.baseline_method)]["student"]
    rows = rows[rows["student"].isin(distilled)]  # a teacher's own SFT row is not a student's
    if rows[["agreement", "fidelity"]].isna().all().all():
        return pd.DataFrame()
    kind = rows["method"].where(rows["method"] == conventions.baseline_method, "KD")
    table = (
        rows.assign(kind=kind.str.upper())
        .pivot_table(
            index=["student", "student_params_b"],
            columns="kind",
            values=["accuracy", "agreement", "fidelity"],
            aggfunc="mean",
        )  # fmt: skip
        .sort_index(level="student_params_b", ascending=False)
    )
    table.columns = [f"{value} {kind}" for value, kind in table.columns]
    return table.reset_index()


def best_settings(frame: pd.DataFrame, conventions: Conventions) -> pd.DataFrame:
    """Per student size: the KD setting with the best Average accuracy over every row tried
    (ablations included), its improvement over SFT and the runs it rests on."""
    rows = _on(_students(frame), conventions.average_task)
    keys = ["student", "method", "temperature", "noise_sigma", "teacher_kind", "teacher"]
    means = (
        _filled(rows, keys)
        .groupby(keys)
        .agg(
            accuracy=("accuracy", "mean"),
            runs=("accuracy", "size"),
            student_params_b=("student_params_b", "first"),
        )  # fmt: skip
        .reset_index()
    )
    sft = means[means["method"] == conventions.baseline_method].set_index("student")["accuracy"]
    kd = means[is_distilled(means["method"], conventions.baseline_method)]
    if kd.empty:
        return pd.DataFrame()
    best = kd.loc[kd.groupby("student")["accuracy"].idxmax()].copy()
    best["sft"] = best["student"].map(sft)
    best["improvement"] = best["accuracy"] - best["sft"]
    columns = ["student", "student_params_b", "teacher", "method", "temperature",
               "noise_sigma", "teacher_kind", "accuracy", "sft", "improvement", "runs"]  # fmt: skip
    return best[columns].sort_values("student_params_b", ascending=False)
