"""Pretraining a tiny base model on the world's generic text (kdray.world.pretraining): a plain
PyTorch loop, next-token cross-entropy on every token of each document.

Pretraining is part of building the tiny world (as training its tokenizer is), not a trial:
it runs once per (world, model, seed), cached, in a Ray task of one CPU. Ray Train and
DeepSpeed would add about 20 s of set-up to a run of a few seconds' work and nothing it needs
(one process, no sharding). The schedule is the trials' own (kdray.train.engine)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from kdray.config.run import TrainConfig
from kdray.config.schedule import warmup_then_decay
from kdray.data.batches import IGNORE_INDEX, EncodedExample, collate, length_grouped_batches

StepLoss = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def encode_documents(documents: Sequence[str], tokenizer) -> list[EncodedExample]:
    """Each document + EOS, every token scored (prompt length 0)."""
    encoded = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    return [EncodedExample((*ids, tokenizer.eos_token_id), 0) for ids in encoded]


def language_model_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy over the batch's scored tokens."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return torch.nn.functional.cross_entropy(  # position t predicts token t + 1
        logits[:, :-1].flatten(0, 1).float(),
        batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
    )


def train_plain(
    model: torch.nn.Module,
    examples: Sequence[EncodedExample],
    pad_token_id: int,
    train: TrainConfig,
    step_loss: StepLoss = language_model_loss,
    on_report: Callable[[int, float, float], None] | None = None,
) -> list[tuple[int, float]]:
    """`train.steps` AdamW steps (warm-up, decay to the floor, weight decay, gradient clipping,
    batches drawn from train.seed); returns the curve as (step, mean loss of the last
    `report_every` steps). `on_report(step, loss, seconds)` is called at each report."""
    torch.manual_seed(train.seed)
    batches = length_grouped_batches(examples, train.batch_size, train.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_then_decay(train))
    model.train()
    started, window, curve = time.perf_counter(), [], []
    for step in range(1, train.steps + 1):
        batch = collate([examples[i] for i in next(batches)], pad_token_id)
        loss = step_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
        optimizer.step()
        scheduler.step()
        window.append(loss.item())
        if step % train.report_every == 0 or step == train.steps:
            curve.append((step, sum(window) / len(window)))
            window = []
            if on_report:
                on_report(step, curve[-1][1], time.perf_counter() - started)
    model.eval()
    return curve
