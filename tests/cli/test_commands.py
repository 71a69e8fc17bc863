"""The `kdray` console command (models, pairs): output, usage errors, and the installed entry;
bad input to every subcommand refused before anything runs."""

import re
import shutil
import socket
import subprocess
import sys

import pytest
from refusals import KDRAY, Case, assert_refused, case_env, case_ids, refuse_all

from kdray.cli.commands import main

ROW = re.compile(r"^\|\s*\d+\s*\|")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_pairs_lists_21_rows_and_a_summary(capsys):
    code, out, _ = run(capsys, "pairs")
    assert code == 0
    lines = out.splitlines()
    assert sum(bool(ROW.match(line)) for line in lines) == 21
    assert lines[-1] == "21 pairs (qwen 15, llama 6)"
    assert "compared over the tokenizer's 151,665 tokens" in out


def test_pairs_of_one_family(capsys):
    code, out, _ = run(capsys, "pairs", "--family", "llama")
    assert code == 0
    assert sum(bool(ROW.match(line)) for line in out.splitlines()) == 6
    assert out.splitlines()[-1] == "6 pairs (llama 6)"
    assert "qwen" not in out


def test_pairs_csv_keeps_stdout_a_plain_csv(capsys):
    code, out, err = run(capsys, "pairs", "--family", "qwen", "--csv")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("#,teacher,student") and len(lines) == 16
    assert err.strip() == "15 pairs (qwen 15)"


@pytest.mark.parametrize(
    "argv", [["pairs", "--family", "gpt"], ["models", "--family", "x"], ["bogus"], []]
)
def test_usage_error_is_one_stderr_line_and_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    out, err = capsys.readouterr()
    assert raised.value.code == 2
    assert out == "" and len(err.strip().splitlines()) == 1


