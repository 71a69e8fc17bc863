"""The analysis package's statistics, each checked against numbers worked out by hand, and
`python -m analysis report` on a hand-written CSV in the tidy schema (no MLflow, no Ray)."""

import math
import subprocess
import sys

import pandas as pd
import pytest

from analysis.conventions import Conventions, observations, student_size, with_average
from analysis.hypothesis_tests import (
    TEST_COLUMNS,
    eta_squared,
    method_rows,
    run_tests,
    spearman,
    ttest_improvement,
)
from analysis.loader import read_results_csv
from analysis.study_report import write_report

# Three students of one teacher; sft, kd and revkd at T = 1 and 2 on two tasks; plus ablation
# rows (noise sigma 2, a task-unaware teacher) with absurd accuracies that the main tests must
# leave out, and the teacher's own sft rows.
HAND_CSV = """\
study,teacher,student,method,temperature,noise_sigma,teacher_kind,domain,task,accuracy,agreement,fidelity
hand,,S-0.5B,sft,,,,math,t1,10,50,10
hand,,S-0.5B,sft,,,,math,t2,20,50,10
hand,T-7B,S-0.5B,kd,1,0,task-aware,math,t1,12,40,10
hand,T-7B,S-0.5B,kd,1,0,task-aware,math,t2,22,40,10
hand,T-7B,S-0.5B,kd,2,0,task-aware,math,t1,14,40,10
hand,T-7B,S-0.5B,kd,2,0,task-aware,math,t2,20,40,10
hand,T-7B,S-0.5B,revkd,1,0,task-aware,math,t1,11,30,10
hand,T-7B,S-0.5B,revkd,1,0,task-aware,math,t2,19,30,10
hand,T-7B,S-0.5B,revkd,2,0,task-aware,math,t1,9,30,10
hand,T-7B,S-0.5B,revkd,2,0,task-aware,math,t2,25,30,10
hand,T-7B,S-0.5B,kd,1,2,task-aware,math,t1,99,1,1
hand,T-7B,S-0.5B,kd,1,0,task-unaware,math,t1,98,1,1
hand,T-7B,S-0.5B,kd,1,2,task-aware,math,t2,99,1,1
hand,T-7B,S-0.5B,kd,1,0,task-unaware,math,t2,98,1,1
hand,,S-1.5B,sft,,,,math,t1,30,50,10
hand,,S-1.5B,sft,,,,math,t2,40,50,10
hand,T-7B,S-1.5B,kd,1,0,task-aware,math,t1,33,60,10
hand,T-7B,S-1.5B,kd,1,0,task-aware,math,t2,41,60,10
hand,T-7B,S-1.5B,kd,2,0,task-aware,math,t1,31,60,10
hand,T-7B,S-1.5B,kd,2,0,task-aware,math,t2,45,60,10
hand,T-7B,S-1.5B,revkd,1,0,task-aware,math,t1,30,20,10
hand,T-7B,S-1.5B,revkd,1,0,task-aware,math,t2,40,20,10
hand,T-7B,S-1.5B,revkd,2,0,task-aware,math,t1,32,20,10
hand,T-7B,S-1.5B,revkd,2,0,task-aware,math,t2,38,20,10
hand,T-7B,S-1.5B,kd,1,2,task-aware,math,t1,99,1,1
hand,T-7B,S-1.5B,kd,1,0,task-unaware,math,t1,98,1,1
hand,T-7B,S-1.5B,kd,1,2,task-aware,math,t2,99,1,1
hand,T-7B,S-1.5B,kd,1,0,task-unaware,math,t2,98,1,1
hand,,S-3B,sft,,,,math,t1,50,50,10
hand,,S-3B,sft,,,,math,t2,60,50,10
hand,T-7B,S-3B,kd,1,0,task-aware,math,t1,50,70,10
hand,T-7B,S-3B,kd,1,0,task-aware,math,t2,66,70,10
hand,T-7B,S-3B,kd,2,0,task-aware,math,t1,54,70,10
hand,T-7B,S-3B,kd,2,0,task-aware,math,t2,60,70,10
hand,T-7B,S-3B,revkd,1,0,task-aware,math,t1,49,10,10
hand,T-7B,S-3B,revkd,1,0,task-aware,math,t2,61,10,10
hand,T-7B,S-3B,revkd,2,0,task-aware,math,t1,48,10,10
hand,T-7B,S-3B,revkd,2,0,task-aware,math,t2,59,10,10
hand,T-7B,S-3B,kd,1,2,task-aware,math,t1,99,1,1
hand,T-7B,S-3B,kd,1,0,task-unaware,math,t1,98,1,1
hand,T-7B,S-3B,kd,1,2,task-aware,math,t2,99,1,1
hand,T-7B,S-3B,kd,1,0,task-unaware,math,t2,98,1,1
hand,,T-7B,sft,,,,math,t1,70,,
hand,,T-7B,sft,,,,math,t2,80,,
"""

