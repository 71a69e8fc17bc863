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
