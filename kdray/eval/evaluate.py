"""A trained model scored on its run's validation and test splits, with agreement and fidelity
against the teacher's test predictions."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from kdray.config.run import score_metric
from kdray.config.run_spec import RunSpec
from kdray.data.examples import read_split
from kdray.eval.likelihood import held_out_metrics
from kdray.eval.responses import (
    agreement,
    fidelity,
    generate_responses,
    mean_score,
    predictions_from_records,
    predictions_to_records,
    score_responses,
    task_scores,
)

PREDICTIONS_FILE = "predictions.json"


HELD_OUT_ROWS_LIMIT = 256 * 2**20
"""Bytes of teacher log-probs on the test items a worker keeps between evaluations."""
_held_out_rows: dict[tuple, list[torch.Tensor]] = {}


def teacher_rows_memo(spec: RunSpec, tokenizer, test) -> list[torch.Tensor] | None:
    """The eval teacher's log-probs on the test items, kept in this process: a Train worker
    evaluates a setting's seeds one after another on the same items with the same teacher,
    whose forward was a third of each evaluation. None (compute and drop them) when they
    could exceed HELD_OUT_ROWS_LIMIT: a hub vocabulary over 1,000 responses would."""
    # A token is at least one character: an upper bound on the scored positions.
    positions = sum(len(record["output"]) + 1 for record in test)
    if positions * len(tokenizer) * 4 > HELD_OUT_ROWS_LIMIT:
        return None
    key = (spec.eval_teacher_dir, spec.data_dir, len(test), spec.eval.batch_size)
    if key not in _held_out_rows:
        _held_out_rows.clear()  # one teacher and test set at a time
        _held_out_rows[key] = []
    return _held_out_rows[key]


def likelihood_metrics(spec: RunSpec, model, tokenizer, validation, test) -> dict[str, float]:
    """Teacher-forced metrics on the references: test `nll`, `answer_token_accuracy` and (with
    the study's teacher) `kl_teacher_student`; `val_nll` for searches and early choices."""
    teacher, rows = None, None
    if spec.eval_teacher_dir:
        rows = teacher_rows_memo(spec, tokenizer, test)
        if not rows:
            from kdray.models import load_model

            teacher = load_model(spec.eval_teacher_dir, next(model.parameters()).device)
    metrics = held_out_metrics(model, tokenizer, test, teacher, spec.eval.batch_size, rows)
    metrics["val_nll"] = held_out_metrics(model, tokenizer, validation)["nll"]
    return metrics


def evaluate(spec: RunSpec, model: torch.nn.Module, tokenizer, out_dir: Path) -> dict[str, float]:
    """Score on validation and test (accuracy, or ROUGE-L for instruction following), per
    task as `score/<task>`; agreement and fidelity against the teacher's test outputs when
    they are known. Writes the test predictions to out_dir."""
    started = time.perf_counter()
    metric = score_metric(spec.domain)
    metrics: dict[str, float] = {}
    validation = read_split(spec.data_dir, "validation")[: spec.eval.max_items]
    responses = generate_responses(model, tokenizer, validation, spec.eval)
    metrics[f"val_{metric}"] = mean_score(score_responses(validation, responses, spec.domain))
    metrics["val_score"] = metrics[f"val_{metric}"]  # the name a search compares trials on
    test = read_split(spec.data_dir, "test")[: spec.eval.max_items]
    responses = generate_responses(model, tokenizer, test, spec.eval)
    predictions = score_responses(test, responses, spec.domain)
    metrics["score"] = metrics[metric] = mean_score(predictions)
    per_task = task_scores(predictions)
    metrics.update({f"score/{task}": v for task, v in per_task.items()})
    metrics["average"] = sum(per_task.values()) / len(per_task)  # unweighted over tasks
    metrics.update(likelihood_metrics(spec, model, tokenizer, validation, test))
    teacher = None
    if spec.teacher_predictions:
        records = json.loads(Path(spec.teacher_predictions).read_text())
        teacher = predictions_from_records(records)[: len(predictions)]
        metrics["teacher_score"] = mean_score(teacher)  # on the same items
        metrics["agreement"] = agreement(predictions, teacher, spec.domain)
        metrics["fidelity"] = fidelity(predictions, teacher)
    records = predictions_to_records(predictions, teacher)
    (out_dir / PREDICTIONS_FILE).write_text(json.dumps(records, indent=1))
    metrics["eval_seconds"] = time.perf_counter() - started
    return metrics
