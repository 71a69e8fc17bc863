"""ZeRO-3 across 2 data-parallel Ray Train workers: sharded training, gathered export, and the
online teacher sharded over the same ranks (teacher_placement=zero3)."""

from mlflow.tracking import MlflowClient

from conftest import run_study_script


def test_zero3_with_two_workers(tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--zero-stage", "3", "--num-workers", "2", "--students", "tiny-qwen2-xs",
        "--methods", "kd", "--experiment", "kdray-zero3", "--cache-dir", str(shared_cache),
        "--teacher-signal", "online", "--teacher-placement", "zero3",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # 2 workers fill the 2 CPUs: one trial at a time, so the 2 runs share one Train run.
    assert "running 2 trials as 1 Ray Train run, each training its share in turn, 1 at a time" in (
        result.stdout
    )
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-zero3")
    trials = [
        r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("kdray.role") == "trial"
    ]
    assert len(trials) == 2
    for run in trials:
        assert run.info.status == "FINISHED"
        assert run.data.params["config.train.zero_stage"] == "3"
        assert run.data.params["config.train.num_workers"] == "2"
        if run.data.params["method"] == "kd":
            assert run.data.params["teacher_signal"] == "online"
            assert run.data.params["config.kd.teacher_placement"] == "zero3"
        assert 0.0 <= run.data.metrics["accuracy"] <= 100.0
        curve = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(curve) == 20 and all(point.value > 0 for point in curve)
