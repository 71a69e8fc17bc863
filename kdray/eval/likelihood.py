"""Teacher-forced metrics on held-out references: continuous, so they separate settings that
greedy accuracy on a few hundred items cannot.

- `nll`: the student's mean negative log-likelihood per response token (EOS included) of the
  reference responses; needs no teacher.
- `answer_token_accuracy`: the share of the answer's tokens, where the answer first appears in
  the reference response (in math: where the last step computes it, not the "The answer is"
  line that copies it), that the student's argmax predicts given the reference up to each of
  them (100 = every answer token right).
- `kl_teacher_student`: mean KL(teacher || student) per response token at T = 1, when a
  teacher is given (the fidelity the KD loss optimises, measured on held-out text).
- `nll_teacher_unsure` / `nll_teacher_sure`: `nll` over the response tokens where the teacher's
  entropy is above / at most UNSURE_NATS, when a teacher is given. In the tiny math world the
  unsure ones are the rationale's arbitrary choices (wording, operand order, whether an item is
  named: 24% of the tokens): where a teacher has something to pass on beyond the reference;
  the sure ones are the arithmetic."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from kdray.data.prompts import format_prompt

UNSURE_NATS = 0.1
"""A teacher's entropy above this at a position: it spreads its belief over several tokens."""


def _answer_span(record: dict[str, str], prompt: str) -> tuple[int, int] | None:
    """Character span of the answer's first whole-word occurrence inside prompt + output
    (None if it does not occur)."""
    answer = record.get("answer", "").strip()
    found = re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", record["output"]) if answer else None
    if found is None:
        return None
    return len(prompt) + found.start(), len(prompt) + found.end()


def _encode(records: Sequence[dict[str, str]], tokenizer) -> list[tuple[list[int], int, set[int]]]:
    """(ids + EOS, prompt length in tokens, positions of answer tokens) per record."""
    encoded = []
    for record in records:
        prompt = format_prompt(record)
        full = tokenizer(prompt + record["output"], add_special_tokens=False,
                         return_offsets_mapping=True)  # fmt: skip
        prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        span = _answer_span(record, prompt)
        answer = set()
        if span:
            answer = {
                i for i, (a, b) in enumerate(full["offset_mapping"]) if a < span[1] and b > span[0]
            }
        encoded.append(([*full["input_ids"], tokenizer.eos_token_id], prompt_length, answer))
    return encoded


@torch.no_grad()
def held_out_metrics(
    model: torch.nn.Module,
    tokenizer,
    records: Sequence[dict[str, str]],
    teacher: torch.nn.Module | None = None,
    batch_size: int = 64,
    teacher_rows: list[torch.Tensor] | None = None,
) -> dict[str, float]:
    """nll, answer_token_accuracy and (with a teacher) kl_teacher_student over `records`.

    `teacher_rows`: the teacher's log-probs at the scored positions, one tensor per batch, as
    an earlier call on the same records and batch size left them: read when it holds them,
    filled when it is empty (the teacher's forward is then skipped for later students)."""
    device = next(model.parameters()).device
    vocab = len(tokenizer)
    totals = {"nll": 0.0, "kl": 0.0, "tokens": 0, "answer_right": 0, "answer_tokens": 0,
              "unsure_nll": 0.0, "unsure_tokens": 0}  # fmt: skip
    encoded = _encode(records, tokenizer)
    reuse = bool(teacher_rows)
    computed: list[torch.Tensor] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start : start + batch_size]
        width = max(len(ids) for ids, _, _ in chunk)
        input_ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
        scored = torch.zeros((len(chunk), width), dtype=torch.bool)  # targets at position t
        answer = torch.zeros((len(chunk), width), dtype=torch.bool)
        for row, (ids, prompt_length, answer_positions) in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids)
            scored[row, prompt_length : len(ids)] = True
            answer[row, sorted(answer_positions)] = True
        attention = torch.arange(width)[None] < torch.tensor([len(c[0]) for c in chunk])[:, None]
        input_ids, attention = input_ids.to(device), attention.long().to(device)
        logits = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1, :vocab]
        targets, mask = input_ids[:, 1:], scored[:, 1:].to(device)
        log_q = F.log_softmax(logits.float(), dim=-1)
        nll = -log_q.gather(-1, targets[..., None])[..., 0]
        scored_nll = nll[mask]
        totals["nll"] += scored_nll.sum().item()
        totals["tokens"] += int(mask.sum())
        answer_mask = answer[:, 1:].to(device) & mask
        right = logits.argmax(-1) == targets
        totals["answer_right"] += int(right[answer_mask].sum())
        totals["answer_tokens"] += int(answer_mask.sum())
        if teacher is not None or reuse:
            if reuse:
                log_p = teacher_rows[start // batch_size]
            else:
                teacher_logits = teacher(input_ids=input_ids, attention_mask=attention).logits
                log_p = F.log_softmax(teacher_logits[:, :-1, :vocab].float(), dim=-1)[mask]
                computed.append(log_p)
            p = log_p.exp()
            kl = (p * (log_p - log_q[mask])).sum(-1)
            totals["kl"] += kl.sum().item()
            unsure = -(p * log_p).sum(-1) > UNSURE_NATS
            totals["unsure_nll"] += scored_nll[unsure].sum().item()
            totals["unsure_tokens"] += int(unsure.sum())
    if teacher_rows is not None and not reuse:  # complete: an interrupted call leaves none
        teacher_rows.extend(computed)
    metrics = {
        "nll": totals["nll"] / max(1, totals["tokens"]),
        "answer_token_accuracy": 100.0 * totals["answer_right"] / max(1, totals["answer_tokens"]),
    }
    if teacher is not None or reuse:
        metrics["kl_teacher_student"] = totals["kl"] / max(1, totals["tokens"])
        unsure, sure = totals["unsure_tokens"], totals["tokens"] - totals["unsure_tokens"]
        metrics["nll_teacher_unsure"] = totals["unsure_nll"] / unsure if unsure else math.nan
        metrics["nll_teacher_sure"] = (
            (totals["nll"] - totals["unsure_nll"]) / sure if sure else math.nan
        )
    return metrics
