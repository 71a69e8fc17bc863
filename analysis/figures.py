"""Figures for papers: PNG, one panel per student."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.tables import teacher_accuracy  # noqa: E402


def accuracy_vs_temperature(frame: pd.DataFrame, path: Path) -> Path:
    """Accuracy against T for each KD method, per student, with the student's SFT accuracy
    and the teacher's accuracy as horizontal references. Means over seeds and tasks."""
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
            curve = by_method.groupby("temperature")["accuracy"].mean()
            axis.plot(curve.index, curve.values, marker="o", label=method)
        sft = rows[rows["method"] == "sft"]["accuracy"].mean()
        if pd.notna(sft):
            axis.axhline(sft, color="grey", linestyle="--", label="SFT")
        if pd.notna(teacher):
            axis.axhline(teacher, color="black", linestyle=":", label="teacher")
        axis.set_title(student)
        axis.set_xlabel("temperature T")
        axis.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(loc="best", fontsize="small")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
