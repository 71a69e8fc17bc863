"""Calibrate the tiny world's recipe: pretrain tiny bases on the world's generic text, fine-tune
a teacher from its base, then train each student from its own base (one base per seed) with SFT
and with KD (forward KL, T=1, the teacher online) for several paired seeds, and print how
stable the answer is: per student and method, mean ± SD over seeds of test accuracy and
held-out NLL, and the paired difference KD − SFT with its SD and |mean Δ| / SD(Δ).

    python benchmarks/calibrate_recipe.py                       # the preset's recipe
    python benchmarks/calibrate_recipe.py --student-lr 1e-2 --min-lr-ratio 0 --warmup 20 \\
        --weight-decay 0 --no-pretrain                          # the old recipe, for reference
    python benchmarks/calibrate_recipe.py --domain commonsense  # another domain's world

A plain PyTorch loop (kdray.world.pretrain.train_plain) with kdray's data, loss, schedule and
metric code, one thread per process, two processes (--jobs) over the seeds. It measures what
the recipe does; the study runs the same recipe through Ray Train + DeepSpeed."""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from kdray.config.run import KDConfig, TrainConfig
from kdray.data.batches import encode_example
from kdray.data.prompts import format_prompt
from kdray.eval.likelihood import held_out_metrics
from kdray.world.domains import generate_splits
from kdray.world.pretrain import encode_documents, train_plain
from kdray.world.pretraining import pretraining_corpus
from kdray.world.tokenizer import train_tokenizer
from kdray.world.zoo import build_model, tiny_model


def world(args):
    from kdray.study.presets import TINY_WORLDS

    config = dataclasses.replace(TINY_WORLDS[args.domain], test_size=args.test_items)
    if args.phrasings is not None:  # only the math world words its lines several ways
        config = dataclasses.replace(config, phrasings=args.phrasings)
    splits = generate_splits(config)
    documents = pretraining_corpus(config, args.documents)
    texts = documents + [format_prompt(r) + r["output"] for r in splits["train"]]
    return splits, documents, train_tokenizer(texts, config.vocab_size)


def base(name: str, seed: int, args, tokenizer, documents) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as folder:
        model = build_model(tiny_model(name), tokenizer, Path(folder), seed=1234 + 101 * seed)
    if args.no_pretrain:
        return model
    steps = args.teacher_pretrain_steps if name == args.teacher else args.pretrain_steps
    recipe = TrainConfig(steps=steps, batch_size=32, learning_rate=args.pretrain_lr,
                         warmup_steps=40, weight_decay=0.1, min_lr_ratio=0.1,
                         report_every=max(1, steps), seed=seed)  # fmt: skip
    train_plain(model, encode_documents(documents, tokenizer), tokenizer.pad_token_id, recipe)
    return model


def fine_tune_recipe(args, steps: int, learning_rate: float, seed: int) -> TrainConfig:
    return TrainConfig(
        steps=steps, batch_size=32, learning_rate=learning_rate, warmup_steps=args.warmup,
        weight_decay=args.weight_decay, min_lr_ratio=args.min_lr_ratio, report_every=steps,
        seed=seed,
    )  # fmt: skip


def fine_tune(model, tokenizer, records, recipe: TrainConfig, kd: KDConfig, teacher=None):
    from kdray.losses.divergences import training_loss

    def step_loss(student, batch):
        logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        teacher_logits = None
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
                ).logits
        return training_loss(logits.logits, batch["labels"], kd, teacher_logits)[0]

    encoded = [encode_example(r, tokenizer) for r in records]
    train_plain(model, encoded, tokenizer.pad_token_id, recipe, step_loss)
    return model


def accuracy(model, tokenizer, records, domain: str) -> float:
    """Greedy test score (accuracy; ROUGE-L for instruction), decoded as the tiny preset
    evaluates (up to 96 new tokens)."""
    from kdray.eval.responses import generate_responses, mean_score, score_responses
    from kdray.study.presets import TINY_EVAL

    eval_config = dataclasses.replace(TINY_EVAL, max_items=len(records))
    responses = generate_responses(model, tokenizer, records, eval_config)
    return mean_score(score_responses(records, responses, domain))


