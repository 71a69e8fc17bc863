"""The MLflow UI in a browser: kdray's experiments are tagged as model-training experiments, and
the runs table shows a study's parent run with its trials nested under it
(scripts/browse_check.py in headless Chromium; skipped where no Chromium is installed)."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO
from kdray.study.prepare import open_parent_run
from kdray.study.side_runs import TeacherRuns
from kdray.tracking.runs import (
    EXPERIMENT_KIND_TAG,
    TRAINING_EXPERIMENT,
    ensure_experiment,
    mark_failed,
    run_tags,
)
from kdray.trial.driver import open_child_run

sys.path.insert(0, str(REPO / "scripts"))
from browse_check import find_chromium  # noqa: E402

EXPERIMENT = "kdray-temperature-smoke"
TRIALS = [  # (key, run name) as the smoke study names its trials
    ("sft-xs", "sft tiny-qwen2-xs"),
    ("kd-xs", "kd T=2 σ=0 tiny-qwen2-xs ← tiny-qwen2-m"),
    ("sft-s", "sft tiny-qwen2-s"),
    ("kd-s", "kd T=2 σ=0 tiny-qwen2-s ← tiny-qwen2-m"),
]


def test_every_experiment_kdray_creates_or_finds_is_tagged_model_training(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    created = ensure_experiment(client, "made-by-kdray", uri)
    untagged = client.create_experiment("made-by-hand")  # e.g. an earlier kdray's
    assert ensure_experiment(client, "made-by-hand", uri) == untagged
    for experiment_id in (created, untagged):
        tags = MlflowClient(uri).get_experiment(experiment_id).tags  # read back from the store
        assert tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT == "custom_model_development"


def study_store(folder) -> str:
    """A smoke study's runs as kdray's own code writes them, without Ray or training: the
    experiment, the parent run, a teacher's side run and one child run per trial."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, EXPERIMENT, uri)
    config = SimpleNamespace(name="temperature-smoke", preset="tiny", domain="arith")
    tags = run_tags(config.preset, config.domain, config.name)
    parent = open_parent_run(client, experiment_id, config, tags)
    teacher = TeacherRuns(client, experiment_id, uri, parent).open(
        config, "teacher", "teacher tiny-qwen2-m (task-aware)", {"steps": 600}
    )
    client.set_terminated(teacher)
    study = {"experiment_id": experiment_id, "parent_run_id": parent, "tags": tags}
    for key, name in TRIALS:
        plan = {"key": key, "run_name": name, "params": {"study": config.name}}
        run = open_child_run(client, study, plan).info.run_id
        client.log_metric(run, "accuracy", 50.0)
        client.set_terminated(run)
    mark_failed(client, client.create_run(experiment_id, run_name="unrelated").info.run_id)
    client.set_terminated(parent)
    return uri


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed")
def test_the_runs_table_shows_the_parent_run_with_its_trials_nested_under_it(tmp_path):
    uri = study_store(tmp_path)
    shot = tmp_path / "runs.png"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "browse_check.py"), uri,
         "--experiment", EXPERIMENT, "--screenshot", str(shot)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "is tagged mlflow.experimentKind = custom_model_development" in output
    assert "the page is the training runs view" in output
    assert f"all {len(TRIALS)} child runs are nested under 'temperature-smoke " in output
    for _, name in TRIALS:
        assert f"└ {name}\n" in output
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
