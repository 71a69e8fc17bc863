"""The real path end to end on the tiny world: Ray Tune -> Ray Train -> DeepSpeed -> MLflow
-> analysis, through the study script as a user runs it (--smoke): the `smoke` fixture
(conftest.py) is the session's one smoke study, submitted as a Ray job (test_ray_job.py)."""

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from analysis.loader import load_mlflow_results
from conftest import PLANTED_TOKEN, REPO, free_port, wait_for_http
from kdray.tracking.server import server_command, server_env

SMOKE_TRIALS = 2 * (1 + 2)  # 2 students x (sft + kd and revkd at one temperature)


def _study_runs(uri):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("kdray.role") == "study"]
    return client, parents, runs


def test_one_parent_and_exactly_one_child_run_per_trial(smoke):
    _, uri, _ = smoke
    client, parents, runs = _study_runs(uri)
    assert len(parents) == 1
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == SMOKE_TRIALS
    assert len({r.data.tags["kdray.trial_key"] for r in children}) == SMOKE_TRIALS
    assert {r.info.status for r in children} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["trials"] == SMOKE_TRIALS
    methods = sorted(r.data.params["method"] for r in children)
    assert methods == ["kd", "kd", "revkd", "revkd", "sft", "sft"]
    # MLflow 3's UI opens a model-training experiment on its runs, not on the GenAI view.
    experiment = client.get_experiment_by_name("kdray-temperature-smoke")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_child_runs_hold_config_curve_metrics_versions_and_predictions(smoke, tmp_path):
    _, uri, _ = smoke
    client, parents, runs = _study_runs(uri)
    kd_run = next(r for r in runs if r.data.params.get("method") == "kd")
    params = kd_run.data.params
    assert params["config.kd.temperature"] == "2.0" and params["temperature"] == "2.0"
    assert kd_run.data.tags["kdray.seed"] == params["seed"]  # the replicate: a param and a tag
    assert params["config.train.zero_stage"] == "0"
    assert params["version.deepspeed"] == "0.19.8" and params["version.ray"] == "2.60.0"
    curve = client.get_metric_history(kd_run.info.run_id, "train_loss")
    assert sorted(point.step for point in curve) == list(range(1, 21))
    for metric in ("accuracy", "score", "val_accuracy", "agreement", "fidelity"):
        assert 0.0 <= kd_run.data.metrics[metric] <= 100.0
    metrics = kd_run.data.metrics  # the teacher-forced held-out metrics
    assert metrics["nll"] > 0 and metrics["val_nll"] > 0 and metrics["kl_teacher_student"] >= 0
    assert 0.0 <= metrics["answer_token_accuracy"] <= 100.0
    assert "/bases/tiny-qwen2-" in params["config.init_dir"]  # from its pretrained base
    for run in runs:  # every trial samples its CPU and memory use (MLflow system metrics)
        if run.data.tags.get("kdray.role") == "trial":
            system = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
            assert system and all(0 <= point.value <= 100 * 64 for point in system)
    tasks = params["tasks"].split(",")
    assert tasks == ["arith-1step", "arith-2step", "arith-3step"]
    assert {f"score/{task}" for task in tasks} <= set(kd_run.data.metrics)
    assert params["vocab_compared"] == params["student_lm_head_width"]  # same width here
    path = client.download_artifacts(kd_run.info.run_id, "predictions.json", str(tmp_path))
    records = json.loads(open(path).read())
    assert len(records) == 40
    assert {"task", "response", "predicted", "gold", "score", "teacher_response"} <= set(records[0])


def test_every_run_logs_the_data_it_read_as_mlflow_datasets(smoke):
    _, uri, _ = smoke
    _, parents, runs = _study_runs(uri)
    trials = [r for r in runs if r.data.tags.get("kdray.role") == "trial"]

    def splits(run):
        found = {}
        for entry in run.inputs.dataset_inputs:
            context = {t.key: t.value for t in entry.tags}["mlflow.data.context"]
            found[context] = entry.dataset
        return found

    world = splits(parents[0])  # the study's whole world, once on the parent
    assert set(world) == {"training", "validation", "evaluation"}
    for run in trials:
        mine = splits(run)
        assert set(mine) == set(world)
        for context, dataset in mine.items():
            assert json.loads(dataset.source)["uri"] == json.loads(world[context].source)["uri"]
            assert dataset.name.endswith(("-train", "-validation", "-test"))
        sizes = {c: json.loads(d.profile)["num_rows"] for c, d in mine.items()}
        whole = {c: json.loads(d.profile)["num_rows"] for c, d in world.items()}
        params = run.data.params  # each run's splits cut to the items it used
        used = params["config.train.train_examples"]
        assert sizes["training"] == (whole["training"] if used == "None" else
                                     min(int(used), whole["training"]))  # fmt: skip
        assert sizes["evaluation"] == int(params["config.eval.max_items"]) == 40
    # the same data gives the same digest in every trial (the UI groups and filters by it)
    assert len({splits(r)["training"].digest for r in trials}) == 1


