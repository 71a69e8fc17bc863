"""Evaluation on a held-out split: generation (greedy or the study's sampling), the study's
answer extraction per task, accuracy (reasoning) or ROUGE-L (instruction following) per task,
and the teacher-student agreement and BLEU reasoning fidelity of the study."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sacrebleu
import torch
from transformers import PreTrainedTokenizerBase

from kdray.config.run import EvalConfig
from kdray.data.prompts import format_prompt
from kdray.eval.answers import ROUGE, answer_kind, answers_match, extract_answer
from kdray.eval.rouge import rouge_l


@dataclass(frozen=True)
class Prediction:
    """One evaluated item."""

    index: int
    task: str
    response: str
    predicted: str | None
    """The extracted answer (None when nothing could be read, or for ROUGE-L tasks)."""
    gold: str
    score: float
    """100 or 0 for an answer that is or is not correct; ROUGE-L F (0-100) for instruction
    following."""


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict[str, str]],
    config: EvalConfig,
    synced_gpus: bool = False,
) -> list[str]:
    """Responses to the study's prompt, decoded without the prompt. `synced_gpus`: every rank
    of a ZeRO-3 group generates (each forward gathers the sharded weights collectively)."""
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    sampling = config.decoding == "sampling"
    if sampling:  # one seed per call: the same model and items give the same samples
        torch.manual_seed(config.sampling_seed)
    decoding = (
        {"do_sample": True, "temperature": config.sampling_temperature, "top_k": config.top_k}
        if sampling
        else {"do_sample": False}
    )
    responses: list[str] = []
    for start in range(0, len(examples), config.batch_size):
        prompts = [format_prompt(e) for e in examples[start : start + config.batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model.generate(
            **batch,
            **decoding,
            max_new_tokens=config.max_new_tokens,
            synced_gpus=synced_gpus,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [r.strip() for r in responses]


def score_responses(
    examples: Sequence[dict[str, str]], responses: Sequence[str], domain: str
) -> list[Prediction]:
    predictions = []
    for index, (example, response) in enumerate(zip(examples, responses, strict=True)):
        gold = str(example["answer"])
        kind = answer_kind(domain, gold)
        task = example.get("task", domain)
        if kind == ROUGE:
            score, predicted = rouge_l(response, gold), None
        else:
            predicted = extract_answer(kind, response)
            score = 100.0 if answers_match(kind, predicted, gold) else 0.0
        predictions.append(Prediction(index, task, response, predicted, gold, score))
    return predictions


def mean_score(predictions: Sequence[Prediction]) -> float:
    """Accuracy (percent) or mean ROUGE-L over the items."""
    return sum(p.score for p in predictions) / len(predictions)


def task_scores(predictions: Sequence[Prediction]) -> dict[str, float]:
    """Mean score per task (sub-task of a synthetic domain, or benchmark)."""
    by_task: dict[str, list[Prediction]] = defaultdict(list)
    for prediction in predictions:
        by_task[prediction.task].append(prediction)
    return {task: mean_score(items) for task, items in sorted(by_task.items())}


def agreement(student: Sequence[Prediction], teacher: Sequence[Prediction], domain: str) -> float:
    """Percent of items where the student's final answer equals the teacher's (for
    instruction following: the same response text)."""
    pairs = list(zip(student, teacher, strict=True))
    same = 0
    for s, t in pairs:
        kind = answer_kind(domain, s.gold)
        if kind == ROUGE:
            same += s.response == t.response
        else:
            same += t.predicted is not None and answers_match(kind, s.predicted, t.predicted)
    return 100.0 * same / len(pairs)


def fidelity(student: Sequence[Prediction], teacher: Sequence[Prediction]) -> float:
    """Corpus BLEU (sacrebleu, 0-100) of the student's rationales against the teacher's."""
    references = [t.response for t in teacher]
    return sacrebleu.corpus_bleu([s.response for s in student], [references]).score


def predictions_to_records(
    predictions: Sequence[Prediction], teacher: Sequence[Prediction] | None = None
) -> list[dict]:
    """Rows for the predictions artifact: the student's and (if given) the teacher's outputs."""
    rows = []
    for position, prediction in enumerate(predictions):
        row = asdict(prediction)
        if teacher is not None:
            row["teacher_response"] = teacher[position].response
            row["teacher_predicted"] = teacher[position].predicted
        rows.append(row)
    return rows


def predictions_from_records(records: Sequence[dict]) -> list[Prediction]:
    fields = Prediction.__dataclass_fields__
    return [Prediction(**{k: v for k, v in r.items() if k in fields}) for r in records]
