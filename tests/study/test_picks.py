"""optimal.py's picks in the MLflow model registry (kdray.study.picks) and `python -m analysis
best` reading them back, on a temporary SQLite store without Ray; --log-models."""

import dataclasses

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.__main__ import main as analysis_main
from conftest import tiny_student_folder
from kdray.cli.args import config_from_flags
from kdray.errors import ConfigError
from kdray.study.config import StudyConfig
from kdray.study.picks import register_picks
from kdray.study.search import sample_name
from kdray.tracking.models import MODEL_FOLDER_TAG, registered_name, student_model_id
from kdray.tracking.runs import ensure_experiment
from kdray.trial.closing import log_run_student

EXPERIMENT = "kdray-optimal-test"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A search's parent run and two trial runs, each with its exported student folder: the
    xs run's student logged (as --log-models all does), the s run's only tagged (picks)."""
    root = tmp_path_factory.mktemp("picks")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, EXPERIMENT, uri)
    parent = client.create_run(experiment_id).info.run_id
    client.log_param(parent, "teacher", "tiny-qwen2-m")
    runs = {}
    for student in ("tiny-qwen2-xs", "tiny-qwen2-s"):
        run_id = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent}).info.run_id
        folder = tiny_student_folder(root / "ray_results" / student / "run-0")
        teacher = "" if student == "tiny-qwen2-s" else "tiny-qwen2-m"  # s: an sft run
        params = {"student": student, "teacher": teacher, "seed": "0",
                  "config.eval.max_new_tokens": "8"}  # fmt: skip
        for key, value in params.items():
            client.log_param(run_id, key, value)
        client.set_tag(run_id, MODEL_FOLDER_TAG, str(folder))
        runs[student] = run_id
    log_run_student(uri, runs["tiny-qwen2-xs"], root / "ray_results" / "tiny-qwen2-xs" / "run-0")
    ensure_experiment(client, "kdray-empty", uri)  # an experiment without picks
    return uri, parent, runs


def _table(runs) -> pd.DataFrame:
    """best_settings' rows for the two students: a kd pick with its runner-up columns, and an
    sft pick confirmed over 3 seeds."""
    return pd.DataFrame(
        [
            {"student": "tiny-qwen2-xs", "trials": 3, "method": "kd", "temperature": "1.37",
             "noise_sigma": "1.0", "ce_weight": "0.53", "learning_rate": "0.012", "beta": "",
             "on_policy_fraction": "", "val_score": 31.0, "test_score": 28.0,
             "run_id": runs["tiny-qwen2-xs"]},
            {"student": "tiny-qwen2-s", "trials": 3, "method": "sft", "temperature": "",
             "noise_sigma": "", "ce_weight": "", "learning_rate": "0.003", "beta": "",
             "on_policy_fraction": "", "val_score": 40.0, "test_score": 41.5, "seeds": 3.0,
             "test_mean": 43.4, "test_ci": 9.1, "test_sd": 3.7, "run_id": runs["tiny-qwen2-s"]},
        ]
    )  # fmt: skip


@pytest.fixture(scope="module")
def registered(store):
    """The two picks registered once (every test that reads the registry gets them, in any
    order): their versions and the progress lines it printed."""
    import contextlib
    import io

    uri, parent, runs = store
    config = StudyConfig(name="optimal", experiment=EXPERIMENT, log_models="picks")
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        versions = register_picks(config, uri, parent, _table(runs), sample_name)
    return versions, printed.getvalue()


def test_the_picks_are_registered_with_their_settings_and_analysis_best_prints_them(
    store, registered, capsys
):
    uri, parent, runs = store
    versions, out = registered
    config = StudyConfig(name="optimal", experiment=EXPERIMENT, log_models="picks")
    assert [v.name for v in versions] == [
        "kdray-optimal-test-tiny-qwen2-xs", "kdray-optimal-test-tiny-qwen2-s"
    ]  # fmt: skip
    assert "registered tiny-qwen2-xs's pick kd T=1.37 σ=1 ce=0.53 lr=0.012 as MLflow model" in out
    client = MlflowClient(uri)
    xs, s = versions
    assert xs.run_id == runs["tiny-qwen2-xs"] and str(xs.version) == "1"
    assert xs.tags["setting"] == "kd T=1.37 σ=1 ce=0.53 lr=0.012"
    assert (xs.tags["method"], xs.tags["temperature"], xs.tags["teacher"]) == (
        "kd", "1.37", "tiny-qwen2-m"
    )  # fmt: skip
    assert xs.tags["val_score"] == "31" and "beta" not in xs.tags
    assert s.tags["teacher"] == "tiny-qwen2-m"  # an sft run has none: the study's
    assert s.tags["setting"] == "sft lr=0.003" and s.tags["test_mean"] == "43.4"
    # The s run's student had not been logged (--log-models picks): logged from its folder.
    assert student_model_id(client, runs["tiny-qwen2-s"]) == s.source.removeprefix("models:/")
    registered = client.get_registered_model(xs.name)
    assert registered.tags["kdray.experiment"] == EXPERIMENT

    assert analysis_main(["best", "--experiment", EXPERIMENT, "--tracking-uri", uri]) == 0
    out = capsys.readouterr().out
    assert "tiny-qwen2-xs: kdray-optimal-test-tiny-qwen2-xs version 1" in out
    assert "setting: kd T=1.37 σ=1 ce=0.53 lr=0.012 (teacher tiny-qwen2-m, seed 0)" in out
    assert "scores: val 31, test 28" in out
    assert "test mean 43.4 ± 9.1 (95% CI) over 3 seeds" in out
    assert 'mlflow.pyfunc.load_model("models:/kdray-optimal-test-tiny-qwen2-s/1")' in out
    assert f'download_artifacts("runs:/{runs["tiny-qwen2-xs"]}/student/artifacts/hf_model")' in out
    on_disk = [line.split("on disk: ")[1] for line in out.splitlines() if "on disk: " in line]
    assert len(on_disk) == 2 and all("mlartifacts" in path for path in on_disk)

    # A second search's pick is the next version; `best` shows the latest, per --student.
    register_picks(config, uri, parent, _table(runs).iloc[:1], sample_name)
    assert analysis_main(["best", "--experiment", EXPERIMENT, "--tracking-uri", uri,
                          "--student", "tiny-qwen2-xs"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "kdray-optimal-test-tiny-qwen2-xs version 2" in out and "tiny-qwen2-s:" not in out


def test_no_registration_with_log_models_none(store, capsys):
    uri, parent, runs = store
    config = StudyConfig(name="optimal", experiment="kdray-none", log_models="none")
    assert register_picks(config, uri, parent, _table(runs), sample_name) == []
    assert "not registered as MLflow models (--log-models none)" in capsys.readouterr().out


def test_a_pick_whose_folder_is_gone_is_skipped_with_a_line(store, capsys):
    uri, parent, runs = store
    client = MlflowClient(uri)
    experiment_id = client.get_run(parent).info.experiment_id
    gone = client.create_run(experiment_id, tags={MODEL_FOLDER_TAG: "/nonexistent/run-0"})
    table = _table({**runs, "tiny-qwen2-xs": gone.info.run_id}).iloc[:1]
    config = StudyConfig(name="optimal", experiment="kdray-gone", log_models="picks")
    assert register_picks(config, uri, parent, table, sample_name) == []
    assert "tiny-qwen2-xs's pick is not registered" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--experiment", "nope"], "no MLflow experiment 'nope'"),
        (["--experiment", "kdray-empty"], "has no registered picks"),
        (["--experiment", EXPERIMENT, "--student", "tiny-qwen2-xl"], "no registered pick of"),
    ],
)
def test_analysis_best_says_what_is_missing_in_one_line(store, registered, capsys, argv, message):
    uri, _, _ = store
    assert analysis_main(["best", "--tracking-uri", uri, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_analysis_best_on_a_missing_store(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'none.db'}"
    assert analysis_main(["best", "--experiment", EXPERIMENT, "--tracking-uri", uri]) == 2
    assert "no MLflow store at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_log_models_defaults_per_preset_and_is_validated():
    assert config_from_flags("temperature").log_models == "all"
    assert config_from_flags("optimal").log_models == "all"  # tiny: every trial's, kilobytes
    assert config_from_flags("optimal", ["--log-models", "none"]).log_models == "none"
    assert config_from_flags("optimal", ["--preset", "paper"]).log_models == "picks"
    with pytest.raises(ConfigError, match="--log-models must be one of all, picks, none"):
        dataclasses.replace(StudyConfig(), log_models="some")
    assert registered_name("optimal", "qwen2.5-0.5b") == "kdray-optimal-qwen2.5-0.5b"
    assert registered_name("kdray-optimal", "a/b c") == "kdray-optimal-a-b-c"


def test_a_pick_the_registry_refuses_is_one_line_and_the_others_are_registered(
    store, registered, capsys, monkeypatch
):
    import kdray.study.picks as picks

    uri, parent, runs = store
    real = picks.register_student

    def refusing(tracking_uri, name, *args, **kwargs):
        if name.endswith("tiny-qwen2-xs"):
            raise RuntimeError("registry is read-only\nsecond line")
        return real(tracking_uri, name, *args, **kwargs)

    monkeypatch.setattr(picks, "register_student", refusing)
    config = StudyConfig(name="optimal", experiment=EXPERIMENT, log_models="picks")
    versions = register_picks(config, uri, parent, _table(runs), sample_name)
    out = capsys.readouterr().out
    assert [v.name for v in versions] == ["kdray-optimal-test-tiny-qwen2-s"]
    assert "tiny-qwen2-xs's pick is not registered: RuntimeError: registry is read-only\n" in out
