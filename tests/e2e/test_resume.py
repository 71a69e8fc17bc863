"""--resume: a study interrupted with Ctrl-C continues where it stopped; finished trials are
not rerun and every trial ends with exactly one MLflow run."""

import signal
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from conftest import RAY_CLI, interrupt_study_script, run_study_script, study_env

TRIALS = 6  # smoke: 2 students x (sft, kd, revkd)


def _children(client, experiment_id, parent_id):
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
    return {r.data.tags["kdray.trial_key"]: r for r in runs}


def test_a_study_interrupted_in_its_packed_train_run_resumes_every_run_complete(
    tmp_path, shared_cache
):
    """The default: all 6 runs in one packed Train run, Ctrl-C after its second run. Ctrl-C
    stops the trial in flight (Tune reports it TERMINATED, not done), so the study must not
    take itself for finished. The runs that finished were closed as they did and are kept;
    the others stay open, and --resume trains each to one complete curve (a restored Train
    checkpoint's outputs belong to the runs' old MLflow ids)."""
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--max-concurrent", "1"]
    code, output = interrupt_study_script(*flags, cwd=tmp_path, after="run 2/6 done")
    assert code == 130, output[-3000:]
    assert "interrupted: 0 of 1 trials finished" in output and "--resume" in output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'study'")
    assert parent.info.status == "KILLED"
    before = _children(client, experiment.experiment_id, parent.info.run_id)
    assert "FAILED" not in {r.info.status for r in before.values()}  # not the runs' failure
    finished = {k: r for k, r in before.items() if r.info.status == "FINISHED"}
    assert 1 <= len(finished) < TRIALS  # at least the first, closed before the second ended

    resumed = run_study_script(*flags, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = _children(client, experiment.experiment_id, parent.info.run_id)
    assert len(after) == TRIALS and {r.info.status for r in after.values()} == {"FINISHED"}
    for key, run in finished.items():  # not trained again
        assert after[key].info.run_id == run.info.run_id
        assert after[key].info.end_time == run.info.end_time
    for run in after.values():  # every curve complete, each step once, and its metrics
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(1, 21)) and "score" in run.data.metrics
    assert (tmp_path / "results" / "temperature-smoke" / "results.md").is_file()


@pytest.mark.slow  # 2 min; the packed Train run's resume above runs by default
def test_an_interrupted_study_resumes_without_rerunning_or_duplicating(tmp_path, shared_cache):
    """A Train run per run: the runs that finished before Ctrl-C are kept as they are."""
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--max-concurrent", "1"]
    flags += ["--train-runs", "run"]
    code, output = interrupt_study_script(*flags, cwd=tmp_path, after="[2/6 done")
    assert code == 130, output[-3000:]
    assert "--resume" in output.splitlines()[-1]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'study'")
    assert parent.info.status == "KILLED" and "trials" not in parent.data.metrics
    before = {
        key: run
        for key, run in _children(client, experiment.experiment_id, parent.info.run_id).items()
        if run.info.status == "FINISHED"
    }
    assert 2 <= len(before) < TRIALS

    resumed = run_study_script(*flags, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"resuming study run {parent.info.run_id}" in resumed.stdout
    assert f"[{TRIALS}/{TRIALS} done" in resumed.stdout

    after = _children(client, experiment.experiment_id, parent.info.run_id)
    assert len(after) == TRIALS  # one active run per trial: none duplicated, none lost
    assert {r.info.status for r in after.values()} == {"FINISHED"}
    for key, run in before.items():  # finished trials were not rerun
        assert after[key].info.run_id == run.info.run_id
        assert after[key].info.end_time == run.info.end_time
    for run in after.values():  # every curve complete, each step once
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        assert sorted(steps) == list(range(1, 21))
    parent = client.get_run(parent.info.run_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == TRIALS
    assert (tmp_path / "results" / "temperature-smoke" / "results.md").is_file()


@pytest.mark.slow  # 3.5 min; the Ctrl-C test above covers resume in the default run
def test_a_killed_driver_resumes_without_rerunning_or_duplicating(tmp_path, shared_cache):
    """SIGKILL (no clean-up at all: the parent run stays RUNNING, Tune's state is whatever it
    last saved), then --resume: the remaining trials run, finished ones are not trained again,
    every trial has exactly one run with one complete curve."""
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--max-concurrent", "1"]
    flags += ["--train-runs", "run"]
    try:
        code, output = interrupt_study_script(
            *flags, cwd=tmp_path, after="[3/6 done", sig=signal.SIGKILL
        )
        assert code == -signal.SIGKILL, output[-3000:]
        client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("kdray-temperature-smoke")
        (parent,) = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'study'")
        assert parent.info.status == "RUNNING"  # nobody closed it
        children = _children(client, experiment.experiment_id, parent.info.run_id)
        before = {k: r for k, r in children.items() if r.info.status == "FINISHED"}
        assert len(before) >= 3

        resumed = run_study_script(*flags, "--resume", cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        assert f"resuming study run {parent.info.run_id}" in resumed.stdout
        after = _children(client, experiment.experiment_id, parent.info.run_id)
        assert len(after) == TRIALS and {r.info.status for r in after.values()} == {"FINISHED"}
        for key, run in before.items():
            assert after[key].info.run_id == run.info.run_id
            assert after[key].info.end_time == run.info.end_time  # not trained again
        for run in after.values():
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
            assert sorted(steps) == list(range(1, 21))  # one complete curve, each step once
        parent = client.get_run(parent.info.run_id)
        assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == TRIALS
    finally:  # a killed driver may leave its local Ray behind: later tests start their own
        subprocess.run([RAY_CLI, "stop", "--force"], env=study_env(), capture_output=True)


def test_resume_of_a_study_that_never_ran_is_one_line_and_exit_2(tmp_path, shared_cache):
    result = run_study_script(
        "--smoke", "--resume", "--cache-dir", str(shared_cache), cwd=tmp_path, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "nothing to resume" in result.stderr
    assert not (tmp_path / "results").exists()
