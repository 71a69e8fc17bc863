"""The same script against a running cluster: `ray start --head`, then
`ray job submit --working-dir . -- python studies/temperature.py --smoke`."""

import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import RAY_CLI, REPO, free_port

RAY = RAY_CLI


@pytest.fixture
def ray_head(tmp_path):
    # Ray 2.60: once ~/.ray/auth_token exists, `ray start` turns token auth on but the
    # `ray job` client only uses it when told to; one setting for both (see README).
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    start = [
        RAY, "start", "--head", "--num-cpus", "2", "--port", str(free_port()),
        "--dashboard-port", str(dashboard), "--dashboard-host", "127.0.0.1",
        "--include-dashboard", "true", "--disable-usage-stats",
    ]  # fmt: skip
    # Creates ~/.ray/auth_token only if missing (it prints the token: keep it captured).
    token = [RAY, "get-auth-token", "--generate"]
    subprocess.run(token, env=env, check=True, capture_output=True, timeout=60)
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120, cwd=tmp_path)
    try:
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


def test_ray_job_submit_runs_the_smoke_study_into_the_same_store(ray_head, tmp_path, shared_cache):
    address, env = ray_head
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    submit = [
        RAY, "job", "submit", "--address", address, "--working-dir", ".", "--",
        "python", "studies/temperature.py", "--smoke", "--tracking-uri", store,
        "--cache-dir", str(shared_cache), "--experiment", "kdray-job-smoke",
    ]  # fmt: skip
    result = subprocess.run(submit, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout + result.stderr
    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("kdray-job-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
