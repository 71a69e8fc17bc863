"""Paired replicates: CIs and paired differences, against hand computations."""

import math

import pandas as pd
import pytest

from analysis.replicates import format_ci, mean_ci, paired_table


def _rows(method, temperature, accuracies, nlls, tasks=("a", "b")):
    rows = []
    for seed, (accuracy, nll) in enumerate(zip(accuracies, nlls, strict=True)):
        for offset, task in zip((-1.0, 1.0), tasks, strict=True):  # task mean = accuracy
            rows.append({
                "run_id": f"{method}{temperature}-{seed}", "student": "s", "method": method,
                "temperature": temperature, "noise_sigma": 0.0, "teacher_kind": None,
                "task": task, "accuracy": accuracy + offset, "nll": nll, "seed": str(seed),
                "role": "student",
            })  # fmt: skip
    return rows


def test_paired_differences_by_hand():
    frame = pd.DataFrame(
        _rows("sft", None, [10, 20, 30], [0.5, 0.4, 0.3])
        + _rows("kd", 1.0, [14, 22, 36], [0.45, 0.41, 0.2])
        + [
            {
                "run_id": "t",
                "student": "m",
                "method": "sft",
                "task": "a",
                "accuracy": 90.0,
                "role": "teacher",
                "teacher_kind": "",
                "seed": None,
            }
        ]  # fmt: skip
    )
    table = paired_table(frame)
    sft = table[table["method"] == "sft"].iloc[0]
    kd = table[table["method"] == "kd"].iloc[0]
    assert sft["n"] == 3 and sft["mean"] == pytest.approx(20.0)
    assert sft["ci"] == pytest.approx(4.302653 * 10 / math.sqrt(3), rel=1e-5)
    assert kd["delta"] == pytest.approx(4.0)  # deltas 4, 2, 6
    assert kd["delta_ci"] == pytest.approx(4.302653 * 2 / math.sqrt(3), rel=1e-5)
    assert kd["p"] == pytest.approx(0.0742, abs=5e-4)  # t = 3.464, 2 df
    assert kd["wins"] == 3 and kd["pairs"] == 3
    nll = paired_table(frame, "nll")
    kd_nll = nll[nll["method"] == "kd"].iloc[0]
    assert kd_nll["delta"] == pytest.approx((-0.05 + 0.01 - 0.1) / 3)
    assert kd_nll["wins"] == 2  # lower is better: seeds 0 and 2


def test_one_seed_has_no_interval():
    frame = pd.DataFrame(_rows("sft", None, [10], [0.5]) + _rows("kd", 1.0, [12], [0.4]))
    kd = paired_table(frame).set_index("method").loc["kd"]
    assert kd["delta"] == pytest.approx(2.0) and math.isnan(kd["delta_ci"])
    assert math.isnan(kd["p"])
    assert format_ci(2.0, math.nan, signed=True) == "+2.0"
    assert format_ci(12.345, 1.25) == "12.3 ± 1.2"
    assert mean_ci(pd.Series([], dtype=float))[0] != mean_ci(pd.Series([], dtype=float))[0]


def test_results_section_shows_intervals_and_the_paired_test():
    from analysis.replicates import replicates_markdown

    frame = pd.DataFrame(
        _rows("sft", None, [10, 20, 30], [0.5, 0.4, 0.3])
        + _rows("kd", 1.0, [14, 22, 36], [0.45, 0.41, 0.2])
    )
    text = replicates_markdown(frame)
    assert "20.0 ± 24.8" in text  # sft: 10, 20, 30
    assert "+4.0 ± 5.0" in text and "0.0742" in text and "| 3/3" in text
    assert "One seed" not in text
    assert "inconclusive: 3 seeds, CI ±5.0" in text  # +4.0 ± 5.0 includes 0
    assert (
        "Seeds per cell: 3 (2 cells). Inconclusive (95% CI of Δ wider than |Δ|): 1 of 1 cells "
        "compared with sft." in text
    )
    one = pd.DataFrame(_rows("sft", None, [10], [0.5]) + _rows("kd", 1.0, [12], [0.4]))
    assert "One seed per cell" in replicates_markdown(one)


