"""The five findings of "On the Generalization vs Fidelity Paradox in Knowledge Distillation"
(ACL Findings 2025), each tested on paired seeds of the tiny world:

1. KD beats SFT for small students: KD T=1 − SFT, per student and pooled (paired t);
2. KD's improvement over SFT falls with student size: Spearman's rho of the student's parameter
   count with KD T=1 − SFT over (student, seed) points, with a bootstrap CI;
3. T=2 beats T=5: KD T=2 − KD T=5 (paired t over student and seed);
4. teacher-logit noise sigma=5 collapses accuracy: KD T=1 sigma=5 − KD T=1 sigma=0;
5. a task-unaware teacher hurts: KD T=1 from the task-unaware teacher − from the task-aware one.

Each on accuracy and on held-out NLL (lower is better, so a claim's direction flips). A pair is
the same student and seed (the same base and data order), the difference treatment − reference.
Paired t-tests and Spearman's test are two-sided; a test is `supported` when p < 0.05 in the
claimed direction, `contradicted` when p < 0.05 against it, else `null`, with its minimal
detectable effect (MDE: power 0.8 at alpha 0.05 at its n and spread).

The input is per-run rows (`runs_of`) of one or more studies in priority order: a run that
two studies share (the SFT every study script trains, say) is taken from the first, and
`duplicate_runs` checks that the copies agree (they should, on one machine: training is
deterministic).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.hypothesis_tests import spearman
from analysis.replicates import LOWER_IS_BETTER, format_ci, per_run
from analysis.uncertainty import ALPHA, mde_spearman, paired_test, spearman_ci

METRICS = ("accuracy", "nll")
DIGITS = {"accuracy": 1, "nll": 4}
TOLERANCE = 1e-9
"""Runs that two studies share match when every metric agrees to within this."""
IDENTITY = ["student", "seed", "method", "temperature", "noise_sigma", "teacher_kind", "teacher"]
"""What makes two runs the same run (SFT: student, seed and method only)."""
TABLE_COLUMNS = ["finding", "comparison", "metric", "test", "n", "estimate", "ci_low",
                 "ci_high", "statistic", "p", "mde", "verdict", "sizes"]  # fmt: skip


@dataclass(frozen=True)
class Cell:
    """One setting of the grid: a method, its temperature, noise and teacher kind."""

    method: str
    temperature: float | None = None
    noise_sigma: float = 0.0
    teacher_kind: str = "task-aware"
    shown: str = field(default="", compare=False)
    """The label where the default one would hide what the comparison varies."""

    def label(self) -> str:
        """'SFT', 'KD T=1', 'KD T=1 σ=5', 'KD T=1 task-unaware' (or `shown`)."""
        if self.shown or self.method == "sft":
            return self.shown or "SFT"
        text = f"{self.method.upper()} T={self.temperature:g}"
        if self.noise_sigma:
            text += f" σ={self.noise_sigma:g}"
        if self.teacher_kind != "task-aware":
            text += f" {self.teacher_kind}"
        return text

    def mask(self, runs: pd.DataFrame, teacher: str) -> pd.Series:
        """The runs of this cell (SFT: of any study; a KD cell: from `teacher`)."""
        chosen = runs["method"] == self.method
        if self.method == "sft":
            return chosen
        return (
            chosen
            & np.isclose(runs["temperature"], self.temperature)
            & np.isclose(runs["noise_sigma"], self.noise_sigma)
            & (runs["teacher_kind"] == self.teacher_kind)
            & (runs["teacher"] == teacher)
        )


@dataclass(frozen=True)
class Finding:
    """A claim of the study as a paired comparison: treatment − reference per student and
    seed; `sign` is the claimed direction on accuracy (+1: treatment higher)."""

    number: int
    claim: str
    treatment: Cell
    reference: Cell
    sign: int
    per_student: bool = False
    """Also one test per student (else pooled only)."""
    correlation: bool = False
    """Spearman's rho of student size with the difference, not a paired t-test."""

    def claimed_sign(self, metric: str) -> int:
        """The claimed direction of the difference on `metric` (NLL: lower is better)."""
        return -self.sign if metric in LOWER_IS_BETTER else self.sign


