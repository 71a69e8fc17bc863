"""The task registry, the loaders (local folders and a faked hub) and the folder check, on
small LLM-Adapters / MiniLLM files the tests write themselves."""

import json
import sys
import types
from pathlib import Path

import pytest

from kdray.errors import ConfigError
from kdray.eval.answers import ANSWER_KINDS, parse_gold
from kdray.hub.task_files import (
    check_task_folder,
    find_task_file,
    load_task,
    load_train_set,
    reference_texts,
)
from kdray.hub.tasks import (
    EVAL_TASKS,
    INSTRUCTION_EVAL_TASKS,
    TRAIN_SETS,
    find_task,
    tasks_for_domain,
)

REPO = Path(__file__).resolve().parents[2]

# A valid and an invalid gold answer per answer kind.
GOLD = {
    "number": ("1,234.0", "twelve"),
    "letter": ("C", "F"),
    "boolean": ("false", "yes"),
    "solution": ("solution2", "solution3"),
    "answer": ("answer4", "answer0"),
    "option": ("option1", "option3"),
    "ending": ("ending3", "ending5"),
}
RATIONALE = {
    "number": "12 * 100 = 1234. The answer is 1234.",
    "letter": "(C) it is",
    "boolean": "the correct answer is false",
    "solution": "the correct answer is solution2",
    "answer": "the correct answer is answer4",
    "option": "the correct answer is option1",
    "ending": "the correct answer is ending3",
}


def item(answer="4.0", output="2 + 2 = 4. The answer is 4.", instruction="What is 2 + 2?"):
    return {"instruction": instruction, "input": "", "output": output, "answer": answer}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path: Path, rows) -> Path:
    return write(path, "\n".join(json.dumps(r) for r in rows) + "\n")


def one_line_config_error(call) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- registry ---------------------------------------------------------------------------


def test_registry_counts_and_names():
    assert len(EVAL_TASKS) == 14
    assert len(tasks_for_domain("math")) == 6
    assert len(tasks_for_domain("commonsense")) == 8
    assert len(INSTRUCTION_EVAL_TASKS) == 5
    assert len(tasks_for_domain("instruction")) == 5
    assert len(TRAIN_SETS) == 3
    assert set(EVAL_TASKS) == {
        "gsm8k", "aqua", "addsub", "multiarith", "svamp", "singleeq", "arc_challenge",
        "arc_easy", "boolq", "hellaswag", "openbookqa", "piqa", "siqa", "winogrande",
    }  # fmt: skip
    assert {s.folder for s in EVAL_TASKS.values()} == {
        "AQuA", "AddSub", "gsm8k", "MultiArith", "SVAMP", "SingleEq", "ARC-Challenge",
        "ARC-Easy", "boolq", "hellaswag", "openbookqa", "piqa", "social_i_qa", "winogrande",
    }  # fmt: skip
    assert [s.display for s in INSTRUCTION_EVAL_TASKS.values()] == [
        "Dolly", "SelfInst", "Vicuna", "S-NI", "UnNI",
    ]  # fmt: skip
    assert set(TRAIN_SETS) == {"math10k", "commonsense15k", "dolly15k"}


def test_registry_fields_are_consistent():
    for spec in EVAL_TASKS.values():
        assert spec.answer_kind in ANSWER_KINDS
        assert spec.domain in ("math", "commonsense")
        assert spec.expected_items
    for spec in INSTRUCTION_EVAL_TASKS.values():
        assert spec.answer_kind == "rouge_l" and spec.hub is not None
        assert spec.hub.repo_id.startswith("MiniLLM/")
    assert EVAL_TASKS["aqua"].answer_kind == "letter"
    assert EVAL_TASKS["hellaswag"].answer_kind == "ending"
    assert TRAIN_SETS["dolly15k"].hub.repo_id == "databricks/databricks-dolly-15k"


def test_tasks_for_domain_and_find_task():
    assert [s.name for s in tasks_for_domain("math")][:2] == ["aqua", "addsub"]
    assert find_task("ARC-Challenge").name == "arc_challenge"
    assert find_task("social_i_qa").name == "siqa"
    assert find_task("S-NI").name == "sni"
    assert "gsm8k" in one_line_config_error(lambda: find_task("mmlu"))
    assert "math, commonsense, instruction" in one_line_config_error(
        lambda: tasks_for_domain("code")
    )


