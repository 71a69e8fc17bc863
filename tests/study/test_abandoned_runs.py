"""A trial whose driver died (killed, out of memory) leaves its MLflow run RUNNING: the study
closes it FAILED with the reason, so it counts as failed (non-zero exit) and --resume trains it
again."""

from mlflow.tracking import MlflowClient

from kdray.study.runtime import close_abandoned_runs, failed_trials
from kdray.tracking.runs import PARENT_TAG, RUN_NAME_TAG
from kdray.trial.closing import FAILURE_TAG


def test_runs_left_running_by_a_dead_driver_are_closed_failed(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("study")
    parent = client.create_run(experiment).info.run_id

    def child(name: str, role: str = "trial", status: str | None = None) -> str:
        tags = {PARENT_TAG: parent, RUN_NAME_TAG: name, "kdray.role": role}
        run_id = client.create_run(experiment, tags=tags).info.run_id
        if status:
            client.set_terminated(run_id, status)
        return run_id

    lost = child("kd T=1 seed=0")
    done = child("kd T=1 seed=1", status="FINISHED")
    other = child("pretraining", role="pretrain")  # not a trial: not this function's to close
    errors = [RuntimeError("ActorDiedError: the worker died\n  traceback...")]

    assert close_abandoned_runs(client, experiment, parent, errors) == 1
    assert client.get_run(lost).info.status == "FAILED"
    assert client.get_run(done).info.status == "FINISHED"
    assert client.get_run(other).info.status == "RUNNING"
    # no trial-recorded reason, so a resumed study replaces the run instead of failing it again
    assert FAILURE_TAG not in client.get_run(lost).data.tags
    [(name, reason)] = failed_trials(client, experiment, parent)
    assert name == "kd T=1 seed=0"
    assert reason == (
        "its trial's driver ended without closing the run: ActorDiedError: the worker died"
    )
    assert close_abandoned_runs(client, experiment, parent, []) == 0  # idempotent
