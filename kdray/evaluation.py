"""Evaluation on a held-out split: greedy generation, answer extraction, accuracy, and the
teacher-student agreement and BLEU reasoning fidelity of the study."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import sacrebleu
import torch
from transformers import PreTrainedTokenizerBase

from kdray.answers import last_number, same_number
from kdray.config import EvalConfig
from kdray.prompts import format_prompt


@dataclass(frozen=True)
class Prediction:
    """One evaluated item."""

    index: int
    response: str
    predicted: float | None
    gold: float
    correct: bool


@torch.no_grad()
def generate_responses(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[dict[str, str]],
    config: EvalConfig,
) -> list[str]:
    """Greedy responses to the study's prompt, decoded without the prompt."""
    model.eval()
    tokenizer.padding_side = "left"
    device = next(model.parameters()).device
    responses: list[str] = []
    for start in range(0, len(examples), config.batch_size):
        prompts = [format_prompt(e) for e in examples[start : start + config.batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {k: v.to(device) for k, v in batch.items()}
        output = model.generate(
            **batch,
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [r.strip() for r in responses]


def score_responses(
    examples: Sequence[dict[str, str]], responses: Sequence[str]
) -> list[Prediction]:
    predictions = []
    for index, (example, response) in enumerate(zip(examples, responses, strict=True)):
        gold = float(example["answer"])
        predicted = last_number(response)
        predictions.append(
            Prediction(index, response, predicted, gold, same_number(predicted, gold))
        )
    return predictions


def accuracy(predictions: Sequence[Prediction]) -> float:
    """Percent of items answered correctly."""
    return 100.0 * sum(p.correct for p in predictions) / len(predictions)


def agreement(student: Sequence[Prediction], teacher: Sequence[Prediction]) -> float:
    """Percent of items where the student's final answer equals the teacher's."""
    pairs = list(zip(student, teacher, strict=True))
    return 100.0 * sum(same_number(s.predicted, t.predicted) for s, t in pairs) / len(pairs)


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