def test_models_lists_the_ten_models(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0
    rows = [line for line in out.splitlines() if re.match(r"^\| (qwen|llama)", line)]
    assert len(rows) == 10
    assert "meta-llama/Llama-3.1-70B" in out and "152,064" in out
    assert out.splitlines()[-1] == "10 models"


def test_python_dash_m_kdray_runs():
    result = subprocess.run(
        [sys.executable, "-m", "kdray", "pairs"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "21 pairs (qwen 15, llama 6)"


def test_command_does_not_import_heavy_libraries():
    code = (
        "import sys, kdray.cli.commands; "
        "print(sorted({'torch', 'transformers', 'ray'} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.skipif(shutil.which("kdray") is None, reason="console script not installed")
def test_installed_console_script_runs():
    result = subprocess.run(["kdray", "models"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_tasks_lists_the_14_reasoning_tasks_and_5_instruction_sets(capsys):
    from kdray.cli.commands import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "19 evaluation tasks" in out and "| gsm8k" in out and "Math10K" in out
    assert main(["tasks", "--domain", "commonsense"]) == 0
    assert "8 evaluation tasks" in capsys.readouterr().out


def _file(name: str, content: str = "x"):
    return lambda tmp: (tmp / name).write_text(content)


def _folder(name: str):
    return lambda tmp: (tmp / name).mkdir()


LISTENING = []
"""Sockets held open while the cases run: ports in use."""


def _busy_port_case() -> Case:
    """mlflow-server on a port another socket listens on (its number known once bound)."""
    case = Case(KDRAY, ["mlflow-server", "--port", "PORT"], "is in use (a server already")

    def prepare(tmp) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        probe.listen()
        LISTENING.append(probe)
        case.argv[-1] = str(probe.getsockname()[1])

    case.prepare = prepare
    return case


PLAN = ["plan-memory", "--student", "qwen2.5-0.5b"]
SERVER = ["mlflow-server", "--store", "{tmp}"]
# Every subcommand, through the installed command's entry point, by issue 22's classes.
KDRAY_CASES = [
    # usage errors: one line, not argparse's usage block
    Case(KDRAY, [], "the following arguments are required: COMMAND"),
    Case(KDRAY, ["bogus"], "invalid choice: 'bogus'"),
    Case(KDRAY, ["models", "--family", "gpt"], "invalid choice: 'gpt'"),
    Case(KDRAY, ["pairs", "--family", "gpt"], "invalid choice: 'gpt'"),
    Case(KDRAY, ["tasks", "--domain", "poetry"], "invalid choice: 'poetry'"),
    Case(KDRAY, ["plan-memory"], "the following arguments are required: --student"),
    Case(KDRAY, ["check-data"], "the following arguments are required: data_dir"),
    # values no check looked at
    Case(KDRAY, [*PLAN, "--gpu-memory", "-1"], "argument --gpu-memory: must be a number > 0"),
    Case(KDRAY, [*PLAN, "--gpu-memory", "0"], "argument --gpu-memory: must be a number > 0"),
    Case(KDRAY, [*PLAN, "--gpu-memory", "nan"], "argument --gpu-memory: must be a number > 0"),
    Case(KDRAY, [*PLAN, "--micro-batch", "0"], "argument --micro-batch: must be >= 1, got 0"),
    Case(KDRAY, [*PLAN, "--seq-len", "-5"], "argument --seq-len: must be >= 1, got -5"),
    Case(KDRAY, ["plan-memory", "--student", "gpt-9"], "unknown hub model 'gpt-9'"),
    Case(KDRAY, [*PLAN, "--teacher", "llama-3.2-1b"], "do not share a tokenizer"),
    Case(KDRAY, [*SERVER, "--port", "99999"], "argument --port: a port is 1 to 65535"),
    Case(KDRAY, [*SERVER, "--port", "0"], "argument --port: a port is 1 to 65535, got 0"),
    Case(KDRAY, [*SERVER, "--port", "http"], "argument --port: expected a port number"),
    # what the server found only once started (a traceback, exit 0)
    Case(KDRAY, [*SERVER, "--host", "203.0.113.7"], "is not an address of this machine"),
    Case(KDRAY, [*SERVER, "--host", "no such host"], "--host 'no such host' is not an address"),
    _busy_port_case(),
    Case(KDRAY, ["mlflow-server", "--store", "{tmp}/none"], "none does not exist: pass --store"),
    Case(KDRAY, ["mlflow-server", "--store", "{tmp}/f"], "f is a file: pass --store", _file("f")),
    Case(KDRAY, SERVER, "mlflow.db is not a SQLite database", _file("mlflow.db")),
    Case(KDRAY, SERVER, "mlflow.db is a folder, not a SQLite file", _folder("mlflow.db")),
    # the wrong line, or exit 0
    Case(KDRAY, ["check-data", "{tmp}"], "holds no task's test file (such as AQuA/test.json)"),
    Case(KDRAY, ["check-data", "{tmp}/none"], "none does not exist"),
    Case(KDRAY, ["check-data", "{tmp}/f"], "is a file, not a folder", _file("f")),
]


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every case through `kdray`, each in a fresh folder (one interpreter)."""
    try:
        return refuse_all(KDRAY_CASES, tmp_path_factory.mktemp("refusals"))
    finally:
        for probe in LISTENING:
            probe.close()


@pytest.mark.parametrize("number", range(len(KDRAY_CASES)), ids=case_ids(KDRAY_CASES))
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(number, refusals):
    """Exit 2, one stderr line naming the problem, no traceback, nothing written (no store,
    no MLflow files in the folder or its HOME)."""
    assert_refused(refusals[number], KDRAY_CASES[number].message)


def test_plan_memory_plans_every_pair_the_study_runs(capsys):
    """Pairs whose lm_head widths differ are planned with a note, as the study runs them."""
    from kdray.hub.zoo import pairs

    for teacher, student in pairs(None):
        assert main(["plan-memory", "--teacher", teacher.name, "--student", student.name]) == 0
    out = capsys.readouterr().out
    assert "note: lm_head widths differ (152,064 vs 151,936)" in out


def test_kdray_refuses_as_a_process_of_its_own(tmp_path):
    """The same refusal with the interpreter started as a user starts it."""
    result = subprocess.run(
        [sys.executable, "-m", "kdray", "check-data", str(tmp_path)], capture_output=True,
        text=True, cwd=tmp_path, timeout=60, env=case_env(tmp_path, {}),
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "holds no task's test file" in result.stderr and not list(tmp_path.iterdir())
