"""The findings table (analysis.findings) on hand-made runs in the tidy schema, against
numbers worked out by hand or by scipy directly."""

import math

import pandas as pd
import pytest
from scipy import stats

from analysis.findings import (
    TABLE_COLUMNS,
    duplicate_runs,
    findings_markdown,
    findings_table,
    runs_of,
)
from analysis.uncertainty import mde_spearman

SIZES_B = {"xs": 28_064e-9, "s": 92_992e-9, "m": 435_168e-9}


def _runs(student, method, accuracies, nlls, temperature=None, sigma=None, kind=None,
          teacher="T", tag=""):  # fmt: skip
    """Tidy rows of one cell over seeds 0.., two tasks per run whose mean is the accuracy."""
    rows = []
    for seed, (accuracy, nll) in enumerate(zip(accuracies, nlls, strict=True)):
        for offset, task in ((-1.0, "a"), (1.0, "b")):
            rows.append({
                "run_id": f"{tag}{student}-{method}-{temperature}-{sigma}-{kind}-{seed}",
                "study": "hand", "teacher": teacher,
                "student": student, "student_params_b": SIZES_B[student], "method": method,
                "temperature": temperature, "noise_sigma": sigma, "teacher_kind": kind,
                "domain": "math", "task": task, "accuracy": accuracy + offset, "nll": nll,
                "seed": str(seed), "role": "student",
            })  # fmt: skip
    return rows


def _study() -> pd.DataFrame:
    """Two students of teacher T over 3 seeds: SFT, KD at T 1, 2, 5, KD T=1 with noise 5 and
    KD T=1 from a task-unaware teacher."""
    rows = []
    for student, base in (("xs", 10.0), ("s", 30.0)):
        sft = [base, base + 10, base + 20]
        rows += _runs(student, "sft", sft, [0.5, 0.4, 0.3])
        gains = (4, 2, 6) if student == "xs" else (1, 0, -1)
        kd1 = [a + d for a, d in zip(sft, gains, strict=True)]
        rows += _runs(student, "kd", kd1, [0.45, 0.41, 0.2], 1.0, 0.0, "task-aware")
        rows += _runs(student, "kd", [a + 1 for a in kd1], [0.4, 0.4, 0.2], 2.0, 0.0,
                      "task-aware")  # fmt: skip
        rows += _runs(student, "kd", kd1, [0.5, 0.5, 0.3], 5.0, 0.0, "task-aware")
        rows += _runs(student, "kd", [a - 5 - i for i, a in enumerate(kd1)], [0.9, 0.9, 0.9],
                      1.0, 5.0, "task-aware")  # fmt: skip
        rows += _runs(student, "kd", [a + 8 + i for i, a in enumerate(kd1)], [0.3, 0.3, 0.1],
                      1.0, 0.0, "task-unaware")  # fmt: skip
    return pd.DataFrame(rows)


def _table(runs, **kwargs) -> pd.DataFrame:
    table = findings_table(runs, "T", **kwargs)
    return table.set_index(["metric", "finding", "comparison"])


def _row(table, metric, number, scope=""):
    rows = table.loc[metric]
    rows = rows[rows.index.get_level_values(0).str.startswith(f"{number}.")]
    return rows[rows.index.get_level_values(1).str.contains(scope, regex=False)].iloc[0]