@pytest.mark.parametrize("name", sorted(EVAL_TASKS))
def test_every_task_parses_its_gold(tmp_path, name):
    spec = EVAL_TASKS[name]
    good, bad = GOLD[spec.answer_kind]
    write(tmp_path / spec.folder / "test.json", [item(good, RATIONALE[spec.answer_kind])])
    [record] = load_task(spec, tmp_path)
    assert parse_gold(spec.answer_kind, record["answer"])
    assert record["task"] == name
    write(tmp_path / spec.folder / "test.json", [item(good), item(bad)])
    message = one_line_config_error(lambda: load_task(spec, tmp_path))
    assert "test.json: record 1:" in message and repr(bad) in message


# --- local loading ----------------------------------------------------------------------


def test_load_math_folder(tmp_path):
    rows = [item("4.0"), item("-3", "5 - 8 = -3. The answer is -3.", "5 - 8?")]
    write(tmp_path / "gsm8k" / "test.json", rows)
    records = load_task(EVAL_TASKS["gsm8k"], tmp_path)
    assert [r["answer"] for r in records] == ["4.0", "-3"]
    assert set(records[0]) == {"instruction", "input", "output", "answer", "task"}
    assert load_task(EVAL_TASKS["gsm8k"], str(tmp_path), limit=1) == records[:1]


def test_load_commonsense_folder_with_defaults(tmp_path):
    # `input` and `output` are optional.
    write(tmp_path / "boolq" / "test.json", [{"instruction": "Is water wet?", "answer": "true"}])
    [record] = load_task(EVAL_TASKS["boolq"], tmp_path)
    assert record == {
        "instruction": "Is water wet?",
        "input": "",
        "output": "",
        "answer": "true",
        "task": "boolq",
    }


@pytest.mark.parametrize(
    ("task", "folder"),
    [
        ("arc_challenge", "ARC-Challenge"),  # LLM-Adapters' folder
        ("arc_challenge", "arc_challenge"),  # the canonical name
        ("arc_challenge", "arc-challenge"),  # any case, '-' or '_'
        ("siqa", "SIQA"),
        ("gsm8k", "GSM8K"),
    ],
)
def test_folder_name_variants(tmp_path, task, folder):
    spec = EVAL_TASKS[task]
    path = write(tmp_path / folder / "test.json", [item(GOLD[spec.answer_kind][0])])
    assert find_task_file(spec, tmp_path) == path
    assert len(load_task(spec, tmp_path)) == 1


def test_other_split(tmp_path):
    write(tmp_path / "AQuA" / "train.json", [item("B")])
    assert load_task(EVAL_TASKS["aqua"], tmp_path, split="train")[0]["answer"] == "B"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"instruction": "x"}, "holds a JSON object, not a list"),
        ("[{", "not valid JSON"),
        ([item(), "text"], "record 1 is a JSON string, not an object"),
        ([item(), {"instruction": "x", "output": "y"}], "record 1 has no 'answer'"),
        ([{"input": "", "answer": "4"}], "record 0 has no 'instruction'"),
        ([item(answer=4.0)], "record 0 has 'answer' as a JSON number, not a string"),
        ([item(output=["a"])], "record 0 has 'output' as a JSON list, not a string"),
        ([item(), item("four")], "record 1: gold answer 'four' is not a number"),
    ],
)
def test_bad_files_raise_one_line(tmp_path, content, expected):
    write(tmp_path / "gsm8k" / "test.json", content)
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["gsm8k"], tmp_path))
    assert expected in message
    assert str(tmp_path / "gsm8k" / "test.json") in message


def test_missing_key_message_names_the_format(tmp_path):
    write(tmp_path / "gsm8k" / "test.json", [item(), item(), {"instruction": "x"}])
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["gsm8k"], tmp_path))
    assert message.endswith(
        "test.json: record 2 has no 'answer': expected LLM-Adapters records with instruction,"
        " input, output, answer"
    )


