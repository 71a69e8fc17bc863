"""A study's summary, computed from its runs read back out of MLflow: results table
(Markdown and CSV) and figure, both also logged to the study's parent run."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from analysis.figures import study_figure
from analysis.loader import load_mlflow_results
from analysis.replicates import replicates_markdown, replicates_table
from analysis.study_report import write_report
from analysis.tables import (
    across_tasks,
    largest_gap_student,
    results_table,
    teacher_accuracy,
    to_markdown,
)
from kdray.tracking.runs import RunLogger


def write_study_summary(tracking_uri: str, parent_run_id: str, out_dir: Path) -> str:
    """Write results.md and results.csv (scores averaged over the domain's tasks),
    results_by_task.csv, runs.csv (the tidy rows) and the figure of what the study varies
    (analysis.figures.study_figure); print the table and how to browse the runs; return the
    Markdown."""
    by_task = load_mlflow_results(tracking_uri, parent_run_id)
    frame = across_tasks(by_task)
    table = results_table(frame)
    teacher = teacher_accuracy(frame)
    gap_student = largest_gap_student(frame)
    lines = [f"# Results of study run {parent_run_id}", ""]
    rouge = "metric" in frame and (frame["metric"] == "rouge_l").any()
    if rouge:
        lines += ["Scores are ROUGE-L F x 100 (instruction following), in the accuracy column.", ""]
    metric = "ROUGE-L" if rouge else "accuracy"
    teachers = frame[frame["role"] == "teacher"]
    if teachers["teacher_kind"].nunique() > 1:  # a study comparing teacher kinds: one line each
        for kind, rows in teachers.groupby("teacher_kind"):
            for task, value in teacher_accuracy(rows).items():
                lines.append(f"Teacher ({kind}) {metric} on {task}: {value:.1f}")
    else:
        for task, value in teacher.items():
            lines.append(f"Teacher {metric} on {task}: {value:.1f}")
    if gap_student:
        lines.append(f"Largest teacher-SFT gap: {gap_student}")
    lines += ["", to_markdown(table), "", replicates_markdown(by_task), ""]
    markdown = "\n".join(lines)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.md").write_text(markdown)
    table.to_csv(out_dir / "results.csv", index=False)
    replicates_table(by_task).to_csv(out_dir / "replicates.csv", index=False)
    results_table(by_task).to_csv(out_dir / "results_by_task.csv", index=False)
    by_task.to_csv(out_dir / "runs.csv", index=False)
    figure = study_figure(frame, out_dir)
    logger = RunLogger(tracking_uri, parent_run_id)
    for name in ("results.md", "results.csv", "replicates.csv", "results_by_task.csv", "runs.csv"):
        logger.log_file(out_dir / name, "analysis")
    logger.log_file(figure, "analysis")
    # The study's statistics (t-tests, ANOVA, Spearman, ablations) from the same rows.
    report = write_report(by_task, out_dir / "report", source=f"study run {parent_run_id}")
    logger.log_dir(out_dir / "report", "report")
    print(markdown, flush=True)
    print(f"[kdray] {report.headline}", flush=True)
    print(
        f"[kdray] table and figure written to {out_dir.resolve()}/; statistics report: "
        f"{report.markdown.resolve()} (and report.html, tests.csv)",
        flush=True,
    )
    print(browse_hint(tracking_uri, parent_run_id), flush=True)
    return markdown


def browse_hint(tracking_uri: str, parent_run_id: str) -> str:
    """Where to see the runs. MLflow 3.17's UI opens an experiment on its GenAI view whatever
    the experiment's kind tag says, so the link asks for the runs (training) view itself."""
    experiment_id = MlflowClient(tracking_uri).get_run(parent_run_id).info.experiment_id
    server = tracking_uri if tracking_uri.startswith(("http://", "https://")) else None
    page = f"{(server or 'http://127.0.0.1:5000').rstrip('/')}/"
    if experiment_id:
        page += f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if server:
        where = f"open {page}"
    else:
        where = (
            f"run `mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port 5000` "
            f"and open {page}"
        )
    return f"[kdray] browse the runs in MLflow: {where} (study parent run {parent_run_id})"
