"""Bad input to `python -m analysis` (report, summary, best), by the classes of issue 22: one
stderr line naming the problem, exit code 2, no traceback, nothing written (no report folder,
no store, no library cache in the folder or its HOME), each case in a fresh folder."""

import subprocess
import sys

import pytest
from refusals import (
    ANALYSIS,
    Case,
    assert_refused,
    case_env,
    case_ids,
    refuse_all,
    stored_study,
)

HEADER = "study,student,method,task,accuracy\n"


def _csv(body: str, name: str = "r.csv"):
    return lambda tmp: (tmp / name).write_text(HEADER + body)


def _file(name: str, content: str = "x"):
    return lambda tmp: (tmp / name).write_text(content)


def _folder(name: str):
    return lambda tmp: (tmp / name).mkdir()


def _and(*prepares):
    def prepare(tmp) -> None:
        for step in prepares:
            step(tmp)

    return prepare


GOOD = _csv("s,tiny-qwen2-s,kd,math,50\ns,tiny-qwen2-s,sft,math,40\n")
REPORT = ["report", "--results", "r.csv", "--out", "rep"]
FROM_STORE = ["report", "--experiment", "kdray-temperature", "--out", "rep"]
CASES = [
    # usage errors: one line, not argparse's usage block
    Case(ANALYSIS, [], "the following arguments are required: command"),
    Case(ANALYSIS, ["report", "--results", "r.csv"], "the following arguments are required: --out"),
    Case(ANALYSIS, [*REPORT, "--experiment", "e"], "not allowed with argument"),
    Case(ANALYSIS, ["summary"], "the following arguments are required: --parent-run"),
    # the report's inputs: results file, output folder, conventions
    Case(ANALYSIS, REPORT, "no results file r.csv"),
    Case(ANALYSIS, REPORT, "r.csv is a folder: pass --results FILE", _folder("r.csv")),
    Case(ANALYSIS, REPORT, "lacks required columns", _file("r.csv", "a,b\n1,2\n")),
    Case(ANALYSIS, REPORT, "r.csv has a header but no rows", _csv("")),
    Case(ANALYSIS, REPORT, "row 2, column accuracy", _csv("s,x,kd,math,high\n")),
    Case(ANALYSIS, REPORT, "unknown method 'distill'", _csv("s,x,distill,math,50\n")),
    Case(
        ANALYSIS,
        ["report", "--results", "r.csv", "--out", "f/rep"],
        "cannot be a folder",
        _and(GOOD, _file("f")),
    ),
    Case(ANALYSIS, [*REPORT, "--baseline-method", "base"], "--baseline-method 'base'", GOOD),
    Case(ANALYSIS, [*REPORT, "--main-teacher-kind", "wise"], "--main-teacher-kind 'wise'", GOOD),
    Case(ANALYSIS, [*REPORT, "--max-noise-sigma", "-1"], "--max-noise-sigma must be", GOOD),
    # the tracking store, and what the command reads from it
    Case(ANALYSIS, FROM_STORE, "no MLflow store at sqlite:///"),
    Case(ANALYSIS, [*FROM_STORE, "--tracking-uri", "store"], "invalid tracking URI 'store'"),
    Case(
        ANALYSIS,
        [*FROM_STORE, "--tracking-uri", "sqlite:///{tmp}/s"],
        "is a folder, not a SQLite file",
        _folder("s"),
    ),
    Case(ANALYSIS, FROM_STORE, "is not a SQLite database", _file("mlflow.db")),
    Case(
        ANALYSIS,
        ["report", "--experiment", "kdray-noise", "--out", "rep"],
        "no MLflow experiment 'kdray-noise'",
        stored_study,
    ),
    Case(
        ANALYSIS,
        [*FROM_STORE, "--study", "noise"],
        "holds no study run of study 'noise'",
        stored_study,
    ),  # fmt: skip
    Case(ANALYSIS, ["summary", "--parent-run", "abc"], "no MLflow store at sqlite:///"),
    Case(ANALYSIS, ["summary", "--parent-run", "abc"], "no run 'abc' at sqlite:///", stored_study),
    Case(
        ANALYSIS,
        ["summary", "--parent-run", "abc", "--out", "f/summary"],
        "cannot be a folder",
        _file("f"),
    ),
    Case(ANALYSIS, ["best", "--experiment", "kdray-optimal"], "no MLflow store at sqlite:///"),
    Case(
        ANALYSIS,
        ["best", "--experiment", "kdray-optimal"],
        "no MLflow experiment 'kdray-optimal'",
        stored_study,
    ),
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every case through `python -m analysis`, each in a fresh folder (one interpreter)."""
    return refuse_all(CASES, tmp_path_factory.mktemp("refusals"))


@pytest.mark.parametrize("number", range(len(CASES)), ids=case_ids(CASES))
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(number, refusals):
    assert_refused(refusals[number], CASES[number].message)


def test_analysis_refuses_as_a_process_of_its_own(tmp_path):
    """The same refusal with the interpreter started as a user starts it."""
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "summary", "--parent-run", "abc"], capture_output=True,
        text=True, cwd=tmp_path, timeout=60, env=case_env(tmp_path, {}),
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "no MLflow store at" in result.stderr and not list(tmp_path.iterdir())
