"""Where runs go, and what every run records."""

import pytest

from kdray.errors import KdrayError
from kdray.tracking.runs import artifact_root_for, package_versions, resolve_tracking_uri


def test_tracking_uri_precedence(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking_uri() == "http://127.0.0.1:5000"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    with pytest.raises(KdrayError, match="invalid tracking URI"):
        resolve_tracking_uri("mlflow.db")


def test_sqlite_artifacts_live_beside_the_database(tmp_path):
    root = artifact_root_for(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert root == (tmp_path / "mlartifacts").as_uri()
    assert artifact_root_for("http://127.0.0.1:5000") is None


def test_versions_of_the_pinned_stack_are_recorded():
    versions = package_versions()
    assert versions["torch"].startswith("2.13.0") and versions["ray"] == "2.60.0"


def test_two_trials_logging_the_same_datasets_at_once_both_get_them(tmp_path, monkeypatch):
    """MLflow's SQL store looks a dataset up and then inserts it: of two trials that start
    together, one can lose on the unique key. Replayed here: the other trial's insert lands
    between the look-up and the insert; the loser retries and links the dataset that exists."""
    import json as json_module

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from kdray.tracking.datasets import log_splits

    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "validation", "test"):
        rows = [{"instruction": f"{split} {i}", "output": str(i)} for i in range(5)]
        (data / f"{split}.json").write_text(json_module.dumps(rows))
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("race")
    winner, loser = (client.create_run(experiment).info.run_id for _ in range(2))
    real = client.log_inputs
    lost = []

    def racing(run_id, datasets=None, models=None):
        if run_id == loser and not lost:  # the winner inserts first; the loser's insert fails
            real(winner, datasets=datasets)
            lost.append(True)
            raise MlflowException("IntegrityError: UNIQUE constraint failed: datasets.name")
        return real(run_id, datasets=datasets)

    monkeypatch.setattr(client, "log_inputs", racing)
    log_splits(client, loser, str(data), "world")
    for run_id in (winner, loser):
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert sorted(i.dataset.name for i in inputs) == [
            "world-test", "world-train", "world-validation"
        ]  # fmt: skip
    assert lost  # the race happened, and was survived


def test_a_lost_insert_race_is_told_apart_from_other_store_errors():
    from mlflow.exceptions import MlflowException

    from kdray.tracking.datasets import _lost_insert_race

    for lost in ("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.name",
                 "duplicate key value violates unique constraint \"datasets_pk\"",
                 "(1062, \"Duplicate entry 'x' for key 'PRIMARY'\")"):  # fmt: skip
        assert _lost_insert_race(MlflowException(lost))
    assert not _lost_insert_race(MlflowException("no such table: datasets"))


def test_rescore_refuses_a_store_that_is_not_there_and_creates_none(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    store = tmp_path / "nope" / "mlflow.db"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rescore.py"), "--store", f"sqlite:///{store}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .endswith(f"no MLflow store at sqlite:///{store}: pass --store of the study's store")
    )
    assert not store.parent.exists()