# Improvement = best over T, task by task, minus the same student's sft (worked by hand):
#   t1: kd 14-10=4, 33-30=3, 54-50=4;  revkd 11-10=1, 32-30=2, 49-50=-1
#   t2: kd 22-20=2, 45-40=5, 66-60=6;  revkd 25-20=5, 40-40=0, 61-60=1
#   Average (per run first, then best over T): kd 17-15=2, 38-35=3, 58-55=3; revkd 2, 0, 0
HAND_IMPROVEMENTS = {
    "t1": {"kd": [4, 3, 4], "revkd": [1, 2, -1]},
    "t2": {"kd": [2, 5, 6], "revkd": [5, 0, 1]},
    "Average": {"kd": [2, 3, 3], "revkd": [2, 0, 0]},
}


@pytest.fixture
def hand_csv(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text(HAND_CSV)
    return path


def test_one_sided_t_test_by_hand():
    # [1, 2, 3]: mean 2, sd 1, se 1/sqrt(3), t = 2 sqrt(3); with 2 degrees of freedom the
    # t distribution's tail is 1/2 - t / (2 sqrt(t^2 + 2)).
    t, p, n = ttest_improvement(pd.Series([1.0, 2.0, 3.0, None]))
    assert n == 3 and t == pytest.approx(2 * math.sqrt(3))
    assert p == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)))
    assert math.isnan(ttest_improvement(pd.Series([5.0]))[0])  # too few values: NaN, n kept


def test_anova_kruskal_eta_and_tukey_by_hand():
    # Groups [1,2,3] and [4,5,6]: SS between 13.5, within 4, F = 13.5 / (4 / 4) = 13.5;
    # eta^2 = 13.5 / 17.5; Kruskal-Wallis H = 12/(6*7) * (6^2/3 + 15^2/3) - 3*7 = 27/7.
    frame = pd.DataFrame({"method": ["kd"] * 3 + ["revkd"] * 3,
                          "improvement": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})  # fmt: skip
    rows = {r["test"]: r for r in method_rows(frame, ("math", "t1"))}
    assert rows["anova_methods"]["statistic"] == pytest.approx(13.5)
    assert rows["eta_squared_methods"]["statistic"] == pytest.approx(13.5 / 17.5)
    assert math.isnan(rows["eta_squared_methods"]["p_value"])
    assert rows["kruskal_methods"]["statistic"] == pytest.approx(27 / 7)
    assert rows["tukey_hsd"]["group"] == "kd vs revkd"
    assert rows["tukey_hsd"]["statistic"] == pytest.approx(2.0 - 5.0)  # first minus second
    assert rows["anova_methods"]["n"] == 6
    assert math.isnan(eta_squared([pd.Series([1.0, 1.0]).to_numpy()] * 2))  # no spread at all
    one = method_rows(frame[frame["method"] == "kd"], ("math", "t1"))  # one method: no test
    assert all(math.isnan(r["statistic"]) for r in one)


def test_spearman_by_hand():
    # y ranks [1,3,2,4] against x [1,2,3,4]: sum d^2 = 2, rho = 1 - 6*2 / (4*15) = 0.8
    rho, p, n = spearman(pd.Series([1, 2, 3, 4]), pd.Series([1, 3, 2, 4]))
    assert (rho, n) == (pytest.approx(0.8), 4) and 0 < p < 1
    assert math.isnan(spearman(pd.Series([1, 1, 1]), pd.Series([1, 2, 3]))[0])  # constant
    assert spearman(pd.Series([1, 2, None, 4]), pd.Series([1, 2, 3, 4]))[2] == 3  # pairs only


def test_student_size_from_params_or_name():
    assert student_size("Qwen2.5-1.5B-Instruct", None) == 1.5
    assert student_size("Meta-Llama-3.2-1B", float("nan")) == 1.0
    assert student_size("Qwen2.5-7B", 7.62) == 7.62  # the logged count wins
    assert math.isnan(student_size("tiny-qwen2-s", None))