def test_analysis_reads_the_runs_back_and_writes_table_and_figure(smoke):
    workdir, uri, stdout = smoke
    _, parents, _ = _study_runs(uri)
    frame = load_mlflow_results(uri, parents[0].info.run_id)
    assert len(frame[frame["role"] == "student"]) == SMOKE_TRIALS * 3  # one row per task
    assert len(frame[frame["role"] == "teacher"]) == 3
    assert set(frame["metric"]) == {"accuracy"}
    results = workdir / "results" / "temperature-smoke"
    assert (results / "accuracy_by_method.png").stat().st_size > 10_000  # one T in --smoke
    table = (results / "results.md").read_text()
    assert "| student" in table and "improvement" in table and "Teacher accuracy" in table
    assert "all tasks" in table and (results / "results_by_task.csv").is_file()
    assert table.strip() in stdout  # the same table is printed
    assert "mlflow ui --backend-store-uri" in stdout


def test_rescoring_reproduces_the_trials_own_held_out_metrics(smoke):
    """benchmarks/rescore.py scores each kept student again with the trials' own code: on runs
    that have every metric it adds none, and what it recomputes matches what they logged."""
    workdir, uri, _ = smoke
    _, _, runs = _study_runs(uri)
    split = [r for r in runs if "nll_teacher_unsure" in r.data.metrics]
    assert split and all(r.data.metrics["nll_teacher_sure"] >= 0 for r in split)
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "rescore.py"), "--store", uri,
         "--experiment", "kdray-temperature-smoke"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"[kdray] 0 of {SMOKE_TRIALS} runs rescored, 0 without"), summary
    drift = float(summary.split("largest |recomputed - logged| ")[1].split(",")[0])
    assert drift < 1e-4, summary


def test_the_study_ends_with_its_statistics_report_and_the_cli_rebuilds_it(smoke, tmp_path):
    workdir, uri, stdout = smoke
    client, parents, _ = _study_runs(uri)
    parent = parents[0].info.run_id
    report = workdir / "results" / "temperature-smoke" / "report"
    tests = pd.read_csv(report / "tests.csv")
    # 2 students x kd and revkd: 4 observations per task (3 tasks + Average)
    headline = tests[(tests["test"] == "ttest_improvement") & (tests["group"] == "all")]
    assert set(headline["task"]) == {"arith-1step", "arith-2step", "arith-3step", "Average"}
    assert set(headline["n"]) == {4}
    assert {"anova_methods", "spearman_student_size"} <= set(tests["test"])
    assert "[kdray] KD improvement over SFT" in stdout  # the headline (smoke scores may tie)
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.md", "report/report.html", "report/tests.csv"} <= logged

    # The same report from the experiment, as a user runs it afterwards
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--experiment", "kdray-temperature-smoke",
         "--tracking-uri", uri, "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    again = pd.read_csv(out / "tests.csv")
    pd.testing.assert_frame_equal(again, tests)  # the same rows give the same statistics
    assert "logged to the study runs" in result.stdout


def test_no_environment_secret_reaches_mlflow(smoke, tmp_path):
    """A token planted in the environment is in no param, tag, metric name or artifact."""
    _, uri, _ = smoke
    client, _, runs = _study_runs(uri)
    for run in runs:
        data = run.data
        texts = [*data.params.values(), *data.tags.values(), *data.params, *data.metrics]
        assert not any(PLANTED_TOKEN in str(text) for text in texts), run.info.run_name
        folder = tmp_path / run.info.run_id
        folder.mkdir()
        if client.list_artifacts(run.info.run_id):
            client.download_artifacts(run.info.run_id, "", str(folder))
        for path in folder.rglob("*"):
            if path.is_file():
                assert PLANTED_TOKEN.encode() not in path.read_bytes(), path


