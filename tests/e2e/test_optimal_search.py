"""optimal.py: Optuna TPE (define-by-run) with ASHA per student size, through the real path."""

import csv
import sqlite3

import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import interrupt_study_script, run_study_script
from kdray.config.run import KDConfig
from kdray.study.search import SearchConfig, kd_from_sample, rank_trials, suggest_settings


def test_the_space_is_conditional_on_the_method():
    search = SearchConfig(num_samples=40)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: suggest_settings(t, search, 1e-2) or 0.0, n_trials=60)
    seen = set()
    for trial in study.trials:
        params, method = trial.params, trial.params["method"]
        seen.add(method)
        assert ("beta" in params) == ("on_policy_fraction" in params) == (method == "gkd")
        assert ("temperature" in params) == (method not in ("seqkd", "sft"))
        assert ("ce_weight" in params) == (method != "sft")
        assert 1e-2 / 3 <= params["learning_rate"] <= 3e-2
        if "temperature" in params:
            assert 0.5 <= params["temperature"] <= 5.0
            assert params["noise_sigma"] in search.noise_sigmas
    assert seen == set(search.methods)


def test_validation_ties_go_to_the_lower_trial_id_in_the_pick_and_the_table():
    # 40.0 twice, once through a mean of seeds: the pick confirmed is the pick reported
    ranked = rank_trials({"t_b": 40.0, "t_a": (39.0 + 41.0) / 2, "t_c": 50.0})
    assert ranked == ["t_c", "t_a", "t_b"]


def test_a_sample_becomes_a_validated_kd_config():
    template = KDConfig(method="kd", loss_tokens="all")
    sample = {"method": "gkd", "temperature": 2.5, "noise_sigma": 1.0, "ce_weight": 0.3,
              "beta": 0.2, "on_policy_fraction": 0.4, "learning_rate": 1e-3}  # fmt: skip
    kd = kd_from_sample(sample, template)
    assert (kd.method, kd.temperature, kd.beta, kd.on_policy_fraction) == ("gkd", 2.5, 0.2, 0.4)
    assert kd.loss_tokens == "all"  # the preset's other knobs stay
    with pytest.raises(ValueError, match="ce_weight"):
        kd_from_sample({**sample, "ce_weight": 2.0}, template)


def test_optimal_smoke_searches_resumes_and_reports_best_settings(tmp_path, shared_cache):
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--students", "tiny-qwen2-s",
             "--num-samples", "3", "--max-concurrent", "1"]  # fmt: skip
    code, output = interrupt_study_script(*flags, cwd=tmp_path, after="[1/3 done", script="optimal")
    assert code == 130, output[-3000:]
    result = run_study_script(*flags, "--resume", cwd=tmp_path, script="optimal")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "resuming search run" in result.stdout and "[3/3 done" in result.stdout
    assert "best settings per student size" in result.stdout

    rows = list(csv.DictReader(open(tmp_path / "results" / "optimal-smoke" / "best_settings.csv")))
    assert [r["student"] for r in rows] == ["tiny-qwen2-s"]
    assert int(rows[0]["trials"]) == 3 and rows[0]["method"]
    assert 0 <= float(rows[0]["val_score"]) <= 100 and 0 <= float(rows[0]["test_score"]) <= 100

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-optimal-smoke")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 3 and parent.info.status == "FINISHED"
    for run in children:  # finished, or stopped by ASHA and closed as such
        stopped = "kdray.stopped_early" in run.data.tags
        assert run.info.status == ("KILLED" if stopped else "FINISHED")
        assert ("score" in run.data.metrics) != stopped
    assert int(rows[0]["stopped_early"]) == sum(r.info.status == "KILLED" for r in children)
    first = min(children, key=lambda r: r.info.start_time)  # the preset's point goes first
    assert first.data.tags["mlflow.runName"].startswith("kd T=1 σ=0 tiny-qwen2-s ← tiny-qwen2-m")
    for run in children:  # validation score and NLL as curves; val_nll is the ASHA rungs' input
        assert client.get_metric_history(run.info.run_id, "val_score")
        rungs = client.get_metric_history(run.info.run_id, "val_nll")
        assert rungs and all(point.value > 0 for point in rungs)
        assert run.data.tags["kdray.preset"] == "tiny" and run.data.tags["kdray.git_commit"]

    # Optuna's study persisted beside the MLflow store and continued by --resume: one trial
    # per Tune trial, none sampled twice.
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        (count,) = db.execute("select count(*) from trials").fetchone()
    assert count == 3
    assert_picks_registered(tmp_path, result.stdout, rows, children)


