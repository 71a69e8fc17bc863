"""A trial's exported student logged as an MLflow model (a pyfunc around the Hugging Face
folder) on a SQLite store, loaded back, and answering as the study's evaluation does."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny_student_folder
from kdray.config.run import EvalConfig
from kdray.data.prompts import format_prompt
from kdray.tracking.models import HF_FOLDER, STUDENT_MODEL, log_student, student_model_id
from kdray.tracking.runs import ensure_experiment

QUESTIONS = [
    "Ann has 3 pens and gets 4 more. How many?",
    "Ann has 7 pens and gets 1 more. How many?",
]


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """A run whose exported student (qwen) is logged: (store URI, run id, model id, folder)."""
    from kdray.trial.closing import log_run_student

    root = tmp_path_factory.mktemp("models")
    folder = tiny_student_folder(root / "ray_results" / "run-0")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(client, "kdray-models-test", uri))
    run_id = run.info.run_id
    params = {"method": "kd", "student": "tiny-qwen2-xs", "config.eval.max_new_tokens": "8",
              "version.torch": "2.13.0"}  # fmt: skip
    for key, value in params.items():
        client.log_param(run_id, key, value)
    client.log_metric(run_id, "score", 12.5, step=20)
    model_id = log_run_student(uri, run_id, folder)
    return uri, run_id, model_id, folder


def test_the_student_is_the_runs_model_with_only_its_folder_files(logged):
    uri, run_id, model_id, folder = logged
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert [o.model_id for o in run.outputs.model_outputs] == [model_id]
    assert run.outputs.model_outputs[0].step == 20  # the run's last step (metrics.json)
    model = client.get_logged_model(model_id)
    assert model.name == STUDENT_MODEL and model.source_run_id == run_id
    assert model.status.to_proto() == model.status.READY.to_proto()
    assert model.params == {"method": "kd", "student": "tiny-qwen2-xs"}  # not config.*, version.*
    assert student_model_id(client, run_id) == model_id
    assert log_student(uri, run_id, folder) == model_id  # logged once
    assert len(client.search_logged_models([run.info.experiment_id])) == 1

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        hf_folder = mlflow.artifacts.download_artifacts(
            f"runs:/{run_id}/{STUDENT_MODEL}/{HF_FOLDER}"
        )
    files = {p.name: p for p in Path(hf_folder).iterdir()}
    assert sorted(files) == [
        "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip
    for name, path in files.items():  # the exported files themselves, not links
        assert not path.is_symlink() and path.read_bytes() == (folder / name).read_bytes()
    size = sum(p.stat().st_size for p in files.values())
    # 56,784 weights (tiny-qwen2-xs) and a tokenizer: well under what optimizer state or a
    # checkpoint folder would add
    assert size < 300_000, f"a tiny student takes {size} bytes"


def test_the_logged_student_loads_and_answers_as_the_evaluation_does(logged):
    """Greedy answers of the pyfunc = the study's generation (kdray.eval.responses) on the
    folder: the logged model is the model the run evaluated."""
    from transformers import AutoTokenizer

    from kdray.eval.responses import generate_responses
    from kdray.models import load_model

    uri, _, model_id, folder = logged
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        model = mlflow.pyfunc.load_model(f"models:/{model_id}")
    tokenizer = AutoTokenizer.from_pretrained(str(folder.parent / "tokenizer"))  # as trials do
    loaded = model.unwrap_python_model().tokenizer  # not the model type's (Qwen2Tokenizer)
    for text in QUESTIONS:
        assert loaded(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert loaded.decode(tokenizer(text)["input_ids"]) == text
    examples = [{"instruction": q, "input": ""} for q in QUESTIONS]
    expected = generate_responses(
        load_model(str(folder), None), tokenizer, examples, EvalConfig(max_new_tokens=8)
    )
    assert model.predict(QUESTIONS) == expected
    assert model.predict(pd.DataFrame({"instruction": QUESTIONS})) == expected
    with_input = [{"instruction": "Add.", "input": "3 and 4"}]
    expected = generate_responses(
        load_model(str(folder), None), tokenizer, with_input, EvalConfig(max_new_tokens=8)
    )
    assert model.predict(pd.DataFrame(with_input)) == expected
    inner, prompts = model.unwrap_python_model(), []
    with pytest.MonkeyPatch.context() as spy:  # each input reaches its prompt; raw: none
        spy.setattr(inner, "_prompt", lambda text, extra: prompts.append((text, extra)) or text)
        model.predict(pd.DataFrame({"instruction": ["a", "b"], "input": ["x", None]}))
        short = model.predict(["Ann has"], params={"raw": True, "max_new_tokens": 2})
        longer = model.predict(["Ann has"], params={"raw": True, "max_new_tokens": 8})
    assert prompts == [("a", "x"), ("b", "")]
    assert longer[0].startswith(short[0])  # greedy: the same first tokens
    assert inner._prompt("Add.", "3 and 4") == format_prompt(with_input[0])


def test_an_upload_cut_off_is_not_taken_for_the_logged_student(tmp_path, monkeypatch):
    """The logged model exists before its files do: an upload that fails (the server gone
    mid-way) marks it FAILED, and the retry logs the student instead of finding that one."""
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model

    folder = tiny_student_folder(tmp_path / "ray_results" / "run-0")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(ensure_experiment(client, "cut-off", uri)).info.run_id
    real = Model.log

    def cut_off(*args, **kwargs):
        raise ConnectionError("the tracking server went away mid-upload")

    monkeypatch.setattr(Model, "log", cut_off)
    with pytest.raises(ConnectionError):
        log_student(uri, run_id, folder)
    assert student_model_id(client, run_id) is None
    monkeypatch.setattr(Model, "log", real)
    model_id = log_student(uri, run_id, folder)
    experiment = client.get_run(run_id).info.experiment_id
    statuses = sorted(str(m.status) for m in client.search_logged_models([experiment]))
    assert statuses == sorted([str(LoggedModelStatus.FAILED), str(LoggedModelStatus.READY)])
    assert student_model_id(client, run_id) == model_id
    assert client.get_logged_model(model_id).status == LoggedModelStatus.READY
