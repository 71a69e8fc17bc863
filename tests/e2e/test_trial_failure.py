"""A trial that fails (here: absurd teacher-logit noise makes its loss non-finite) is FAILED in
Tune and MLflow with its reason, and the study goes on to finish the others."""

from mlflow.tracking import MlflowClient

from conftest import run_study_script


def test_a_failing_trial_is_marked_and_the_study_goes_on(tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--cache-dir", str(shared_cache), "--students", "tiny-qwen2-xs",
        "--methods", "kd", "--noise-sigmas", "0,1e38", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "2 trials finished, 1 failed" in result.stdout
    assert "FAILED kd T=2 σ=1e+38 tiny-qwen2-xs ← tiny-qwen2-m: " in result.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    assert parent.info.status == "FAILED" and parent.data.metrics["failed_trials"] == 1
    children = {
        r.data.params["noise_sigma"] or "sft": r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(children) == 3
    assert children["1e+38"].info.status == "FAILED"
    reason = children["1e+38"].data.tags["kdray.failure_reason"]
    assert reason.startswith("kdray.train.loop.NonFiniteLossError: loss became nan at step")
    assert "\n" not in reason
    assert children["0.0"].info.status == children["sft"].info.status == "FINISHED"
    assert "kd" in (tmp_path / "results" / "temperature-smoke" / "results.md").read_text()
