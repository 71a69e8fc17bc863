"""RunCloser: each run of a Train run that trains several is closed as soon as a checkpoint
holds its outputs, its student kept where later checkpoints cannot take it away."""

import json
import shutil
from types import SimpleNamespace

import pyarrow.fs
from mlflow.tracking import MlflowClient

from kdray.tracking.models import MODEL_FOLDER_TAG
from kdray.train.loop import FAILURE_FILE, METRICS_FILE, record_run
from kdray.trial.closing import FAILURE_TAG, RunCloser


def _checkpoint(path):
    return SimpleNamespace(path=str(path), filesystem=pyarrow.fs.LocalFileSystem())


def _finished(folder, run_id, failure=None):
    record_run(folder, "fingerprint", run_id)
    if failure:
        (folder / FAILURE_FILE).write_text(json.dumps({"reason": failure}))
    else:
        (folder / METRICS_FILE).write_text(json.dumps({"step": 20, "score": 50.0}))
        (folder / "model.safetensors").write_bytes(b"weights")


def test_runs_close_as_their_outputs_reach_a_checkpoint(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("study")
    ids = [client.create_run(experiment).info.run_id for _ in range(4)]
    closer = RunCloser(uri, ids, tmp_path / "students", log_models=False)

    first = tmp_path / "checkpoint_0"
    _finished(first / "run-0", ids[0])
    _finished(first / "run-1", "an earlier attempt's run")  # restored, not this run's yet
    closer.after_report(None, [{}], _checkpoint(first))
    closer.after_report(None, [{}], None)  # a progress report without a checkpoint
    statuses = [client.get_run(i).info.status for i in ids]
    assert statuses == ["FINISHED", "RUNNING", "RUNNING", "RUNNING"]
    kept = client.get_run(ids[0]).data.tags[MODEL_FOLDER_TAG]
    assert kept == str(tmp_path / "students" / ids[0])
    end_time = client.get_run(ids[0]).info.end_time

    second = tmp_path / "checkpoint_1"  # the next checkpoint replaces the first
    shutil.copytree(first / "run-0", second / "run-0")
    _finished(second / "run-1", ids[1], failure="loss became nan at step 3")
    _finished(second / "run-2", ids[2])
    (second / "run-2" / "unsent").mkdir()  # rank 0 kept logging ops: the driver sends them
    shutil.rmtree(first)
    closer.after_report(None, [{}], _checkpoint(second))
    runs = [client.get_run(i) for i in ids]
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED", "RUNNING", "RUNNING"]
    assert "loss became nan at step 3" in runs[1].data.tags[FAILURE_TAG]
    assert runs[0].info.end_time == end_time  # closed once
    assert (tmp_path / "students" / ids[0] / "model.safetensors").read_bytes() == b"weights"


def test_checkpoints_off_this_machine_are_left_to_the_driver(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("study")).info.run_id
    _finished(tmp_path / "checkpoint" / "run-0", run_id)
    remote = SimpleNamespace(path=str(tmp_path / "checkpoint"), filesystem=object())
    RunCloser(uri, [run_id], tmp_path / "students", log_models=False).after_report(
        None, [{}], remote
    )
    assert client.get_run(run_id).info.status == "RUNNING"
