"""The `kdray` console command (models, pairs): output, usage errors, and the installed entry."""

import re
import shutil
import subprocess
import sys

import pytest

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
