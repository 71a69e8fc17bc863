"""Bad input to the study scripts, by the classes of issue 22 (checks that used to wait for
first use, flags no check looked at, one line but the wrong one): one line naming the problem,
exit code 2, no traceback, nothing run or written (tests/refusals.py runs every case through
its script in a fresh folder that is also its HOME)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from refusals import Case, assert_refused, case_env, case_ids, refuse_all, stored_study

from kdray.cli.args import config_from_flags
from kdray.cli.main import study_main

SCRIPT = Path(__file__).resolve().parents[2] / "studies" / "temperature.py"


def _llm_adapters_math(root: Path, train_items: int = 600) -> None:
    """A valid LLM-Adapters math folder (each task's test.json and math_10k.json)."""
    from kdray.hub.tasks import tasks_for_domain

    def record(question, answer):
        return {"instruction": question, "input": "", "output": f"... {answer}", "answer": answer}

    for spec in tasks_for_domain("math"):
        gold = "B" if spec.answer_kind == "letter" else "7.0"
        path = root / spec.folder / "test.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([record(f"{spec.name} {i}?", gold) for i in range(3)]))
    train = [record(f"train {i}?", str(i)) for i in range(train_items)]
    (root / "math_10k.json").write_text(json.dumps(train))


def _data_with(content: str | None):
    """A math data folder whose AQuA test file holds `content` (None: no such file)."""

    def prepare(tmp: Path) -> None:
        _llm_adapters_math(tmp / "data")
        target = tmp / "data" / "AQuA" / "test.json"
        if content is None:
            target.unlink()
        else:
            target.write_text(content)

    return prepare


def _file(name: str, content: str):
    def prepare(tmp: Path) -> None:
        (tmp / name).write_text(content)

    return prepare


PAPER_DATA = ["--preset", "paper", "--family", "qwen", "--data-dir", "{tmp}/data"]
CONFIG = ["--config", "{tmp}/c.yaml"]
BAD_INPUT = [
    # (flags, the message's key words, prepare(tmp) or None); {tmp} is the test's folder
    (["--methods", "kd,distill"], "unknown method 'distill'", None),
    (["--temperatures", "1,0"], "temperature must be > 0", None),
    (["--temperatures", "-2"], "temperature must be > 0", None),
    (["--noise-sigmas", "-1"], "noise sigma must be >= 0", None),
    (["--students", "gpt-9"], "unknown model 'gpt-9'", None),
    (["--ce-weight", "1.5"], "ce_weight must be in [0, 1]", None),
    (["--zero-stage", "4"], "zero_stage must be 0, 1, 2 or 3", None),
    (["--temperatures", "one"], "expected comma-separated numbers", None),
    (["--preset", "huge"], "invalid choice: 'huge'", None),
    (["--tracking-uri", "not a uri"], "invalid tracking URI", None),
    (["--methods", "gkd", "--beta", "1.5"], "beta must be in [0, 1]", None),
    (["--on-policy-fraction", "-0.1"], "on_policy_fraction must be in [0, 1]", None),
    (["--skew-alpha", "2"], "skew_alpha must be in [0, 1]", None),
    (["--methods", "skew_rkl", "--skew-alpha", "1"], "skew_alpha = 1 makes skew_rkl zero", None),
    (["--grad-accum-steps", "0"], "grad_accum_steps must be >= 1", None),
    (["--train-examples", "0"], "train_examples must be >= 1", None),
    (["--learning-rate", "0"], "learning rate must be > 0", None),
    (["--pretrain-steps", "0"], "pretraining needs >= 1 step", None),
    (["--pretrain-steps", "10", "--no-pretrain"], "--pretrain-steps sets how long", None),
    (["--train-examples", "20000"], "more than the world's 16000 training items", None),
    (["--domain", "poetry"], "invalid choice: 'poetry'", None),
    (["--family", "gpt"], "invalid choice: 'gpt'", None),
    (["--family", "llama", "--teacher", "tiny-qwen2-m"], "tiny-qwen2-m is a qwen model", None),
    (["--students", "tiny-llama-xs"], "tiny-llama-xs is a llama model", None),
    (["--finetune", "adapter"], "invalid choice: 'adapter'", None),
    (["--teacher-kind", "clever"], "invalid choice: 'clever'", None),
    (["--preset", "paper", "--smoke"], "--smoke is for the tiny preset", None),
    (["--preset", "paper", "--teacher", "qwen2.5-0.5b"], "no pair of the preset matches", None),
    (["--preset", "paper", "--data-dir", "nowhere"], "data directory nowhere does not exist", None),
    (["--data-dir", "."], "--data-dir is for the paper preset", None),
    (["--placement-strategy", "scatter"], "placement_strategy must be PACK or SPREAD", None),
    (["--num-samples", "0"], "--num-samples must be >= 1", None),
    (["--tracking-wait", "-5"], "--tracking-wait must be >= 0 seconds", None),
    # Folders that cannot be written
    (["--cache-dir", "{tmp}/afile/cache"], "is a file): pass --cache-dir", _file("afile", "")),
    (["--results-dir", "{tmp}/afile/r"], "is a file): pass --results-dir", _file("afile", "")),
    (
        ["--tracking-uri", "sqlite:///{tmp}/afile/mlflow.db"],
        "pass --tracking-uri",
        _file("afile", ""),
    ),  # fmt: skip
    (["--resume"], "no unfinished run of study 'temperature'", None),
    # The tracking store, checked before anything opens it
    (
        ["--tracking-uri", "sqlite:///{tmp}/notes.txt"],
        "is not a SQLite database",
        _file("notes.txt", "hello"),
    ),  # fmt: skip
    (["--tracking-uri", "sqlite:///{tmp}"], "is a folder, not a SQLite file", None),
    (["--tracking-uri", "sqlite:///"], "names no file (an in-memory store", None),
    (["--tracking-uri", "ftp://host/store"], "unsupported scheme 'ftp'", None),
    (
        ["--tracking-uri", "sqlite:///{tmp}/" + "a" * 300 + "/mlflow.db"],
        "File name too long",
        None,
    ),  # fmt: skip
    (["--cache-dir", "{tmp}/" + "a" * 300], "File name too long", None),
    # Flags with values that cannot be right
    (["--max-concurrent", "0"], "--max-concurrent must be >= 1", None),
    (["--max-concurrent", "-2"], "--max-concurrent must be >= 1", None),
    (["--experiment", ""], "--experiment is empty", None),
    (["--temperatures", "1,2,1"], "--temperatures lists 1 more than once", None),
    (["--seeds", "0,1,0"], "--seeds lists 0 more than once", None),
    (["--methods", "kd,revkd,kd"], "--methods lists kd more than once", None),
    (["--seeds", "4294967296"], "seed 4294967296 is out of range", None),
    (["--system-metrics-seconds", "-1"], "--system-metrics-seconds must be >= 0", None),
    # Config files
    (
        ["--config", "{tmp}/c.yaml"],
        "unknown key 'temperaturez'",
        _file("c.yaml", "temperaturez: 1"),
    ),
    (
        ["--config", "{tmp}/c.yaml"],
        "steps must be an integer, got 1.5",
        _file("c.yaml", "steps: 1.5"),
    ),
    (CONFIG, "smoke must be true or false", _file("c.yaml", "smoke: 3")),
    (CONFIG, "must be a mapping", _file("c.yaml", "[1, 2]")),
    (CONFIG, "is not readable YAML", _file("c.yaml", "a: [")),
    (["--config", "{tmp}/none.yaml"], "does not exist", None),
    # Dataset files (the paper preset's real data folder)
    (PAPER_DATA, "has no test.json for AQuA", _data_with(None)),
    (PAPER_DATA, "AQuA/test.json: not valid JSON", _data_with("")),
    (PAPER_DATA, "AQuA/test.json: not valid JSON (Expecting property name", _data_with("[{")),
    (PAPER_DATA, "holds a JSON object, not a list", _data_with('{"a": 1}')),
    (PAPER_DATA, "record 0 has no 'instruction'", _data_with('[{"question": "x"}]')),
    (
        PAPER_DATA,
        "gold answer 'seven' is not one of A/B/C/D/E",
        _data_with(
            json.dumps([{"instruction": "q", "input": "", "output": "o", "answer": "seven"}] * 3)
        ),
    ),  # fmt: skip
]


def _hf_cache(*hub_ids: str):
    """Models in the case's Hugging Face cache, as far as HF_HUB_OFFLINE looks (config.json)."""

    def prepare(tmp: Path) -> None:
        for hub_id in hub_ids:
            model = tmp / ".cache" / "huggingface" / "hub" / f"models--{hub_id.replace('/', '--')}"
            (model / "refs").mkdir(parents=True)
            (model / "refs" / "main").write_text("0" * 40)
            (model / "snapshots" / ("0" * 40)).mkdir(parents=True)
            (model / "snapshots" / ("0" * 40) / "config.json").write_text("{}")

    return prepare


def _stored_study(*flags: str):
    """An interrupted temperature study in the case's ./mlflow.db, run with FLAGS."""
    return lambda tmp: stored_study(tmp, *flags)


PAPER_PAIR = ["--preset", "paper", "--family", "qwen", "--teacher", "qwen2.5-1.5b",
              "--students", "qwen2.5-0.5b"]  # fmt: skip
OFFLINE = {"HF_HUB_OFFLINE": "1"}
HUB_DOWN = "Hugging Face hub (http://127.0.0.1:9) does not answer"
# The classes of issue 22, each refused before anything runs.
CHECKED_LATE = [  # checks that ran only when first needed, after minutes of work
    Case(
        "temperature",
        ["--methods", "gkd", "--on-policy-fraction", "0.5", "--teacher-signal", "cache"],
        "teacher_signal=cache is not possible here",
    ),
    Case(
        "temperature",
        ["--preset", "paper"],
        "does not fit on 8 x 80 GiB GPUs with teacher placement",
    ),
    Case("temperature", PAPER_PAIR, HUB_DOWN),
    Case("paper", [], HUB_DOWN),
    Case("temperature", PAPER_PAIR, "HF_HUB_OFFLINE is set and Qwen/Qwen2.5-1.5B", env=OFFLINE),
    Case("temperature", ["--use-gpu"], "trains on GPUs (1 per trial) and would start a Ray"),
    Case(
        "temperature",
        PAPER_PAIR,
        "trains on GPUs (1 per trial)",
        _hf_cache("Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-0.5B"),
        env=OFFLINE,
    ),
    Case("optimal", ["--skew-alpha", "1", "--dry-run"], "skew_alpha = 1 makes skew_fkl zero"),
    Case("optimal", ["--smoke", "--skew-alpha", "1"], "skew_alpha = 1 makes skew_fkl zero"),
    Case(
        "temperature",
        ["--resume", "--temperatures", "1,2", "--seeds", "0"],
        "ran another grid (seeds (0, 1, 2) then, (0,) now; temperatures (1.0, 2.0, 5.0) then",
        _stored_study(),
    ),
    Case(
        "temperature",
        ["--resume", "--train-runs", "run"],
        "train_runs packed then, run now",
        _stored_study(),
    ),
]
UNCHECKED = [  # flags that had no check at all
    Case("temperature", ["--cache-dir", ""], "--cache-dir is empty"),
    Case("temperature", ["--results-dir", ""], "--results-dir is empty"),
    Case("temperature", ["--tracking-uri", ""], "--tracking-uri is empty"),
    Case("temperature", ["--preset", "paper", "--data-dir", ""], "--data-dir is empty"),
    Case("optimal", ["--search-seeds", "0"], "argument --search-seeds: must be >= 1"),
    Case("optimal", ["--confirm-seeds", "-1"], "argument --confirm-seeds: must be >= 1"),
    Case("optimal", ["--seeds", "0,1"], "--seeds: the search samples T"),
    Case("optimal", ["--temperatures", "1,2"], "--temperatures: the search samples T"),
]
WRONG_LINE = [  # one line, but it named another problem
    Case(
        "student_size",
        ["--teacher", "tiny-qwen2-xs"],
        "no model of the qwen family is smaller than the teacher tiny-qwen2-xs",
    ),
    Case(
        "temperature",
        ["--preset", "paper", "--data-dir", "{tmp}/afile"],
        "is a file, not a folder",
        _file("afile", ""),
    ),
]
EVERY_SCRIPT = [  # every study script takes the same checks
    Case(script, ["--temperatures", "0"], "temperature must be > 0")
    for script in ("noise", "methods", "student_size", "teacher_domain")
]
CASES = [Case("temperature", *case) for case in BAD_INPUT]
CASES += CHECKED_LATE + UNCHECKED + WRONG_LINE + EVERY_SCRIPT


@pytest.fixture(scope="module")
def refusals(tmp_path_factory):
    """Every case through its study script, each in a fresh folder (one interpreter)."""
    return refuse_all(CASES, tmp_path_factory.mktemp("refusals"))


@pytest.mark.parametrize("number", range(len(CASES)), ids=case_ids(CASES))
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(number, refusals):
    """Exit 2, one stderr line naming the problem, no traceback, nothing written: no store,
    cache, results, lock file or library cache, in the folder or its HOME."""
    assert_refused(refusals[number], CASES[number].message)


def test_the_study_script_refuses_as_a_process_of_its_own(tmp_path):
    """The same refusal with the interpreter started as a user starts it."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--methods", "kd,distill"], capture_output=True,
        text=True, cwd=tmp_path, timeout=120, env=case_env(tmp_path, {}),
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "unknown method 'distill'" in result.stderr and not list(tmp_path.iterdir())


def test_the_bad_input_table_is_large():
    assert len(BAD_INPUT) >= 25


def test_flags_override_the_preset():
    config = config_from_flags(
        "temperature",
        ["--temperatures", "1,3", "--students", "tiny-qwen2-xs", "--steps", "7", "--seeds", "0,1",
         "--train-examples", "500", "--learning-rate", "2e-3"],
    )  # fmt: skip
    assert config.temperatures == (1.0, 3.0)
    assert config.students == ("tiny-qwen2-xs",)
    assert config.student_train.steps == 7
    assert config.student_train.train_examples == 500
    assert config.teacher_train.train_examples is None  # the teacher keeps its whole pool
    assert config.student_train.learning_rate == 2e-3
    assert config.teacher_train.learning_rate == 3e-3  # the teacher keeps its recipe
    pretrained = config_from_flags("temperature", ["--pretrain-steps", "6000"]).pretrain
    assert (pretrained.steps, pretrained.teacher_steps) == (6000, config.pretrain.teacher_steps)
    assert config.seeds == (0, 1)


def test_smoke_keeps_the_path_and_shrinks_the_work():
    full = config_from_flags("temperature")
    smoke = config_from_flags("temperature", ["--smoke"])
    assert smoke.student_train.steps < full.student_train.steps
    assert smoke.eval.max_items < full.eval.max_items
    assert len(smoke.students) >= 2 and set(full.methods) <= set(smoke.methods)
    assert smoke.pretrain.steps < full.pretrain.steps and len(smoke.seeds) < len(full.seeds)


def test_study_main_reports_config_errors_without_running():
    calls = []
    code = study_main("temperature", ["--noise-sigmas", "-3"], run=calls.append)
    assert code == 2 and calls == []