def test_missing_folder_file_and_dir(tmp_path):
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["svamp"], tmp_path))
    assert str(tmp_path / "SVAMP") in message and "--data-dir" in message
    (tmp_path / "SVAMP").mkdir()
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["svamp"], tmp_path))
    assert "has no test.json" in message
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["svamp"], tmp_path / "nope"))
    assert "does not exist" in message and "omit it to use the hub" in message


def test_bad_limit(tmp_path):
    write(tmp_path / "gsm8k" / "test.json", [item()])
    assert "positive" in one_line_config_error(
        lambda: load_task(EVAL_TASKS["gsm8k"], tmp_path, limit=0)
    )


def test_instruction_set_in_minillm_layout(tmp_path):
    rows = [
        {"instruction": "Say hi", "prompt": "…", "input": "", "output": "hi there"},
        {"instruction": "Name a colour", "input": "", "output": ["red", "blue"]},
    ]
    write_jsonl(tmp_path / "sinst" / "11_" / "valid.jsonl", rows)
    records = load_task(INSTRUCTION_EVAL_TASKS["sni"], tmp_path)
    assert [r["answer"] for r in records] == ["hi there", "red"]
    assert records[1]["output"] == "red"
    assert reference_texts(records[0]) == ["hi there"]
    assert reference_texts(records[1]) == ["red", "blue"]


def test_jsonl_line_error(tmp_path):
    write(tmp_path / "dolly" / "valid.jsonl", '{"instruction": "a", "output": "b"}\n{oops\n')
    message = one_line_config_error(lambda: load_task(INSTRUCTION_EVAL_TASKS["dolly"], tmp_path))
    assert "line 2 is not valid JSON" in message


# --- training sets ----------------------------------------------------------------------


def test_load_train_sets_locally(tmp_path):
    write(tmp_path / "math_10k.json", [item(), item("7")])
    assert len(load_train_set("math10k", tmp_path)) == 2
    assert len(load_train_set("math10k", tmp_path, limit=1)) == 1
    dolly = {"instruction": "Why?", "context": "ctx", "response": "Because.", "category": "qa"}
    write_jsonl(tmp_path / "databricks-dolly-15k.jsonl", [dolly])
    [record] = load_train_set("dolly15k", tmp_path)
    assert record == {
        "instruction": "Why?",
        "input": "ctx",
        "output": "Because.",
        "answer": "Because.",
        "task": "dolly15k",
    }
    write(tmp_path / "Commonsense_15K.json", [{"instruction": "q", "answer": "true"}])
    assert "record 0 has no 'output'" in one_line_config_error(
        lambda: load_train_set("commonsense15k", tmp_path)
    )
    assert "math10k, commonsense15k, dolly15k" in one_line_config_error(
        lambda: load_train_set("alpaca", tmp_path)
    )
    assert "does not exist" in one_line_config_error(
        lambda: load_train_set("commonsense15k", tmp_path / "missing")
    )
    (tmp_path / "Commonsense_15K.json").unlink()
    assert "no commonsense_15k.json under" in one_line_config_error(
        lambda: load_train_set("commonsense15k", tmp_path)
    )


# --- hub (faked: no network here) -------------------------------------------------------


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """Stand-ins for `huggingface_hub` and `datasets` that serve files from `tmp_path/hub`."""
    calls = []
    root = tmp_path / "hub"

    def hf_hub_download(repo_id, filename, repo_type=None, revision=None, **kwargs):
        calls.append(("download", repo_id, filename, repo_type, kwargs))
        path = root / repo_id / filename
        if not path.is_file():
            raise FileNotFoundError(f"404 Client Error\nEntry {filename} not found in {repo_id}")
        return str(path)

    def list_repo_files(repo_id, repo_type=None, **kwargs):
        calls.append(("list", repo_id, repo_type, kwargs))
        base = root / repo_id
        return [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file()]

    def load_dataset(path, name=None, split=None, **kwargs):
        calls.append(("load_dataset", path, name, split, kwargs))
        return json.loads((root / path / f"{split}.json").read_text())

    hub = types.SimpleNamespace(hf_hub_download=hf_hub_download, list_repo_files=list_repo_files)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return root, calls