def test_conventions_turn_runs_into_observations(hand_csv):
    frame = read_results_csv(hand_csv)
    averaged = with_average(frame)
    average = averaged[averaged["task"] == "Average"]
    assert len(average) == len(frame) // 2  # one per run (every run has both tasks)
    obs = observations(frame)
    assert len(obs) == 3 * 2 * 3  # students x methods x (t1, t2, Average): ablations left out
    for task, methods in HAND_IMPROVEMENTS.items():
        for method, expected in methods.items():
            rows = obs[(obs["task"] == task) & (obs["method"] == method)]
            got = rows.sort_values("student_size")["improvement"].tolist()
            assert got == pytest.approx(expected), (task, method)
    t1 = obs[(obs["task"] == "t1") & (obs["student"] == "S-0.5B") & (obs["method"] == "kd")]
    assert t1["temperature"].item() == 2.0  # the best T, task by task
    assert set(obs["teacher_accuracy"]) == {70.0, 80.0, 75.0}  # the teacher's own sft rows
    assert sorted(obs["student_size"].unique()) == [0.5, 1.5, 3.0]  # from the names

    every_t = observations(frame, Conventions(best_over_temperatures=False))
    assert len(every_t) == 2 * len(obs)
    with_noise = observations(frame, Conventions(max_noise_sigma=2.0))
    assert with_noise["accuracy"].max() == 99.0  # the noise ablation now counts
    no_average = observations(frame, Conventions(average_task=None))
    assert "Average" not in set(no_average["task"])


def test_hand_written_csv_gives_the_expected_tests_csv(hand_csv, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--results", str(hand_csv), "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "t = 2.99, p = 0.0153, n = 6" in result.stdout  # the headline: Average, all methods

    tests = pd.read_csv(out / "tests.csv")
    assert list(tests.columns) == TEST_COLUMNS
    assert set(tests["task"]) == {"t1", "t2", "Average"} and set(tests["domain"]) == {"math"}

    def value(test, task, group="all"):
        row = tests[(tests["test"] == test) & (tests["task"] == task) & (tests["group"] == group)]
        assert len(row) == 1, (test, task, group)
        return row.iloc[0]

    # Average, all methods: [2,3,3,2,0,0], mean 5/3, sd sqrt(84/45): t = (5/3) / (sd / sqrt 6)
    all_average = value("ttest_improvement", "Average")
    assert all_average["statistic"] == pytest.approx((5 / 3) / (math.sqrt(84 / 45) / math.sqrt(6)))
    assert all_average["n"] == 6
    assert value("ttest_improvement", "Average", "kd")["statistic"] == pytest.approx(8.0)
    assert value("ttest_improvement", "t1", "kd")["statistic"] == pytest.approx(11.0)
    # ANOVA on Average: SS between 6, within 10/3 over 4 df: F = 6 / (10/12) = 7.2
    assert value("anova_methods", "Average")["statistic"] == pytest.approx(7.2)
    assert value("eta_squared_methods", "Average")["statistic"] == pytest.approx(6 / (6 + 10 / 3))
    assert value("tukey_hsd", "Average", "kd vs revkd")["statistic"] == pytest.approx(2.0)
    # Spearman: sizes [0.5, 1.5, 3] vs kd's t2 improvements [2, 5, 6]: rho 1
    assert value("spearman_student_size", "t2", "kd")["statistic"] == pytest.approx(1.0)
    # agreement ranks [4,5,6,3,2,1] vs improvement ranks [3.5,5.5,5.5,3.5,1.5,1.5]:
    # rho = 16 / sqrt(17.5 * 16)
    agreement = value("spearman_agreement", "Average")
    assert agreement["statistic"] == pytest.approx(16 / math.sqrt(17.5 * 16))
    # The teacher's accuracy and fidelity do not vary here: rho undefined, n kept
    assert math.isnan(value("spearman_teacher_accuracy", "Average")["statistic"])
    assert value("spearman_fidelity", "Average")["n"] == 6
    assert {"spearman_student_sft", "kruskal_methods"} <= set(tests["test"])

    # Full precision in tests.csv, rounded in the report
    markdown = (out / "report.md").read_text()
    assert (
        f"{all_average['statistic']:.3g}" in markdown
        and repr(all_average["statistic"])[:10] not in markdown
    )
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 5 and "<table" in html
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"improvement_by_method.png", "improvement_vs_student_size.png",
            "accuracy_vs_temperature.png", "accuracy_vs_noise_sigma.png",
            "agreement_fidelity.png"} <= figures  # fmt: skip
    tables = {p.name for p in (out / "tables").glob("*.tex")}
    assert {"ttest_improvement.tex", "anova_methods.tex", "spearman.tex",
            "teacher_kinds.tex", "best_settings.tex"} <= tables  # fmt: skip
    assert "\\begin{tabular}" in (out / "tables" / "anova_methods.tex").read_text()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("study,student,method,task\nx,s,sft,t\n", "lacks required columns accuracy"),
        ("study,student,method,task,accuracy\n", "has a header but no rows"),
        ("", "is not a readable CSV"),
    ],
)
def test_bad_results_files_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "results.csv"
    path.write_text(content)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--results", str(path), "--out", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing half-written