@pytest.mark.slow  # ~3 min: 2 trials x 2 seeds and a confirmation
def test_a_search_trial_is_the_mean_of_its_seeds(tmp_path, shared_cache):
    flags = ["--smoke", "--cache-dir", str(shared_cache), "--students", "tiny-qwen2-s",
             "--num-samples", "2", "--search-seeds", "2", "--confirm-seeds", "3",
             "--max-concurrent", "1"]  # fmt: skip
    result = run_study_script(*flags, cwd=tmp_path, script="optimal")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "each the mean of seeds 0-1" in result.stdout

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("kdray-optimal-smoke")
    runs = client.search_runs([experiment.experiment_id], "tags.`kdray.role` = 'trial'")
    searched = [r for r in runs if "confirms" not in r.data.params]
    confirmations = [r for r in runs if "confirms" in r.data.params]
    assert len(searched) == 4 and len(confirmations) == 1  # seeds 0, 1 per trial; then seed 2
    assert {r.info.status for r in runs} == {"FINISHED"}  # no ASHA stops with 2 seeds
    by_trial = {}
    for run in searched:
        by_trial.setdefault(run.data.params["search_trial"], []).append(run)
    assert all(sorted(r.data.params["seed"] for r in rs) == ["0", "1"] for rs in by_trial.values())
    assert confirmations[0].data.params["seed"] == "2"

    # Optuna's value of each trial is its two seeds' mean validation score.
    means = sorted(sum(r.data.metrics["val_score"] for r in rs) / 2 for rs in by_trial.values())
    with sqlite3.connect(tmp_path / "optuna.db") as db:
        values = sorted(v for (v,) in db.execute("select value from trial_values"))
    assert values == pytest.approx(means)

    (row,) = csv.DictReader(open(tmp_path / "results" / "optimal-smoke" / "best_settings.csv"))
    assert row["trials"] == "2" and row["stopped_early"] == "0" and row["seeds"] == "3"
    assert float(row["val_score"]) == pytest.approx(max(means))
    assert row["runner_up"] and row["distinguishable"] in ("yes", "no")
    run = assert_picks_registered(tmp_path, result.stdout, [row], runs)
    assert run.data.params["seed"] == "0"  # the pick's seed-0 run, not a confirmation


def assert_picks_registered(workdir, stdout, rows, trial_runs):
    """Each student's pick (best_settings.csv's run) is a version of `kdray-optimal-smoke-
    <student>` in the model registry with its setting as tags, every completed trial run has
    its student logged (--log-models all), and `python -m analysis best` prints how to load
    the pick. The pick's run, of the last row."""
    import contextlib
    import io

    from analysis.__main__ import main as analysis_main
    from kdray.tracking.models import student_model_id

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    client = MlflowClient(uri)
    for run in trial_runs:  # a trial ASHA stopped exported nothing
        logged = student_model_id(client, run.info.run_id) is not None
        assert logged == ("score" in run.data.metrics), run.info.run_name
    for row in rows:
        name = f"kdray-optimal-smoke-{row['student']}"
        (version,) = client.search_model_versions(f"name = '{name}'")
        assert version.run_id == row["run_id"] and version.tags["method"] == row["method"]
        assert version.tags["student"] == row["student"] and version.tags["setting"]
        assert float(version.tags["val_score"]) == pytest.approx(float(row["val_score"]), 1e-3)
        assert f"as MLflow model {name} version 1" in stdout
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert analysis_main(["best", "--experiment", "kdray-optimal-smoke",
                                  "--tracking-uri", uri]) == 0  # fmt: skip
        assert f"{row['student']}: {name} version 1" in out.getvalue()
        assert f'mlflow.pyfunc.load_model("models:/{name}/1")' in out.getvalue()
        assert f"runs:/{row['run_id']}/student/artifacts/hf_model" in out.getvalue()
    return client.get_run(rows[-1]["run_id"])
