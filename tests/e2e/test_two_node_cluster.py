"""Two Ray nodes on this machine (`ray start --head` plus `ray start --address`, each with its
own resources): a --smoke study whose trials each run 2 Train workers, one per node, doing
data-parallel DeepSpeed ZeRO-2 training across them, with results like a one-node run's.

    python -m pytest -m slow tests/e2e/test_two_node_cluster.py     # about 3 minutes
"""

import re
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import RAY_CLI, free_port, run_study_script, study_env


@pytest.fixture
def two_nodes(tmp_path, monkeypatch):
    # Ray 2.60's token auth: the same mode for `ray start` and the study (see test_ray_job).
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    env = study_env()
    run = dict(env=env, check=True, capture_output=True, timeout=120, cwd=tmp_path)
    subprocess.run([RAY_CLI, "get-auth-token", "--generate"], **run)
    port = free_port()
    head = [RAY_CLI, "start", "--head", "--port", str(port), "--num-cpus", "2",
            "--resources", '{"kdray_node_head": 1}', "--include-dashboard", "true",
            "--dashboard-host", "127.0.0.1", "--dashboard-port", str(free_port()),
            "--disable-usage-stats"]  # fmt: skip
    started = subprocess.run(head, text=True, **run)
    try:
        # The head prints how other nodes join: ray start --address='<ip>:<port>'
        address = re.search(r"--address='([^']+)'", started.stdout).group(1)
        second = [RAY_CLI, "start", "--address", address, "--num-cpus", "1",
                  "--resources", '{"kdray_node_second": 1}', "--disable-usage-stats"]  # fmt: skip
        subprocess.run(second, **run)
        yield address
    finally:
        subprocess.run([RAY_CLI, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_smoke_study_trains_across_two_nodes_with_zero2(two_nodes, tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--students", "tiny-qwen2-s", "--num-workers", "2", "--zero-stage", "2",
        "--placement-strategy", "spread", "--cache-dir", str(shared_cache), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "connected to Ray cluster" in result.stdout and "kdray_node_second" in result.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(trials) == 3 and parent.info.status == "FINISHED"  # sft, kd, revkd
    nodes = set()
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert params["config.train.num_workers"] == "2"
        assert params["config.train.zero_stage"] == "2"
        assert metrics["worker_nodes"] == 2  # the two ranks ran on different nodes
        nodes.update(run.data.tags["kdray.worker_nodes"].split(","))
        # the same results as a one-node run carries (tests/e2e/test_smoke_study.py)
        for metric in ("accuracy", "score", "agreement", "fidelity", "tokens_per_second"):
            assert metric in metrics
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 20
    assert len(nodes) == 2
    assert (tmp_path / "results" / "temperature-smoke" / "report" / "tests.csv").is_file()
