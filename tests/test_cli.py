"""Bad input to the study script: one line naming the problem, exit code 2, before any
trial runs or anything is written to MLflow."""

import subprocess
import sys
from pathlib import Path

import pytest

from kdray.cli import config_from_flags, study_main

SCRIPT = Path(__file__).resolve().parents[1] / "studies" / "temperature.py"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--methods", "kd,distill"], "unknown method 'distill'"),
        (["--temperatures", "1,0"], "temperature must be > 0"),
        (["--temperatures", "-2"], "temperature must be > 0"),
        (["--noise-sigmas", "-1"], "noise sigma must be >= 0"),
        (["--students", "gpt-9"], "unknown model 'gpt-9'"),
        (["--ce-weight", "1.5"], "ce_weight must be in [0, 1]"),
        (["--zero-stage", "4"], "zero_stage must be 0, 1, 2 or 3"),
        (["--temperatures", "one"], "expected comma-separated numbers"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--tracking-uri", "not a uri"], "invalid tracking URI"),
        (["--methods", "gkd", "--beta", "1.5"], "beta must be in [0, 1]"),
        (["--on-policy-fraction", "-0.1"], "on_policy_fraction must be in [0, 1]"),
        (["--skew-alpha", "2"], "skew_alpha must be in [0, 1]"),
        (["--grad-accum-steps", "0"], "grad_accum_steps must be >= 1"),
        (["--domain", "poetry"], "invalid choice: 'poetry'"),
        (["--family", "gpt"], "invalid choice: 'gpt'"),
        (["--family", "llama", "--teacher", "tiny-qwen2-m"], "tiny-qwen2-m is a qwen model"),
        (["--students", "tiny-llama-xs"], "tiny-llama-xs is a llama model"),
        (["--finetune", "adapter"], "invalid choice: 'adapter'"),
        (["--teacher-kind", "clever"], "invalid choice: 'clever'"),
        (["--preset", "paper", "--smoke"], "--smoke is for the tiny preset"),
        (["--preset", "paper", "--teacher", "qwen2.5-0.5b"], "no pair of the preset matches"),
        (["--preset", "paper", "--data-dir", "nowhere"], "data directory nowhere does not exist"),
        (["--data-dir", "."], "--data-dir is for the paper preset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *flags, "--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "cache").exists()


def test_flags_override_the_preset():
    config = config_from_flags(
        "temperature",
        ["--temperatures", "1,3", "--students", "tiny-qwen2-xs", "--steps", "7", "--seeds", "0,1"],
    )
    assert config.temperatures == (1.0, 3.0)
    assert config.students == ("tiny-qwen2-xs",)
    assert config.student_train.steps == 7
    assert config.seeds == (0, 1)


def test_smoke_keeps_the_path_and_shrinks_the_work():
    full = config_from_flags("temperature")
    smoke = config_from_flags("temperature", ["--smoke"])
    assert smoke.student_train.steps < full.student_train.steps
    assert smoke.eval.max_items < full.eval.max_items
    assert len(smoke.students) >= 2 and smoke.methods == full.methods


def test_study_main_reports_config_errors_without_running():
    calls = []
    code = study_main("temperature", ["--noise-sigmas", "-3"], run=calls.append)
    assert code == 2 and calls == []
