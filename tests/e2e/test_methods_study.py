"""Every method trains a student through the same Ray Train + DeepSpeed path: seqkd (on the
teacher's cached responses), gkd (with on-policy batches), skew forward/reverse KL, with
gradient accumulation."""

from mlflow.tracking import MlflowClient

from conftest import run_study_script


def test_all_methods_train_through_ray_train_and_deepspeed(tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--students", "tiny-qwen2-xs", "--methods", "seqkd,gkd,skew_fkl,skew_rkl",
        "--on-policy-fraction", "0.5", "--grad-accum-steps", "2", "--experiment", "kdray-methods",
        "--cache-dir", str(shared_cache),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-methods")
    trials = {
        r.data.params["method"]: r
        for r in client.search_runs([experiment.experiment_id])
        if r.data.tags.get("kdray.role") == "trial"
    }
    assert sorted(trials) == ["gkd", "seqkd", "sft", "skew_fkl", "skew_rkl"]
    for run in trials.values():
        assert run.info.status == "FINISHED"
        assert run.data.params["config.train.grad_accum_steps"] == "2"
        assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 20
    assert trials["gkd"].data.metrics["on_policy_batches"] > 0  # lambda = 0.5 of 40 micro-batches
    assert trials["skew_fkl"].data.metrics["on_policy_batches"] == 0
    seqkd = trials["seqkd"].data.params
    assert seqkd["temperature"] == "" and seqkd["config.teacher_responses"].endswith(".json")