def test_holm_wilcoxon_mde_and_the_method_seed_anova_by_hand():
    from scipy import stats

    from analysis.replicates import holm, method_seed_anova
    from analysis.uncertainty import mde_f_test, mde_t

    corrected = holm(pd.Series([0.01, math.nan, 0.04, 0.03]))
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04, then monotone: 0.03, 0.06, 0.06.
    assert corrected.tolist()[0] == pytest.approx(0.03) and math.isnan(corrected[1])
    assert corrected.tolist()[2:] == pytest.approx([0.06, 0.06])

    frame = pd.DataFrame(
        _rows("sft", None, [10, 20, 30], [0.5, 0.4, 0.3])
        + _rows("kd", 1.0, [14, 22, 36], [0.45, 0.41, 0.2])
    )
    kd = paired_table(frame).query("method == 'kd'").iloc[0]
    assert kd["p_wilcoxon"] == pytest.approx(0.25)  # 3 positive differences: 2 x 1/8
    assert kd["p_holm"] == pytest.approx(kd["p"])  # one test: nothing to correct

    # The MDE is the difference a paired t-test detects with power 0.8: check with the
    # noncentral t directly.
    mde = mde_t(2.0, 3)
    critical = stats.t.ppf(0.975, 2)
    noncentrality = mde / 2.0 * math.sqrt(3)
    power = stats.nct.sf(critical, 2, noncentrality) + stats.nct.cdf(-critical, 2, noncentrality)
    assert power == pytest.approx(0.8, abs=1e-4)
    assert math.isnan(mde_t(2.0, 1))

    # Two methods in 3 seeds: the additive ANOVA's F for method is the paired t squared.
    anova = method_seed_anova(frame).iloc[0]
    assert anova["F"] == pytest.approx(12.0) and anova["p"] == pytest.approx(0.0742, abs=5e-4)
    assert anova["n"] == 6 and anova["cells"] == 2 and anova["seeds"] == 3
    # ... and its MDE is the paired t's: Cohen's f^2 = d^2 / 2 for two cells (d = Δ / SD).
    d = mde_t(1.0, 3)
    assert anova["mde"] == pytest.approx(mde_f_test(1, 2, 6))
    assert anova["mde"] == pytest.approx((d * d / 2) / (1 + d * d / 2), rel=1e-6)


def test_the_report_says_when_the_tests_have_no_replicates(tmp_path):
    from analysis.study_report import write_report
    from analysis.uncertainty import mde_t

    one_seed = pd.DataFrame(_rows("sft", None, [10], [0.5]) + _rows("kd", 1.0, [14], [0.4]))
    context = dict(domain="math", study="x", student_params_b=0.1, agreement=None, fidelity=None)
    one_seed = one_seed.assign(teacher="t", teacher_kind="task-aware", **context)
    files = write_report(one_seed, tmp_path / "one")
    report = files.markdown.read_text()
    lines = [line for line in report.splitlines() if "no replicates" in line]
    assert lines == [
        "One seed per setting: the tests have no replicates (run the study with --seeds 0,1,2 "
        "for paired tests)."
    ]
    one_tests = pd.read_csv(files.tests)
    assert not one_tests["test"].str.contains("vs_sft|method_seed").any()  # no paired rows
    assert "KD improvement over SFT on Average: 1 observation(s)" in files.headline
    three = pd.DataFrame(
        _rows("sft", None, [10, 20, 30], [0.5, 0.4, 0.3])
        + _rows("kd", 1.0, [14, 22, 36], [0.45, 0.41, 0.2])
    ).assign(teacher="t", teacher_kind="task-aware", **context)
    three.loc[three["method"] == "sft", ["teacher", "teacher_kind"]] = ["", ""]
    write_report(three, tmp_path / "three")
    tests = pd.read_csv(tmp_path / "three" / "tests.csv")
    paired = tests[tests["test"] == "paired_t_vs_sft"].iloc[0]
    assert paired["n"] == 3 and paired["statistic"] == pytest.approx(4.0)
    half = 4.302653 * 2 / math.sqrt(3)  # deltas 4, 2, 6: sd 2
    assert (paired["ci_low"], paired["ci_high"]) == (
        pytest.approx(4 - half),
        pytest.approx(4 + half),
    )
    assert paired["mde"] == pytest.approx(mde_t(2.0, 3))
    assert set(tests["test"]) >= {"wilcoxon_vs_sft", "anova_method_seed"}
    assert tests.groupby("test").size()["paired_t_vs_sft"] == 1  # one row per test, with n
    assert tests["n"].notna().all()
