"""Are the synthetic commonsense and instruction domains learnable but not trivial? Train a tiny
model from scratch on one domain with a plain PyTorch loop (the study's data and label code,
response-only cross-entropy, AdamW, 20 warm-up steps then cosine decay) and score greedy
answers on held-out items per sub-task: accuracy (first answer token == gold) for commonsense,
ROUGE-L F x 100 for instruction following.

    python benchmarks/calibrate_domains.py --domain commonsense --model tiny-qwen2-m \
        --steps 1500 --lr 5e-3
    python benchmarks/calibrate_domains.py --domain commonsense --model tiny-qwen2-xs \
        --steps 600 --lr 1e-2 --train-examples 2000

Prints one row per sub-task (model, domain, sub-task, score, steps, seconds: train_s counts
data, tokenizer and training, total_s adds the evaluation) and, with --json, writes them to a
file. One thread by default. `--domain math` runs the tiny preset's math world for reference,
`--set FIELD=VALUE` changes the world's config (e.g. `--set max_hops=1`).

Measured with the defaults (1 thread, 200 test items; scores per sub-task are over 33-40 items,
so +-8 points is noise):

| model (steps, train items, lr) | commonsense accuracy | instruction ROUGE-L |
|---|---|---|
| tiny-qwen2-m (1,500, 16,000, 5e-3) | 91.5 (92.5 with --seed 1) | 50.4 |
| tiny-qwen2-s (600, 2,000, 1e-2) | 39.0 | - |
| tiny-qwen2-xs (600, 2,000, 1e-2) | 42.5 (46.5 with max_hops=1) | 19.0 |
| chance (commonsense) / the most common answer (instruction) | 38.9 | 18.7 |
| echoing the input | - | 52.9 |
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F

from kdray.data.batches import IGNORE_INDEX, collate, encode_example, length_grouped_batches
from kdray.data.prompts import format_prompt
from kdray.eval.answers import last_number
from kdray.world import synthetic_commonsense, synthetic_instruction, synthetic_math
from kdray.world.tokenizer import train_tokenizer
from kdray.world.zoo import build_model, count_parameters, tiny_model

DOMAINS = {
    "math": (synthetic_math.MathWorldConfig, synthetic_math),  # the known reference point
    "commonsense": (synthetic_commonsense.CommonsenseWorldConfig, synthetic_commonsense),
    "instruction": (synthetic_instruction.InstructionWorldConfig, synthetic_instruction),
}
WARMUP_STEPS = 20


def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Position t predicts token t + 1.
    return F.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        batch["labels"][:, 1:].flatten(),
        ignore_index=IGNORE_INDEX,
    )


def train(model, tokenizer, records, steps: int, lr: float, batch_size: int, seed: int):
    encoded = [encode_example(r, tokenizer) for r in records]
    batches = length_grouped_batches(encoded, batch_size, seed, group_factor=50)  # as calibrated
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)

    def schedule(step: int) -> float:
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        progress = (step - WARMUP_STEPS) / max(1, steps - WARMUP_STEPS)
        return 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model.train()
    started = time.perf_counter()
    recent: list[float] = []
    for step in range(steps):
        batch = [encoded[i] for i in next(batches)]
        loss = response_loss(model, collate(batch, tokenizer.pad_token_id))
        recent = [*recent[-49:], loss.item()]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 250 == 0 or step == steps - 1:
            elapsed = time.perf_counter() - started
            mean = sum(recent) / len(recent)
            print(f"  step {step:5d}  loss {mean:.3f} (last 50)  {elapsed:5.0f} s", flush=True)


@torch.no_grad()
def generate(model, tokenizer, records, max_new_tokens: int, batch_size: int = 50) -> list[str]:
    model.eval()
    tokenizer.padding_side = "left"
    responses: list[str] = []
    for start in range(0, len(records), batch_size):
        prompts = [format_prompt(r) for r in records[start : start + batch_size]]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **batch,
            do_sample=False,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        responses += tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
    return [r.strip() for r in responses]


def score(domain: str, record: dict[str, str], response: str) -> float:
    if domain == "math":
        return 100.0 if last_number(response) == float(record["answer"]) else 0.0
    if domain == "commonsense":
        predicted = synthetic_commonsense.extract_choice(record["task"], response)
        return 100.0 if predicted == record["answer"] else 0.0
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    return 100.0 * scorer.score(record["answer"], response)["rougeL"].fmeasure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", choices=sorted(DOMAINS), required=True)
    parser.add_argument("--model", default="tiny-qwen2-m")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--train-examples", type=int, default=None, help="default: all")
    parser.add_argument("--eval-items", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the rows here")
    parser.add_argument("--show", type=int, default=3, help="print this many responses")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a world config field, e.g. --set max_hops=1 (repeatable)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config_class, module = DOMAINS[args.domain]
    fields: dict[str, object] = {"seed": args.seed}
    if args.domain == "math":  # the tiny preset's world (kdray.study.presets.TINY_WORLDS)
        fields |= {"max_start": 12, "max_operand": 4, "max_factor": 1, "max_value": 16}
        fields |= {"distractor_prob": 0.3}
    for assignment in args.set:
        name, _, value = assignment.partition("=")
        fields[name] = float(value) if "." in value else int(value)
    config = config_class(**fields)
    started = time.perf_counter()
    splits = module.generate_splits(config)
    # As the world build does: the tokenizer learns the whole training split's text.
    tokenizer = train_tokenizer(
        [format_prompt(r) + r["output"] for r in splits["train"]], config.vocab_size
    )
    train_records = splits["train"][: args.train_examples]
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(tiny_model(args.model), tokenizer, Path(folder), seed=1234)
    print(
        f"{args.model}: {count_parameters(model):,} parameters, {len(train_records)} train "
        f"examples, {args.steps} steps, lr {args.lr}",
        flush=True,
    )
    train(model, tokenizer, train_records, args.steps, args.lr, args.batch_size, args.seed)
    trained = time.perf_counter()
    test = splits["test"][: args.eval_items]
    responses = generate(model, tokenizer, test, args.max_new_tokens)
    finished = time.perf_counter()

    scores: dict[str, list[float]] = defaultdict(list)
    for record, response in zip(test, responses, strict=True):
        scores[record["task"]].append(score(args.domain, record, response))
        scores["all"].append(scores[record["task"]][-1])
    for record, response in list(zip(test, responses, strict=True))[: args.show]:
        print(f"  [{record['task']}] gold {record['answer']!r}\n    got  {response!r}")
    rows = [
        {
            "model": args.model,
            "domain": args.domain,
            "sub_task": task,
            "score": round(sum(values) / len(values), 1),
            "items": len(values),
            "steps": args.steps,
            "train_examples": len(train_records),
            "train_seconds": round(trained - started),
            "total_seconds": round(finished - started),
        }
        for task, values in sorted(scores.items(), key=lambda kv: (kv[0] == "all", kv[0]))
    ]
    print("model\tdomain\tsub-task\tscore\titems\tsteps\ttrain_s\ttotal_s")
    for row in rows:
        print(
            f"{row['model']}\t{row['domain']}\t{row['sub_task']}\t{row['score']}\t"
            f"{row['items']}\t{row['steps']}\t{row['train_seconds']}\t{row['total_seconds']}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
