"""The same script against a running cluster: `ray start --head`, then
`ray job submit --working-dir . -- python studies/temperature.py --smoke`. That job is the
session's smoke study (the `smoke_job` fixture, conftest.py), whose runs test_smoke_study.py
inspects."""

from mlflow.tracking import MlflowClient


def test_ray_job_submit_runs_the_smoke_study_into_the_same_store(smoke_job):
    result = smoke_job.result
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "succeeded" in result.stdout + result.stderr
    client = MlflowClient(smoke_job.uri)  # the job's --tracking-uri
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