def run_seed(args, seed: int) -> list[dict]:
    torch.set_num_threads(1)
    apply_shapes(args)
    splits, documents, tokenizer = world(args)
    teacher_path = Path(args.work) / "teacher"
    from transformers import AutoModelForCausalLM

    teacher = AutoModelForCausalLM.from_pretrained(str(teacher_path)).eval()
    test = splits["test"]
    rows = []
    recipe = fine_tune_recipe(args, args.student_steps, args.student_lr, seed)
    for student in args.students:
        start = base(student, seed, args, tokenizer, documents)
        for method in args.methods:
            model = copy.deepcopy(start)
            kd = KDConfig(method=method, temperature=1.0)
            began = time.perf_counter()
            fine_tune(model, tokenizer, splits["train"][: args.train_examples], recipe, kd,
                      teacher if method != "sft" else None)  # fmt: skip
            metrics = held_out_metrics(model, tokenizer, test, teacher)
            metrics["accuracy"] = accuracy(model, tokenizer, test, args.domain)
            metrics["seconds"] = time.perf_counter() - began
            rows.append({"student": student, "method": method, "seed": seed, **metrics})
            print(f"  seed {seed} {student} {method}: acc {metrics['accuracy']:.1f} "
                  f"nll {metrics['nll']:.4f} kl {metrics['kl_teacher_student']:.4f} "
                  f"ans-tok {metrics['answer_token_accuracy']:.1f} ({metrics['seconds']:.0f} s)",
                  flush=True)  # fmt: skip
    return rows


def prepare_teacher(args) -> dict:
    torch.set_num_threads(args.jobs)
    splits, documents, tokenizer = world(args)
    began = time.perf_counter()
    model = base(args.teacher, 0, args, tokenizer, documents)
    pretrained = time.perf_counter() - began
    recipe = fine_tune_recipe(args, args.teacher_steps, args.teacher_lr, seed=0)
    fine_tune(model, tokenizer, splits["train"], recipe, KDConfig(method="sft"))
    model.save_pretrained(str(Path(args.work) / "teacher"))
    metrics = held_out_metrics(model, tokenizer, splits["test"])
    metrics["accuracy"] = accuracy(model, tokenizer, splits["test"], args.domain)
    print(f"teacher {args.teacher}: pretrain {pretrained:.0f} s, total "
          f"{time.perf_counter() - began:.0f} s, acc {metrics['accuracy']:.1f}, "
          f"nll {metrics['nll']:.4f}", flush=True)  # fmt: skip
    return metrics


def summarise(rows: list[dict], args) -> None:
    print("\nstudent\tmethod\tn\taccuracy mean±SD\tnll mean±SD\tkl mean\tans-tok mean")
    for student in args.students:
        for method in args.methods:
            cell = [r for r in rows if r["student"] == student and r["method"] == method]
            acc = [r["accuracy"] for r in cell]
            nll = [r["nll"] for r in cell]
            print(f"{student}\t{method}\t{len(cell)}\t{statistics.mean(acc):.1f}±"
                  f"{statistics.stdev(acc) if len(acc) > 1 else 0:.1f}\t{statistics.mean(nll):.4f}±"
                  f"{statistics.stdev(nll) if len(nll) > 1 else 0:.4f}\t"
                  f"{statistics.mean(r['kl_teacher_student'] for r in cell):.4f}\t"
                  f"{statistics.mean(r['answer_token_accuracy'] for r in cell):.1f}")  # fmt: skip
    print("\nstudent\tpaired Δ (kd − sft)\tmean\tSD\t|mean|/SD")
    for student in args.students:
        by_seed = {}
        for r in rows:
            if r["student"] == student:
                by_seed.setdefault(r["seed"], {})[r["method"]] = r
        for metric in ("accuracy", "nll", "answer_token_accuracy"):
            deltas = [s["kd"][metric] - s["sft"][metric] for s in by_seed.values()
                      if "kd" in s and "sft" in s]  # fmt: skip
            if len(deltas) < 2:
                continue
            mean, sd = statistics.mean(deltas), statistics.stdev(deltas)
            ratio = abs(mean) / sd if sd else float("inf")
            print(f"{student}\t{metric}\t{mean:+.4f}\t{sd:.4f}\t{ratio:.2f}")