def test_findings_by_hand():
    runs = runs_of(_study(), "hand")
    assert list(findings_table(runs, "T").columns) == TABLE_COLUMNS
    table = _table(runs)
    assert len(table) == 2 * 7  # per metric: 1 (xs, s, pooled), 2, 3, 4, 5

    xs = _row(table, "accuracy", 1, "; xs")  # deltas 4, 2, 6
    assert xs["n"] == 3 and xs["estimate"] == pytest.approx(4.0)
    assert xs["statistic"] == pytest.approx(4 / (2 / math.sqrt(3)))
    assert xs["p"] == pytest.approx(0.0742, abs=5e-4)
    assert xs["ci_high"] - xs["estimate"] == pytest.approx(4.302653 * 2 / math.sqrt(3), 1e-5)
    assert xs["verdict"] == f"null (not detected; MDE {xs['mde']:.1f})"
    pooled = _row(table, "accuracy", 1, "pooled over 2 students")
    assert pooled["n"] == 6 and pooled["estimate"] == pytest.approx(2.0)

    # finding 3: T=2 − T=5 is +1 on every pair: no spread, no test
    assert _row(table, "accuracy", 3)["verdict"] == "no test (n = 6)"
    noise = _row(table, "accuracy", 4)  # deltas −5, −6, −7 per student
    assert noise["estimate"] == pytest.approx(-6.0) and noise["verdict"] == "supported"
    unaware = _row(table, "accuracy", 5)  # +8, +9, +10: against the claim
    assert unaware["estimate"] == pytest.approx(9.0) and unaware["verdict"] == "contradicted"
    assert _row(table, "nll", 4)["verdict"] == "supported"  # NLL up: the claim on NLL
    assert _row(table, "nll", 5)["verdict"] == "contradicted"


def test_spearman_over_student_and_seed():
    table = _table(runs_of(_study(), "hand"))
    rho = _row(table, "accuracy", 2)
    sizes = [SIZES_B["xs"]] * 3 + [SIZES_B["s"]] * 3
    expected = stats.spearmanr(sizes, [4, 2, 6, 1, 0, -1])
    assert rho["n"] == 6 and rho["sizes"] == 2
    assert rho["statistic"] == pytest.approx(expected.statistic)
    assert rho["p"] == pytest.approx(expected.pvalue)
    assert rho["ci_low"] <= rho["statistic"] <= rho["ci_high"]
    assert "2 distinct sizes (xs, s), teacher T" in rho.name[1]
    assert rho["mde"] == pytest.approx(mde_spearman(6))


def test_size_study_teacher_and_shared_runs():
    """A student-size study of teacher L (students xs, s, m) feeds finding 2 only; its SFT
    runs duplicate the first study's and count once; a differing copy is reported."""
    size = []
    for student, gain, base in (("xs", 3.0, 10.0), ("s", 2.0, 30.0), ("m", 1.0, 50.0)):
        sft = [base, base + 10, base + 20]  # as the first study's, where it has the student
        size += _runs(student, "sft", sft, [0.5, 0.4, 0.3], tag="size-")
        kd = [a + gain + i / 10 for i, a in enumerate(sft)]
        size += _runs(student, "kd", kd, [0.4, 0.3, 0.2], 1.0, 0.0, "task-aware", teacher="L",
                      tag="size-")  # fmt: skip
    size = pd.DataFrame(size)
    size.loc[(size["student"] == "s") & (size["method"] == "sft") & (size["seed"] == "2"),
             "nll"] = 0.3 + 1e-6  # fmt: skip
    runs = pd.concat([runs_of(_study(), "first"), runs_of(size, "size")], ignore_index=True)

    table = _table(runs, size_teacher="L")
    rho = _row(table, "accuracy", 2)
    assert rho["sizes"] == 3 and rho["n"] == 9 and rho["statistic"] < -0.9
    assert _row(table, "accuracy", 1, "; xs")["estimate"] == pytest.approx(4.0)  # teacher T

    shared = duplicate_runs(runs)
    assert len(shared) == 6 and set(shared["method"]) == {"sft"}
    mismatch = shared[~shared["match"]]
    assert mismatch[["student", "seed"]].values.tolist() == [["s", "2"]]
    assert mismatch["max_diff_nll"].iloc[0] == pytest.approx(1e-6)


def test_missing_cells_and_markdown():
    frame = pd.DataFrame(_runs("xs", "sft", [10.0], [0.5]) + _runs("xs", "kd", [12.0], [0.4], 2.0,
                         0.0, "task-aware"))  # fmt: skip
    table = findings_table(runs_of(frame, "smoke"), "T")
    assert set(table["verdict"]) == {"no test (n = 0)"}
    text = findings_markdown(table)
    assert text.splitlines()[0].startswith("| finding ")
    assert len(text.splitlines()) == 2 + len(table)