SFT = Cell("sft")
KD_T1 = Cell("kd", 1.0)
FINDINGS = (
    Finding(1, "KD beats SFT for small students", KD_T1, SFT, +1, per_student=True),
    Finding(2, "KD's gain over SFT falls with student size", KD_T1, SFT, -1, correlation=True),
    Finding(3, "T=2 beats T=5", Cell("kd", 2.0), Cell("kd", 5.0), +1),
    Finding(
        4,
        "teacher-logit noise σ=5 collapses accuracy",
        Cell("kd", 1.0, 5.0),
        Cell("kd", 1.0, shown="KD T=1 σ=0"),
        -1,
    ),
    Finding(
        5,
        "a task-unaware teacher hurts",
        Cell("kd", 1.0, 0.0, "task-unaware"),
        Cell("kd", 1.0, shown="KD T=1 task-aware"),
        -1,
    ),
)


def runs_of(frame: pd.DataFrame, experiment: str = "") -> pd.DataFrame:
    """One row per student run of a study's tidy rows (analysis.replicates.per_run), with its
    teacher, parameter count (`student_params`) and `experiment`; temperature and noise as
    numbers (noise 0 where not logged), teacher kind `task-aware` where not logged."""
    runs = per_run(frame)
    first = frame.drop_duplicates("run_id").set_index("run_id")
    return runs.assign(
        teacher=runs["run_id"].map(first["teacher"]).fillna("").astype(str),
        student_params=runs["run_id"].map(first["student_params_b"]) * 1e9,
        temperature=pd.to_numeric(runs["temperature"].replace("", None), errors="coerce"),
        noise_sigma=pd.to_numeric(runs["noise_sigma"].replace("", None), errors="coerce")
        .fillna(0.0),
        teacher_kind=runs["teacher_kind"].replace("", "task-aware"),
        experiment=experiment,
    )  # fmt: skip


def _identity(runs: pd.DataFrame) -> pd.DataFrame:
    """IDENTITY of each run, blank beyond student, seed and method for SFT."""
    keys = runs[IDENTITY].astype(object).where(runs[IDENTITY].notna(), "")
    sft = runs["method"] == "sft"
    keys.loc[sft, IDENTITY[3:]] = ""
    return keys.astype(str)