def test_instruction_set_from_default_hub(fake_hub):
    root, calls = fake_hub
    write_jsonl(root / "MiniLLM" / "dolly" / "valid.jsonl", [{"instruction": "a", "output": "b"}])
    [record] = load_task(INSTRUCTION_EVAL_TASKS["dolly"])
    assert record["answer"] == "b"
    assert calls == [("download", "MiniLLM/dolly", "valid.jsonl", "dataset", {})]


def test_reasoning_task_needs_a_hub_id(fake_hub):
    root, calls = fake_hub
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["gsm8k"]))
    assert "--data-dir" in message and "gsm8k/test.json" in message
    write(root / "me" / "adapters" / "dataset" / "gsm8k" / "test.json", [item()])
    assert len(load_task(EVAL_TASKS["gsm8k"], hub_id="me/adapters")) == 1
    assert calls[-1][:3] == ("download", "me/adapters", "dataset/gsm8k/test.json")
    message = one_line_config_error(lambda: load_task(EVAL_TASKS["piqa"], hub_id="me/adapters"))
    assert "has no piqa/test.json" in message


def test_hub_errors_are_one_line(fake_hub):
    message = one_line_config_error(lambda: load_task(INSTRUCTION_EVAL_TASKS["vicuna"]))
    assert "could not load MiniLLM/Vicuna/valid.jsonl from the Hugging Face hub" in message
    assert "FileNotFoundError: 404 Client Error" in message


def test_train_set_from_hub(fake_hub):
    root, calls = fake_hub
    write(root / "lmms-lab" / "Math10K" / "train.json", [item(), item()])
    assert len(load_train_set("math10k", limit=1)) == 1
    assert calls[-1] == ("load_dataset", "lmms-lab/Math10K", None, "train", {"revision": None})
    assert "trust_remote_code" not in calls[-1][-1]
    write(root / "me" / "cs" / "commonsense_15k.json", [item("true")])
    assert len(load_train_set("commonsense15k", hub_id="me/cs")) == 1
    assert "no hub copy of Commonsense15K" in one_line_config_error(
        lambda: load_train_set("commonsense15k")
    )


# --- folder check and its command -------------------------------------------------------


def make_folder(root: Path) -> Path:
    write(root / "gsm8k" / "test.json", [item(), item("5", "The answer is 6."), item("6.0")])
    write(root / "BoolQ" / "test.json", [item("true", "true"), item("false", "true")])
    write(root / "piqa" / "test.json", [item("solution1"), item("maybe")])
    write(root / "AQuA" / "test.json", {"not": "a list"})
    return root


def test_check_task_folder(tmp_path):
    reports = {r["task"]: r for r in check_task_folder(make_folder(tmp_path))}
    assert len(reports) == 19
    gsm8k = reports["gsm8k"]
    assert (gsm8k["status"], gsm8k["items"], gsm8k["gold_parsed"]) == ("ok", 3, 3)
    assert (gsm8k["gold_labels"], gsm8k["rationale_agrees"]) == (3, 1)
    assert "the study's set has 1319" in gsm8k["note"]
    boolq = reports["boolq"]
    assert (boolq["gold_labels"], boolq["rationale_agrees"]) == (2, 1)
    piqa = reports["piqa"]
    assert (piqa["status"], piqa["items"], piqa["gold_parsed"]) == ("error", 2, 1)
    assert "record 1" in piqa["note"]
    assert reports["aqua"]["status"] == "error"
    assert reports["hellaswag"]["status"] == "missing"
    assert reports["dolly"]["status"] == "missing"


def test_check_data_command(tmp_path, capsys):
    from kdray.cli.commands import main

    assert main(["check-data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope does not exist" in err
    assert main(["check-data", str(make_folder(tmp_path))]) == 1  # piqa and AQuA have problems
    table = capsys.readouterr().out
    assert "| GSM8K | math | number | 3 | 3 | 3 | 33.3% (1) |" in table
    assert "| HellaSwag | commonsense | ending | missing |" in table