def test_unknown_store_or_experiment_is_a_one_line_error(tmp_path):
    from mlflow.tracking import MlflowClient

    def report(uri):
        return subprocess.run(
            [sys.executable, "-m", "analysis", "report", "--experiment", "nope",
             "--tracking-uri", uri, "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    missing = tmp_path / "missing.db"
    result = report(f"sqlite:///{missing}")
    assert result.returncode == 2 and "no MLflow store at" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not missing.exists()
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").create_experiment("kdray-temperature")
    result = report(f"sqlite:///{tmp_path}/mlflow.db")
    assert result.returncode == 2 and "no MLflow experiment 'nope'" in result.stderr
    assert "kdray-temperature" in result.stderr  # the experiments that exist are named
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_report_from_a_frame_without_kd_runs(hand_csv, tmp_path):
    frame = read_results_csv(hand_csv)
    files = write_report(frame[frame["method"] == "sft"], tmp_path / "r")
    assert "no KD runs" in files.headline
    assert pd.read_csv(files.tests).empty


def test_run_tests_groups(hand_csv):
    tests = run_tests(observations(read_results_csv(hand_csv)))
    groups = set(tests[tests["test"] == "ttest_improvement"]["group"])
    assert groups == {"all", "kd", "revkd"}


def test_every_test_has_its_interval_and_minimal_detectable_effect(hand_csv):
    from analysis.study_report import headline
    from analysis.uncertainty import mde_f_test, mde_spearman, mde_t, spearman_ci

    obs = observations(read_results_csv(hand_csv))
    tests = run_tests(obs)

    def value(test, group="all"):
        row = tests[
            (tests["test"] == test) & (tests["task"] == "Average") & (tests["group"] == group)
        ]
        return row.iloc[0]

    # Average, all methods: [2,3,3,2,0,0], mean 5/3, sd sqrt(84/45); t(0.975, 5) = 2.570582
    t_test = value("ttest_improvement")
    half = 2.570582 * math.sqrt(84 / 45) / math.sqrt(6)
    assert t_test["ci_low"] == pytest.approx(5 / 3 - half, rel=1e-6)
    assert t_test["ci_high"] == pytest.approx(5 / 3 + half, rel=1e-6)
    assert t_test["mde"] == pytest.approx(mde_t(math.sqrt(84 / 45), 6, "larger"))
    assert "mean +1.7 points, 95% CI 0.2 to 3.1, MDE" in headline(tests, "Average")
    # ANOVA of 2 methods x 3 pairs: its MDE as eta squared (1 and 4 degrees of freedom)
    assert value("anova_methods")["mde"] == pytest.approx(mde_f_test(1, 4, 6))
    # Tukey of two groups is the t-test: MSE 5/6, half-width t(0.975, 4) sqrt(MSE * 2/3)
    tukey = value("tukey_hsd", "kd vs revkd")
    tukey_half = 2.776445 * math.sqrt(5 / 6 * 2 / 3)
    assert tukey["ci_low"] == pytest.approx(2.0 - tukey_half, rel=1e-5)
    assert tukey["ci_high"] == pytest.approx(2.0 + tukey_half, rel=1e-5)
    # Spearman: the bootstrap interval of its own pairs, and the MDE at n = 6
    agreement = value("spearman_agreement")
    average = obs[obs["task"] == "Average"]
    assert (agreement["ci_low"], agreement["ci_high"]) == spearman_ci(
        average["agreement"], average["improvement"]
    )
    assert agreement["ci_low"] <= agreement["statistic"] <= agreement["ci_high"]
    assert agreement["mde"] == pytest.approx(mde_spearman(6))
    # A test that could not run has no interval and no MDE, and keeps its n
    undefined = value("spearman_teacher_accuracy")
    assert undefined[["statistic", "ci_low", "ci_high", "mde"]].isna().all()
    assert undefined["n"] == 6
    # Every t-test, ANOVA and Spearman row that ran has an MDE, but Spearman's of 3 pairs
    # (one per student for one method): its Fisher z needs n >= 4.
    ran = tests[tests["statistic"].notna()]
    families = ran["test"].str.match(r"ttest_|anova_|spearman_")
    few = ran["test"].str.startswith("spearman_") & (ran["n"] < 4)
    assert ran.loc[families & ~few, "mde"].notna().all() and ran.loc[few, "mde"].isna().all()
    assert few.any() and (families & ~few).sum() >= 10