def duplicate_runs(runs: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Every run that several studies trained (same identity): its experiments, the largest
    |difference| of each metric between the copies, and whether all are within `tolerance`."""
    keyed = runs.assign(_key=_identity(runs).agg(" | ".join, axis=1))
    rows = []
    for _, copies in keyed.groupby("_key", sort=False):
        if len(copies) < 2:
            continue
        first = copies.iloc[0]
        row = {c: first[c] for c in ("student", "seed", "method")}
        row["copies"], row["experiments"] = len(copies), ", ".join(copies["experiment"])
        for metric in METRICS:
            values = copies[metric].astype(float)
            row[f"max_diff_{metric}"] = float(values.max() - values.min())
        row["match"] = all(row[f"max_diff_{m}"] <= tolerance for m in METRICS)
        rows.append(row)
    columns = ["student", "seed", "method", "copies", "experiments",
               *(f"max_diff_{m}" for m in METRICS), "match"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def paired_differences(
    runs: pd.DataFrame, finding: Finding, metric: str, teacher: str
) -> pd.DataFrame:
    """Per (student, seed) both cells ran: `delta` = treatment − reference on `metric`, and
    the student's parameter count. A run several studies share counts once (the first)."""
    unique = runs[~_identity(runs).duplicated()]

    def cell(which: Cell) -> pd.Series:
        return unique[which.mask(unique, teacher)].set_index(["student", "seed"])[metric]

    both = pd.concat([cell(finding.treatment), cell(finding.reference)], axis=1, join="inner")
    delta = (both.iloc[:, 0] - both.iloc[:, 1]).dropna().rename("delta").reset_index()
    sizes = unique.groupby("student")["student_params"].first()
    return delta.assign(student_params=delta["student"].map(sizes))


def spearman_test(points: pd.DataFrame) -> dict:
    """Spearman's rho of `student_params` with `delta` (two-sided), its bootstrap CI, its MDE
    in rho, and how many distinct student sizes the points have."""
    rho, p, n = spearman(points["student_params"], points["delta"])
    low, high = spearman_ci(points["student_params"], points["delta"])
    return {"n": n, "estimate": rho, "ci_low": low, "ci_high": high, "statistic": rho,
            "p": p, "mde": mde_spearman(n),
            "sizes": int(points["student_params"].nunique())}  # fmt: skip


def verdict(result: dict, claimed_sign: int, digits: int) -> str:
    """supported / contradicted (p < ALPHA with / against the claimed sign), else null with
    the MDE; `no test` where the data cannot carry one."""
    if math.isnan(result["p"]):
        return f"no test (n = {result['n']})"
    if result["p"] < ALPHA:
        agrees = np.sign(result["statistic"]) == claimed_sign
        return "supported" if agrees else "contradicted"
    mde = result["mde"]
    return f"null (not detected; MDE {mde:.{digits}f})" if not math.isnan(mde) else "null"


def _comparison(finding: Finding, metric: str, scope: str) -> str:
    direction = ">" if finding.claimed_sign(metric) > 0 else "<"
    if finding.correlation:
        return f"ρ(student parameters, {finding.treatment.label()} − SFT) {direction} 0; {scope}"
    return f"{finding.treatment.label()} − {finding.reference.label()} {direction} 0; {scope}"


def _rows(finding: Finding, metric: str, pairs: pd.DataFrame, teacher: str) -> list[dict]:
    """A finding's rows on one metric: pooled (and per student, smallest first)."""
    digits = DIGITS.get(metric, 3)
    label = f"{finding.number}. {finding.claim}"
    claimed = finding.claimed_sign(metric)
    if finding.correlation:
        result = spearman_test(pairs)
        names = pairs.drop_duplicates("student").sort_values("student_params")["student"]
        scope = (f"{result['n']} (student, seed) points, {result['sizes']} distinct sizes "
                 f"({', '.join(names)}), teacher {teacher}")  # fmt: skip
        test = "Spearman, two-sided; 95% CI: bootstrap"
        return [{"finding": label, "comparison": _comparison(finding, metric, scope),
                 "metric": metric, "test": test, **result,
                 "verdict": verdict(result, claimed, 2)}]  # fmt: skip
    groups = []
    if finding.per_student:
        order = pairs.drop_duplicates("student").sort_values("student_params")["student"]
        groups = [(name, pairs[pairs["student"] == name]) for name in order]
    students = pairs["student"].nunique()
    groups.append((f"pooled over {students} student{'s' * (students != 1)}", pairs))
    rows = []
    for scope, part in groups:
        result = paired_test(part["delta"].reset_index(drop=True))
        rows.append({"finding": label, "comparison": _comparison(finding, metric, scope),
                     "metric": metric, "test": "paired t, two-sided", **result,
                     "verdict": verdict(result, claimed, digits)})  # fmt: skip
    return rows


def findings_table(
    runs: pd.DataFrame, teacher: str, size_teacher: str | None = None
) -> pd.DataFrame:
    """One row per test: the five findings on accuracy and NLL (where logged). Findings 1 and
    3-5 use KD runs from `teacher`; finding 2 from `size_teacher` (a student-size study's
    teacher) where given, else `teacher`."""
    rows = []
    for metric in METRICS:
        if metric not in runs or runs[metric].isna().all():
            continue
        for finding in FINDINGS:
            source = size_teacher if finding.correlation and size_teacher else teacher
            pairs = paired_differences(runs, finding, metric, source)
            rows += _rows(finding, metric, pairs, source)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _number(value: float, digits: int, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return ""
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _shown(row: pd.Series) -> dict:
    """A table row as text: Δ ± CI half-width (rho with its bootstrap interval)."""
    digits = DIGITS.get(row["metric"], 3)
    if row["test"].startswith("Spearman"):
        estimate = _number(row["estimate"], 2, True)
        if estimate and not math.isnan(row["ci_low"]):
            estimate += f" [{row['ci_low']:+.2f}, {row['ci_high']:+.2f}]"
        statistic = f"ρ = {row['statistic']:+.2f}" if not math.isnan(row["statistic"]) else ""
        mde = _number(row["mde"], 2)
    else:
        half = (row["ci_high"] - row["ci_low"]) / 2
        estimate = format_ci(row["estimate"], half, digits, signed=True)
        statistic = f"t = {row['statistic']:.2f}" if not math.isnan(row["statistic"]) else ""
        mde = _number(row["mde"], digits)
    return {"finding": row["finding"], "comparison": row["comparison"],
            "metric": row["metric"], "test": row["test"], "n (pairs)": int(row["n"]),
            "mean Δ (95% CI)": estimate, "statistic": statistic,
            "p": "" if math.isnan(row["p"]) else f"{row['p']:.3g}", "MDE": mde,
            "verdict": row["verdict"]}  # fmt: skip


def findings_markdown(table: pd.DataFrame) -> str:
    """The table as markdown: mean Δ ± the half-width of its 95% t-interval (Spearman: rho
    with its bootstrap interval), the statistic (t or rho), raw p, MDE and verdict."""
    if table.empty:
        return "(no runs to test)"
    shown = pd.DataFrame([_shown(row) for _, row in table.iterrows()])
    return shown.to_markdown(index=False, disable_numparse=True)  # numbers as formatted
