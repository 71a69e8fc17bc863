"""Figures for papers: PNG, one panel per student, against the factor the study varies."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import METHOD_ORDER, teacher_accuracy  # noqa: E402

FACTORS = {"temperature": "temperature T", "noise_sigma": "teacher-logit noise σ"}


def study_figure(frame: pd.DataFrame, out_dir: Path) -> Path:
    """The figure of what the study varies: accuracy against T, or against σ, and otherwise
    (methods, student sizes, teacher kinds) accuracy per method as bars."""
    kd = frame[(frame["role"] != "teacher") & (frame["method"] != "sft")]
    for factor in FACTORS:
        if kd[factor].nunique() > 1:
            return accuracy_vs_factor(frame, factor, out_dir / f"accuracy_vs_{factor}.png")
    return accuracy_by_method(frame, out_dir / "accuracy_by_method.png")


def accuracy_by_method(frame: pd.DataFrame, path: Path) -> Path:
    """Bars per method (and teacher kind, when the study compares kinds), per student, with
    the teacher's accuracy as a reference. Means over seeds, settings and tasks."""
    students_rows = frame[frame["role"] != "teacher"]
    students = (
        students_rows.groupby("student")["student_params_b"].first().sort_values(ascending=False)
    )
    figure, axes = plt.subplots(
        1, len(students), figsize=(4.2 * len(students), 3.4), squeeze=False, sharey=True
    )
    kinds = students_rows["teacher_kind"].replace("", None).nunique() > 1
    teachers = frame[frame["role"] == "teacher"]
    if kinds:  # one reference line per teacher kind
        by_kind = teachers.groupby("teacher_kind")
        teacher_lines = {f"teacher ({k})": teacher_accuracy(rows).mean() for k, rows in by_kind}
    else:
        teacher_lines = {"teacher": teacher_accuracy(frame).mean()}
    teacher_lines = {k: v for k, v in teacher_lines.items() if pd.notna(v)}
    for axis, student in zip(axes[0], students.index, strict=True):
        rows = students_rows[students_rows["student"] == student]
        label = rows["method"] + (" " + rows["teacher_kind"].fillna("") if kinds else "")
        bars = rows.assign(label=label.str.strip()).groupby("label")["accuracy"].mean()
        bars = bars.reindex(
            sorted(bars.index, key=lambda b: (METHOD_ORDER.get(b.split()[0], 99), b))
        )
        axis.bar(range(len(bars)), bars.values, color="tab:blue")
        axis.set_xticks(range(len(bars)), bars.index, rotation=45, ha="right", fontsize="small")
        for (kind, value), style in zip(teacher_lines.items(), (":", "-."), strict=False):
            axis.axhline(value, color="black", linestyle=style, label=kind)
        if teacher_lines:
            axis.legend(loc="best", fontsize="small")
        axis.set_title(student)
        axis.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("test accuracy (%)")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def accuracy_vs_factor(frame: pd.DataFrame, factor: str, path: Path) -> Path:
    """Accuracy against `factor` (T or σ) for each KD method, per student, with the student's
    SFT accuracy and the teacher's accuracy as horizontal references. Means over seeds and
    tasks."""
    students_rows = frame[frame["role"] != "teacher"]
    students = (
        students_rows.groupby("student")["student_params_b"].first().sort_values(ascending=False)
    )
    figure, axes = plt.subplots(
        1, len(students), figsize=(4.2 * len(students), 3.4), squeeze=False, sharey=True
    )
    teacher = teacher_accuracy(frame).mean()
    for axis, student in zip(axes[0], students.index, strict=True):
        rows = students_rows[students_rows["student"] == student]
        for method, by_method in rows[rows["method"] != "sft"].groupby("method"):
            curve = by_method.groupby(factor)["accuracy"].mean()
            axis.plot(curve.index, curve.values, marker="o", label=method)
        sft = rows[rows["method"] == "sft"]["accuracy"].mean()
        if pd.notna(sft):
            axis.axhline(sft, color="grey", linestyle="--", label="SFT")
        if pd.notna(teacher):
            axis.axhline(teacher, color="black", linestyle=":", label="teacher")
        axis.set_title(student)
        axis.set_xlabel(FACTORS[factor])
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(loc="best", fontsize="small")
    return _save(figure, path)
