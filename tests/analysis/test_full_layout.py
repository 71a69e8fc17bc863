"""The analysis on a results file of the study's own released layout: two domains, three
temperatures, task-aware and task-unaware teachers (not every method with both), rows of each
student's untrained base model, and the teacher's SFT rows."""

import hashlib
import itertools
import subprocess
import sys

import pandas as pd
import pytest

from analysis.ablations import accuracy_vs, teacher_kinds
from analysis.conventions import Conventions, observations
from analysis.loader import read_results_csv
from analysis.study_report import write_report

TASKS = {"math": ("gsm8k", "svamp"), "commonsense": ("piqa", "siqa")}
STUDENTS = ("S-0.5B", "S-1.5B", "S-3B")
COLUMNS = ["study", "teacher", "student", "method", "temperature", "noise_sigma",
           "teacher_kind", "domain", "task", "accuracy", "role"]  # fmt: skip


def accuracy(*parts) -> float:
    """A fixed, arbitrary accuracy in [20, 70) per setting (the same on every machine)."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()
    return 20 + int(digest, 16) % 1000 / 20


def full_layout(base: bool = True) -> list[list]:
    rows = []
    for domain, tasks in TASKS.items():
        for task in tasks:
            rows.append(["full", "", "T-7B", "sft", "", "", "", domain, task, 85.0, "teacher"])
            for student in STUDENTS:
                if base:
                    rows.append(["full", "", student, "base", "", "", "", domain, task, 2.0,
                                 "student"])  # fmt: skip
                sft = accuracy(student, task, "sft")
                rows.append(["full", "", student, "sft", "", "", "", domain, task, sft, "student"])
                for method, t, kind in itertools.product(
                    ("kd", "revkd"), (1, 2, 5), ("task-aware", "task-unaware")
                ):
                    if (domain, method, kind) == ("commonsense", "revkd", "task-unaware"):
                        continue  # not every method with both kinds in every domain
                    rows.append(["full", "T-7B", student, method, t, 0, kind, domain, task,
                                 accuracy(student, task, method, t, kind), "student"])  # fmt: skip
    return rows


@pytest.fixture
def full_csv(tmp_path):
    path = tmp_path / "full.csv"
    pd.DataFrame(full_layout(), columns=COLUMNS).to_csv(path, index=False)
    return path


def test_the_report_runs_on_the_full_layout(full_csv, tmp_path):
    frame = read_results_csv(full_csv)
    files = write_report(frame, tmp_path / "report", Conventions(), str(full_csv))
    assert (tmp_path / "report" / "report.md").is_file() and files.headline
    kinds = teacher_kinds(frame, Conventions())
    assert set(kinds["domain"]) == {"math", "commonsense"}  # one row per domain, not merged
    assert len(kinds) == 2 * 3 * 2  # domains x students x methods
    math_kd = kinds[(kinds["domain"] == "math") & (kinds["method"] == "kd")]
    assert math_kd["task-unaware"].notna().all()
    revkd = kinds[(kinds["domain"] == "commonsense") & (kinds["method"] == "revkd")]
    assert revkd["task-unaware"].isna().all()  # never run: missing, not someone else's value


def test_base_rows_are_a_reference_not_a_kd_method(full_csv, tmp_path):
    frame = read_results_csv(full_csv)
    assert set(observations(frame)["method"]) == {"kd", "revkd"}
    no_base = tmp_path / "no_base.csv"
    pd.DataFrame(full_layout(base=False), columns=COLUMNS).to_csv(no_base, index=False)
    with_base = write_report(frame, tmp_path / "a", Conventions(), "a")
    without = write_report(read_results_csv(no_base), tmp_path / "b", Conventions(), "b")
    assert with_base.headline == without.headline
    tests_a = pd.read_csv(tmp_path / "a" / "tests.csv")
    tests_b = pd.read_csv(tmp_path / "b" / "tests.csv")
    pd.testing.assert_frame_equal(tests_a, tests_b)  # the KD tests do not see base rows
    table = accuracy_vs(frame, "temperature", Conventions())
    assert (table["base"] == 2.0).all() and "base" not in set(table["method"])  # shown beside


def test_an_unknown_method_is_a_one_line_error_with_exit_2(tmp_path):
    rows = full_layout()
    rows[5][3] = "distill"
    bad = tmp_path / "bad.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(bad, index=False)
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--results", str(bad), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown method 'distill'" in lines[0] and "base" in lines[0]
    assert not out.exists()  # nothing half-written


def _with(row: int, column: str, value):
    def change(rows: list[list]) -> list[list]:
        rows[row][COLUMNS.index(column)] = value
        return rows

    return change


BAD_VALUES = [
    # (what to change, the message's key words); rows count as a spreadsheet does
    (_with(3, "accuracy", "high"), "row 5, column accuracy: 'high' is not a number"),
    (_with(4, "accuracy", 250), "row 6, column accuracy: 250 is outside 0-100"),
    (_with(4, "accuracy", -5), "row 6, column accuracy: -5 is outside 0-100"),
    (_with(5, "accuracy", ""), "row 7, column accuracy: is empty"),
    (_with(9, "temperature", "hot"), "row 11, column temperature: 'hot' is not a number"),
    (_with(9, "temperature", 0), "row 11, column temperature: 0 must be > 0"),
    (_with(9, "noise_sigma", -1), "row 11, column noise_sigma: -1 must be >= 0"),
    (_with(9, "teacher_kind", "clever"), "row 11, column teacher_kind: unknown kind 'clever'"),
    (_with(9, "method", "distill"), "unknown method 'distill'"),
]
BAD_FLAGS = [
    (["--baseline-method", "base"], "--baseline-method 'base' is not a method"),
    (["--main-teacher-kind", "clever"], "--main-teacher-kind 'clever' is unknown"),
    (["--max-noise-sigma", "-1"], "--max-noise-sigma must be a number >= 0"),
    (["--max-noise-sigma", "nan"], "--max-noise-sigma must be a number >= 0"),
]


@pytest.mark.parametrize(("change", "message"), BAD_VALUES)
def test_bad_values_are_named_by_row_and_column_and_nothing_is_written(
    change, message, tmp_path, capsys
):
    from analysis.__main__ import main

    bad = tmp_path / "bad.csv"
    pd.DataFrame(change(full_layout()), columns=COLUMNS).to_csv(bad, index=False)
    out = tmp_path / "out"
    assert main(["report", "--results", str(bad), "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and str(bad) in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize(("flags", "message"), BAD_FLAGS)
def test_bad_convention_flags_are_refused(flags, message, full_csv, tmp_path, capsys):
    from analysis.__main__ import main

    out = tmp_path / "out"
    assert main(["report", "--results", str(full_csv), "--out", str(out), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not out.exists()


def test_a_missing_flag_is_one_line(capsys):
    from analysis.__main__ import main

    with pytest.raises(SystemExit) as exit_:
        main(["report", "--results", "x.csv"])
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--out" in lines[0]


def seeded_layout(seeds=(0, 1, 2), study="full") -> pd.DataFrame:
    """The full layout run with each seed: a seed moves every student run by its own amount."""
    frames = []
    for seed in seeds:
        frame = pd.DataFrame(full_layout(), columns=COLUMNS).assign(seed=seed, study=study)
        student = frame["role"] == "student"
        shift = [accuracy(*row, seed) / 10 for row in frame[COLUMNS[1:9]].itertuples(index=False)]
        frame.loc[student, "accuracy"] += pd.Series(shift, index=frame.index)[student]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_paired_seeds_on_the_full_layout_are_per_domain(tmp_path):
    from analysis.replicates import paired_table, replicates_markdown

    path = tmp_path / "seeded.csv"
    seeded_layout().to_csv(path, index=False)
    frame = read_results_csv(path)  # no run_id column: runs told apart by their keys
    write_report(frame, tmp_path / "report", Conventions(), str(path))
    tests = pd.read_csv(tmp_path / "report" / "tests.csv")
    paired = tests[tests["test"] == "paired_t_vs_sft"]
    # Per domain: 3 students x (kd, revkd) x 3 T x task-aware, + task-unaware where it ran
    assert paired.groupby("domain").size().to_dict() == {"commonsense": 27, "math": 36}
    assert (paired["n"] == 3).all() and paired[["ci_low", "ci_high", "mde"]].notna().all().all()
    anova = tests[tests["test"] == "anova_method_seed"]
    assert len(anova) == 2 * 3 and anova["mde"].between(0, 1).all()  # domains x students
    table = paired_table(frame)
    assert set(table["method"]) == {"base", "sft", "kd", "revkd"} and (table["n"] == 3).all()
    markdown = replicates_markdown(frame)
    assert "| domain " in markdown and "Seeds per cell: 3 (" in markdown
    assert "One seed" not in (tmp_path / "report" / "report.md").read_text()


def test_a_seed_run_by_two_studies_is_one_replicate(tmp_path):
    from analysis.replicates import paired_table

    once = seeded_layout()
    twice = pd.concat([once, seeded_layout(study="again")], ignore_index=True)
    for name, frame in (("once", once), ("twice", twice)):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    tables = [paired_table(read_results_csv(tmp_path / f"{n}.csv")) for n in ("once", "twice")]
    assert (tables[1]["n"] == 3).all()  # seeds 0-2 in both studies: still 3 replicates
    pd.testing.assert_frame_equal(tables[0], tables[1])
