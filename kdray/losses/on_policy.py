"""GKD's on-policy batches: the student samples responses to the batch's prompts (at the
trial's temperature) and those sequences replace the data's responses."""

from __future__ import annotations

import random

import torch

from kdray.data.batches import EncodedExample, collate


def draw_on_policy(rng: random.Random, fraction: float) -> bool:
    """With probability `fraction` (lambda) a micro-batch is replaced; never when it is 0."""
    return fraction > 0 and rng.random() < fraction


@torch.no_grad()
def sample_batch(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    pad_token_id: int,
    eos_token_id: int,
    temperature: float,
    max_new_tokens: int,
    loss_tokens: str,
    synced_gpus: bool = False,
) -> dict[str, torch.Tensor]:
    """A batch of the same prompts with the student's sampled responses (ending with EOS when
    sampled), collated like training data."""
    prompts = [
        ids[:length].tolist()
        for ids, length in zip(batch["input_ids"], batch["prompt_lengths"], strict=True)
    ]
    width = max(len(p) for p in prompts)
    device = batch["input_ids"].device
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long, device=device)
    attention = torch.zeros_like(input_ids)
    for row, prompt in enumerate(prompts):  # left padding for generation
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, device=device)
        attention[row, width - len(prompt) :] = 1
    was_training = model.training
    model.eval()
    output = model.generate(
        input_ids=input_ids,
        attention_mask=attention,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        max_new_tokens=max_new_tokens,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        synced_gpus=synced_gpus,
    )
    model.train(was_training)
    examples = []
    for prompt, sampled in zip(prompts, output[:, width:].tolist(), strict=True):
        if eos_token_id in sampled:
            sampled = sampled[: sampled.index(eos_token_id) + 1]
        else:
            sampled = [t for t in sampled if t != pad_token_id]
        examples.append(EncodedExample(tuple(prompt + sampled), len(prompt)))
    return {k: v.to(device) for k, v in collate(examples, pad_token_id, loss_tokens).items()}
