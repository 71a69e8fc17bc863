"""The study's conventions: how tidy rows (one per run and task) become the observations its
tests compare (one per teacher x student x method x task, with its improvement over SFT).

The defaults follow "On the Generalization vs Fidelity Paradox in Knowledge Distillation"
exactly; each is a field of `Conventions`, so a user can state a different choice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd

RUN_METRICS = ("agreement", "fidelity", "nll", "kl_teacher_student", "answer_token_accuracy",
               "nll_teacher_unsure", "nll_teacher_sure")  # fmt: skip
"""Metrics of a whole run (not per task): agreement and BLEU fidelity with the teacher, and the
teacher-forced held-out NLL, KL(teacher || student) and answer-token accuracy; the NLL where
the teacher is unsure and where it is sure (kdray.eval.likelihood)."""
RUN_KEYS = ["study", "teacher", "student", "method", "temperature", "noise_sigma",
            "teacher_kind", "domain", "seed", "role"]  # fmt: skip
"""What tells runs apart when a results file has no `run_id` column."""
SETTING_KEYS = ["teacher", "student", "method", "temperature", "noise_sigma", "teacher_kind",
                "domain", "task"]  # fmt: skip
PAIR_KEYS = ["teacher", "student", "method", "teacher_kind", "domain", "task"]
REFERENCE_METHODS = ("base",)
"""Rows of a model as it is, untrained on the task (the study's released files carry them):
shown in the tables as the reference they are, never a KD method in the tests."""


def is_distilled(methods: pd.Series, baseline: str = "sft") -> pd.Series:
    """True for rows of a KD method: neither the baseline nor a reference row."""
    return ~methods.isin([baseline, *REFERENCE_METHODS])


@dataclass(frozen=True)
class Conventions:
    """How runs become the study's observations. Defaults: the paper's choices."""

    baseline_method: str = "sft"
    """Improvement of a run on a task = its accuracy minus the same student's accuracy with
    this method on that task."""
    average_task: str | None = "Average"
    """Name of the pseudo-task added per run: the unweighted mean of its accuracies over the
    domain's tasks, computed before anything else. None: no such task."""
    best_over_temperatures: bool = True
    """For each (teacher, student, method) and task, keep the maximum accuracy over the
    temperatures tried, task by task. False: each temperature is its own observation."""
    main_teacher_kind: str = "task-aware"
    """Rows distilled from another teacher kind are ablations, left out of the main tests."""
    max_noise_sigma: float = 0.0
    """Rows with teacher-logit noise above this are ablations, left out of the main tests."""

    def describe(self) -> list[str]:
        """The conventions in words, for the report."""
        lines = [
            f"Improvement = accuracy - the same student's `{self.baseline_method}` accuracy "
            "on the same task.",
            "Teacher performance = the teacher model's own "
            f"`{self.baseline_method}` accuracy on the task.",
            "Student size = `student_params_b`, else the number before 'B' in its name.",
        ]
        if self.average_task:
            lines.append(
                f"`{self.average_task}` = the unweighted mean of a run's accuracies over its "
                "domain's tasks, computed per run first."
            )
        lines.append(
            "Per (teacher, student, method) and task: the maximum over the temperatures tried."
            if self.best_over_temperatures
            else "Every temperature is a separate observation."
        )
        lines.append(
            f"Main tests: `{self.main_teacher_kind}` teachers and noise σ <= "
            f"{self.max_noise_sigma:g}; other rows are ablations. Seeds are averaged first."
        )
        return lines


def student_size(name: str, params_b: float | None) -> float:
    """Size in billions of parameters: the logged count, else the number before 'B' in the
    name (`Qwen2.5-1.5B-Instruct` -> 1.5); NaN when neither exists."""
    if params_b is not None and pd.notna(params_b):
        return float(params_b)
    found = re.findall(r"(\d+(?:\.\d+)?)B(?![a-zA-Z])", str(name))
    return float(found[-1]) if found else float("nan")


def with_sizes(frame: pd.DataFrame) -> pd.DataFrame:
    """`student_params_b` filled from the names where it was not logged."""
    sizes = [student_size(n, b) for n, b in zip(frame["student"], frame["student_params_b"],
                                                 strict=True)]  # fmt: skip
    return frame.assign(student_params_b=sizes)


def _filled(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`keys` with missing values as "", so groupby keeps the rows (sft has no T)."""
    present = [k for k in keys if k in frame]
    return frame.assign(**{k: frame[k].astype(object).where(frame[k].notna(), "") for k in present})


def with_average(frame: pd.DataFrame, name: str | None = "Average") -> pd.DataFrame:
    """`frame` plus one `name` row per run: the unweighted mean of its accuracies over the
    tasks it was evaluated on (RUN_METRICS are per run already)."""
    if not name or frame.empty:
        return frame
    if "run_id" in frame and frame["run_id"].notna().all():
        keys = ["run_id"]
    else:
        keys = [k for k in RUN_KEYS if k in frame]
    keyed = _filled(frame, keys)
    rows = frame[keyed["task"] != name]
    grouped = _filled(rows, keys).groupby(keys, sort=False, dropna=False)
    average = grouped.first().reset_index()
    average["accuracy"] = grouped["accuracy"].mean().to_numpy()
    for column in RUN_METRICS:
        if column in rows:
            average[column] = grouped[column].mean().to_numpy()
    average["task"] = name
    restored = average[frame.columns].copy()
    for column in frame.columns:  # back to NaN where the key was missing
        if pd.api.types.is_numeric_dtype(frame[column]):
            restored[column] = pd.to_numeric(restored[column].replace("", None), errors="coerce")
    return pd.concat([rows, restored], ignore_index=True)


def is_main(frame: pd.DataFrame, conventions: Conventions) -> pd.Series:
    """Rows of the main tests: the main teacher kind (or none, for sft) and noise within the
    bound (or none)."""
    kind = frame["teacher_kind"].fillna("").astype(str)
    sigma = pd.to_numeric(frame["noise_sigma"], errors="coerce")
    return kind.isin(["", conventions.main_teacher_kind]) & ~(sigma > conventions.max_noise_sigma)


def teacher_scores(frame: pd.DataFrame, conventions: Conventions) -> pd.Series:
    """Accuracy per (model, domain, task) of each model's own baseline rows, preferring the
    rows of its role as a teacher where a study logged them."""
    rows = frame[frame["method"] == conventions.baseline_method]
    rows = rows[rows["teacher_kind"].fillna("").isin(["", conventions.main_teacher_kind])]
    if "role" in rows and (rows["role"] == "teacher").any():
        as_teacher = rows[rows["role"] == "teacher"]
        rows = pd.concat([as_teacher, rows[~rows["student"].isin(as_teacher["student"])]])
    return _filled(rows, ["domain"]).groupby(["student", "domain", "task"])["accuracy"].mean()


def observations(frame: pd.DataFrame, conventions: Conventions | None = None) -> pd.DataFrame:
    """The main tests' observations: one row per (teacher, student, KD method, teacher kind,
    domain, task) with `accuracy`, `improvement`, `sft_accuracy`, `teacher_accuracy`,
    `student_size`, `agreement`, `fidelity` (those of the best temperature's runs)."""
    conventions = conventions or Conventions()
    tidy = with_average(with_sizes(frame), conventions.average_task)
    teachers = teacher_scores(tidy, conventions)
    students = tidy[tidy["role"].fillna("student") != "teacher"] if "role" in tidy else tidy
    students = students[is_main(students, conventions)]
    settings = _filled(students, SETTING_KEYS).groupby(SETTING_KEYS, sort=False)
    means = settings.agg(
        accuracy=("accuracy", "mean"),
        agreement=("agreement", "mean"),
        fidelity=("fidelity", "mean"),
        student_params_b=("student_params_b", "first"),
        runs=("accuracy", "size"),
    ).reset_index()
    baseline = means[means["method"] == conventions.baseline_method]
    baseline = baseline.groupby(["student", "domain", "task"])["accuracy"].mean()
    kd = means[is_distilled(means["method"], conventions.baseline_method)]
    if conventions.best_over_temperatures and not kd.empty:
        best = kd.groupby(PAIR_KEYS, sort=False)["accuracy"].idxmax()
        kd = kd.loc[best.to_numpy()]
    kd = kd.reset_index(drop=True)
    keys = list(zip(kd["student"], kd["domain"], kd["task"], strict=True))
    kd["sft_accuracy"] = [baseline.get(key, float("nan")) for key in keys]
    kd["improvement"] = kd["accuracy"] - kd["sft_accuracy"]
    kd["teacher_accuracy"] = [
        teachers.get((t, d, task), float("nan"))
        for t, d, task in zip(kd["teacher"], kd["domain"], kd["task"], strict=True)
    ]
    kd["student_size"] = kd["student_params_b"]
    kd["temperature"] = pd.to_numeric(kd["temperature"].replace("", None), errors="coerce")
    kd["noise_sigma"] = pd.to_numeric(kd["noise_sigma"].replace("", None), errors="coerce")
    return kd
