"""The other domains and the Llama family through the real path (Ray Tune -> Ray Train ->
DeepSpeed -> MLflow -> analysis): commonsense multiple choice with a task-unaware Llama
teacher and LoRA students, and instruction following scored with ROUGE-L under the study's
sampling, its task-aware teacher trained in a cache that holds the math world's."""

from mlflow.tracking import MlflowClient

from analysis.loader import load_mlflow_results
from conftest import run_study_script


def _runs(workdir, experiment_name):
    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(experiment_name)
    runs = client.search_runs([experiment.experiment_id])
    parent = next(r for r in runs if r.data.tags.get("kdray.role") == "study")
    trials = [r for r in runs if r.data.tags.get("kdray.role") == "trial"]
    return client, parent, trials


def test_commonsense_llama_lora_with_a_task_unaware_teacher(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache-commonsense")
    result = run_study_script(
        "--smoke", "--domain", "commonsense", "--family", "llama", "--finetune", "lora",
        "--teacher-kind", "task-unaware", "--students", "tiny-llama-xs", "--methods", "kd",
        "--eval-every", "10",
        "--experiment", "kdray-commonsense", "--cache-dir", str(cache),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "task-unaware teacher tiny-llama-m" in result.stdout
    client, parent, trials = _runs(tmp_path, "kdray-commonsense")
    assert parent.data.params["teacher_kind"] == "task-unaware"
    assert parent.data.params["family"] == "llama"
    tasks = parent.data.params["tasks"].split(",")
    assert len(tasks) >= 5 and all(f"teacher_score/{t}" in parent.data.metrics for t in tasks)
    assert sorted(r.data.params["method"] for r in trials) == ["kd", "sft"]
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        assert run.info.status == "FINISHED"
        assert params["domain"] == "commonsense" and params["finetune"] == "lora"
        assert params["config.train.lora_rank"] == "8"
        assert 0 < metrics["trainable_parameters"] < 20_000  # adapters only (model: 27k+)
        assert all(0 <= metrics[f"score/{t}"] <= 100 for t in tasks)
        assert metrics["best_step"] in (10, 20)  # best validation loss of steps 10 and 20
        curve = client.get_metric_history(run.info.run_id, "val_loss")
        assert sorted(p.step for p in curve) == [10, 20]
        assert metrics["best_val_loss"] == min(p.value for p in curve)
    kd = next(r for r in trials if r.data.params["method"] == "kd")
    assert kd.data.params["teacher_kind"] == "task-unaware"
    frame = load_mlflow_results(f"sqlite:///{tmp_path / 'mlflow.db'}", parent.info.run_id)
    assert set(frame["task"]) == set(tasks) and len(frame) == 3 * len(tasks)


def test_instruction_following_scored_with_rouge_l_under_sampling(tmp_path, smoke, shared_cache):
    """In the session's cache, where the --smoke study (`smoke`) trained the math world's
    task-aware tiny-qwen2-m: this study's teacher of the same name must be its own, trained
    on the instruction world (Ray Train restores a run by name, and once handed back the math
    teacher, whose smaller vocabulary then broke the teacher cache)."""
    result = run_study_script(
        "--smoke", "--domain", "instruction", "--students", "tiny-qwen2-xs", "--methods", "kd",
        "--decoding", "sampling", "--experiment", "kdray-instruction",
        "--cache-dir", str(shared_cache),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "task-aware teacher tiny-qwen2-m: test ROUGE-L" in result.stdout
    _, parent, trials = _runs(tmp_path, "kdray-instruction")
    metrics = parent.data.metrics
    assert "teacher_rouge_l" in metrics and "teacher_accuracy" not in metrics
    assert {"teacher_score/copy", "teacher_score/reverse"} <= set(metrics)  # not arith-1step
    for run in trials:
        assert run.data.params["config.eval.decoding"] == "sampling"
        assert 0 <= run.data.metrics["rouge_l"] <= 100 and "accuracy" not in run.data.metrics
    frame = load_mlflow_results(f"sqlite:///{tmp_path / 'mlflow.db'}", parent.info.run_id)
    assert set(frame["metric"]) == {"rouge_l"}
    assert "ROUGE-L" in (tmp_path / "results" / "temperature-smoke" / "results.md").read_text()
