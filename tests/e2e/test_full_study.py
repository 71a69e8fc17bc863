"""The default temperature study, as the README's first command runs it (13-15 min on
2 CPUs): `pytest -m slow`."""

import time

import pytest
from mlflow.tracking import MlflowClient

from conftest import run_study_script


@pytest.mark.slow
def test_default_temperature_study(tmp_path):
    started = time.time()
    result = run_study_script("--cache-dir", str(tmp_path / "cache"), cwd=tmp_path, timeout=3000)
    minutes = (time.time() - started) / 60
    print(result.stdout[-6000:])
    print(f"default temperature study: {minutes:.1f} min")
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 3 * 2 * (1 + 3)  # 3 seeds, sft + kd x 3 T
    assert (
        "Largest teacher-SFT gap" in result.stdout and "Seeds as paired replicates" in result.stdout
    )
    pretrained = [r for r in runs if r.data.tags.get("kdray.role") == "pretrain"]
    assert len(pretrained) == 1 + 2 * 3  # the teacher's base, each student's per seed
    assert all("nll" in r.data.metrics for r in children)