def apply_shapes(args) -> None:
    """`--shape`: replace zoo models' shapes in this process (each seed's worker calls it too,
    so it holds under any start method)."""
    from kdray.world import zoo

    for shape in args.shape:
        name, dims = shape.split("=")
        layers, hidden, heads, kv_heads, intermediate = (int(d) for d in dims.split(","))
        zoo.TINY_MODELS[name] = dataclasses.replace(
            zoo.tiny_model(name), layers=layers, hidden=hidden, heads=heads,
            kv_heads=kv_heads, intermediate=intermediate,
        )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domain", default="math", choices=["math", "commonsense", "instruction"])
    parser.add_argument("--teacher", default="tiny-qwen2-m")
    parser.add_argument("--students", nargs="+", default=["tiny-qwen2-s"])
    parser.add_argument("--methods", nargs="+", default=["sft", "kd"])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--documents", type=int, default=20000)
    parser.add_argument(
        "--phrasings",
        type=int,
        default=None,
        help="math: wordings per line (default: the preset's)",
    )
    parser.add_argument("--test-items", type=int, default=1000)
    parser.add_argument("--pretrain-steps", type=int, help="default: the tiny preset's")
    parser.add_argument("--teacher-pretrain-steps", type=int, help="default: the tiny preset's")
    parser.add_argument("--pretrain-lr", type=float, default=5e-3)
    parser.add_argument("--no-pretrain", action="store_true")
    parser.add_argument("--teacher-steps", type=int, help="default: the tiny preset's")
    parser.add_argument("--teacher-lr", type=float, default=3e-3)
    parser.add_argument("--student-steps", type=int, default=400)
    parser.add_argument("--student-lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--min-lr-ratio", type=float, default=0.1)
    parser.add_argument(
        "--train-examples", type=int, help="default: the preset's (all the training problems)"
    )
    parser.add_argument("--work", default=None, help="keep the teacher here (default: a temp dir)")
    parser.add_argument(
        "--shape", action="append", default=[], metavar="MODEL=L,H,HEADS,KV,FF",
        help="try another shape for a zoo model: layers, hidden, heads, kv heads, intermediate "
        "(e.g. tiny-qwen2-xs=3,32,2,1,64); repeatable",
    )  # fmt: skip
    args = parser.parse_args()
    if args.phrasings is not None and args.domain != "math":
        parser.error("--phrasings is the math world's: drop it or pass --domain math")
    from kdray.errors import ConfigError
    from kdray.study.presets import TINY_PRETRAINS, TINY_STUDENT_TRAIN, TINY_TEACHER_TRAIN

    for shape in args.shape:
        if not re.fullmatch(r"[\w-]+=\d+(,\d+){4}", shape):
            parser.error(f"--shape {shape!r}: write MODEL=LAYERS,HIDDEN,HEADS,KV,INTERMEDIATE")
    try:
        apply_shapes(args)
    except ConfigError as error:
        parser.error(str(error))

    preset = TINY_PRETRAINS[args.domain]
    if args.pretrain_steps is None:
        args.pretrain_steps = preset.steps
    if args.teacher_pretrain_steps is None:
        args.teacher_pretrain_steps = preset.teacher_steps
    if args.teacher_steps is None:
        args.teacher_steps = TINY_TEACHER_TRAIN.steps
    if args.train_examples is None:  # None in the preset: the whole split
        args.train_examples = TINY_STUDENT_TRAIN.train_examples
    args.work = args.work or tempfile.mkdtemp(prefix="calibrate-")
    began = time.perf_counter()
    if not (Path(args.work) / "teacher" / "config.json").exists():
        prepare_teacher(args)
    with ProcessPoolExecutor(args.jobs) as pool:
        rows = [r for seed_rows in pool.map(run_seed, [args] * args.seeds, range(args.seeds))
                for r in seed_rows]  # fmt: skip
    summarise(rows, args)
    print(f"\n{time.perf_counter() - began:.0f} s in all; teacher kept in {args.work}")


if __name__ == "__main__":
    main()