def test_each_trial_logs_the_student_it_evaluated_as_an_mlflow_model(smoke):
    """--log-models all (the tiny preset's default): every trial run has its student as an
    MLflow model, the exported folder byte for byte, kilobytes, no secret in it; loaded as a
    pyfunc it answers the test items as the run's predictions.json says."""
    import mlflow

    from kdray.tracking.models import HF_FOLDER, MODEL_FOLDER_TAG, student_model_id

    _, uri, _ = smoke
    client, parents, runs = _study_runs(uri)
    assert parents[0].data.params["config.log_models"] == "all"
    trials = [r for r in runs if r.data.tags.get("kdray.role") == "trial"]
    sizes = []
    for run in trials:
        model_id = student_model_id(client, run.info.run_id)
        assert model_id and "kdray.model_error" not in run.data.tags, run.info.run_name
        location = client.get_logged_model(model_id).artifact_location.removeprefix("file://")
        files = [p for p in Path(location).rglob("*") if p.is_file()]
        sizes.append(sum(p.stat().st_size for p in files))
        assert not any(PLANTED_TOKEN.encode() in p.read_bytes() for p in files)
        exported = Path(run.data.tags[MODEL_FOLDER_TAG])  # what rank 0 evaluated
        weights = Path(location) / HF_FOLDER / "model.safetensors"
        assert weights.read_bytes() == (exported / "model.safetensors").read_bytes()
    print(f"logged students: {min(sizes)} to {max(sizes)} bytes each")
    assert max(sizes) < 2_000_000  # the tiny world's students are kilobytes

    def evaluated(run):
        return json.loads(Path(run.data.tags[MODEL_FOLDER_TAG], "predictions.json").read_text())

    # The student that says the most (a smoke student may answer nothing at all).
    run = max(trials, key=lambda r: sum(bool(p["response"]) for p in evaluated(r)))
    params = run.data.params
    items = json.loads((Path(params["config.data_dir"]) / "test.json").read_text())
    items = items[: int(params["config.eval.max_items"])]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/student")
    batch = int(params["config.eval.batch_size"])  # the evaluation's batches: the same padding
    answers = []
    for start in range(0, len(items), batch):
        chunk = items[start : start + batch]
        answers += model.predict(pd.DataFrame(chunk)[["instruction", "input"]])
    same = sum(a == e["response"] for a, e in zip(answers, evaluated(run), strict=True))
    assert same >= 0.9 * len(items), f"{same} of {len(items)} answers as evaluated"
    assert any(answers), "no student of the smoke study answers anything"


def test_second_run_reuses_world_and_teacher(smoke, shared_cache):
    _, _, stdout = smoke
    assert "tiny math world, qwen family" in stdout and "teacher" in stdout
    # Hidden entries are the builders' lock files. The session's cache also holds another
    # domain's world and teacher (tests/e2e/test_domains_study.py): the math ones are counted.
    worlds = [p for p in (shared_cache / "worlds").iterdir() if p.name.startswith("math-")]
    teachers = [
        p for p in (shared_cache / "teachers").iterdir()
        if not p.name.startswith(".")
        and "score/arith-1step" in json.loads((p / "metrics.json").read_text())
    ]  # fmt: skip
    assert len(worlds) == 1 and len(teachers) == 1


def test_the_mlflow_ui_serves_the_runs_nested_with_their_metrics(smoke):
    """The real tracking server on the study's store: the UI page loads and its REST API (what
    the UI draws from) lists the parent, its children and their curves."""
    workdir, uri, _ = smoke
    port = free_port()
    server = subprocess.Popen(
        server_command(uri, port=port), cwd=workdir, env=server_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/health")
        page = urllib.request.urlopen(base, timeout=10).read().decode()
        assert "<title>MLflow</title>" in page

        def api(path, body=None, **query):
            url = f"{base}/api/2.0/mlflow/{path}?{urllib.parse.urlencode(query)}"
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"}
            request = urllib.request.Request(url, data=data, headers=headers)  # POST with a body
            return json.loads(urllib.request.urlopen(request, timeout=10).read())

        experiment = api("experiments/get-by-name", experiment_name="kdray-temperature-smoke")
        ids = [experiment["experiment"]["experiment_id"]]
        runs = api("runs/search", {"experiment_ids": ids, "max_results": 100})["runs"]
        tags = [{t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs]
        (parent,) = [r for r, t in zip(runs, tags, strict=True) if t["kdray.role"] == "study"]
        parent_id = parent["info"]["run_id"]
        children = [
            (r, t)
            for r, t in zip(runs, tags, strict=True)
            if t.get("mlflow.parentRunId") == parent_id
        ]
        assert len(children) == SMOKE_TRIALS
        names = {t["mlflow.runName"] for _, t in children}
        assert "kd T=2 σ=0 tiny-qwen2-s ← tiny-qwen2-m" in names and "sft tiny-qwen2-xs" in names
        run, run_tags = next((r, t) for r, t in children if t["mlflow.runName"].startswith("kd"))
        assert run_tags["kdray.preset"] == "tiny" and run_tags["kdray.domain"] == "math"
        assert run_tags["version.ray"] == "2.60.0" and run_tags["kdray.git_commit"]
        metrics = {m["key"] for m in run["data"]["metrics"]}
        assert {"accuracy", "average", "agreement", "fidelity", "teacher_score"} <= metrics
        for curve in ("train_loss", "lr", "tokens_per_second"):
            history = api("metrics/get-history", run_id=run["info"]["run_id"], metric_key=curve)
            assert history["metrics"], curve
    finally:
        server.terminate()
        server.wait(timeout=30)
