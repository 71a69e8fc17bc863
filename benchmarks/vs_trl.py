"""kdray (`kd`, cached teacher, Ray Train + DeepSpeed) against TRL's GKDTrainer (beta 0,
lambda 0: supervised forward KL, the teacher online) on the same tiny pair, data, batch,
optimizer settings and steps, each in a fresh process, side by side in one invocation:

    pip install -e '.[bench]' && python benchmarks/vs_trl.py

Reports training steps per second (the training loop only: from the first step to the last,
without setup or evaluation), the peak resident memory of the process that trains (kdray: its
Ray Train worker; TRL: its own process), and the final forward KL(teacher || student) at T = 1
of each trained student on the same held-out batch (the first 64 validation problems). The
cache build is reported apart: a sweep pays it once for all its trials. One thread each."""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from kdray.cli.args import config_from_flags
from kdray.config.run import KDConfig
from kdray.config.run_spec import RunSpec
from kdray.data.batches import collate
from kdray.data.examples import trial_examples
from kdray.losses.divergences import restrict_to_vocab, training_loss
from kdray.models import load_model
from kdray.world.build import build_world

HELD_OUT = 64


def study_config(args):
    flags = ["--teacher", args.teacher, "--students", args.student]
    return config_from_flags("temperature", flags)


def world_and_spec(args):
    config = study_config(args)
    world, _ = build_world(config.world, config.cache_root(), config.family)
    train = dataclasses.replace(config.student_train, steps=args.steps, cpus_per_worker=1.0)
    kd = KDConfig(method="kd", temperature=1.0, teacher_signal="cache")
    spec = RunSpec.in_world(world, "student", args.student, train, kd, config.eval)
    return config, world, spec


def held_out_kl(student_dir: str, teacher_dir: str, spec: RunSpec) -> float:
    """Forward KL(teacher || student) at T = 1 per response token on the held-out batch."""
    tokenizer = load_tokenizer(spec)
    examples = trial_examples(spec, tokenizer, "validation")[:HELD_OUT]
    batch = collate(examples, tokenizer.pad_token_id)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    cpu = torch.device("cpu")
    with torch.no_grad():
        student = load_model(student_dir, cpu)(**inputs).logits
        teacher = load_model(teacher_dir, cpu)(**inputs).logits
        vocab = len(tokenizer)
        loss, _ = training_loss(
            restrict_to_vocab(student, vocab),
            batch["labels"],
            KDConfig(method="kd"),
            restrict_to_vocab(teacher, vocab),
        )
    return float(loss)


def load_tokenizer(spec: RunSpec):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec.tokenizer_dir)


def prepare(args) -> dict:
    """In this process: the teacher (cached, as the studies prepare it) and the cache."""
    import ray

    from kdray.study.teacher_signals import cache_request
    from kdray.study.teachers import prepare_teacher
    from kdray.teacher.cache import build_teacher_cache, ray_shard_runner

    config, world, spec = world_and_spec(args)
    ray.init(include_dashboard=False)
    storage = config.cache_root() / "ray_results"
    teacher = prepare_teacher(
        world, args.teacher, "task-aware", config.teacher_train, config.eval, storage
    )
    spec = dataclasses.replace(spec, teacher_dir=str(teacher.folder))
    started = time.perf_counter()
    folder, built = build_teacher_cache(
        cache_request(spec, None), config.cache_root(), ray_shard_runner(False)
    )
    seconds = time.perf_counter() - started
    ray.shutdown()
    return {"teacher_dir": str(teacher.folder), "cache": str(folder), "cache_seconds": seconds,
            "cache_built_now": built}  # fmt: skip


def run_kdray(args, prepared: dict) -> dict:
    import ray

    from kdray.train.run import fit

    config, _, spec = world_and_spec(args)
    spec = dataclasses.replace(
        spec, teacher_dir=prepared["teacher_dir"], teacher_cache=prepared["cache"]
    )
    ray.init(include_dashboard=False)
    # A new name each time: Ray Train would restore an earlier run of the same name instead.
    name = f"vs-trl-kdray-{time.strftime('%Y%m%d-%H%M%S')}"
    folder = fit(spec, name, config.cache_root() / "ray_results")
    metrics = json.loads((folder / "metrics.json").read_text())
    kl = held_out_kl(str(folder), prepared["teacher_dir"], spec)
    ray.shutdown()
    return {
        "steps_per_second": metrics["steps_per_second"],
        "peak_rss_mib": metrics["peak_rss_mib"],
        "held_out_kl": kl,
    }


def run_trl(args, prepared: dict) -> dict:
    import os
    import tempfile

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    torch.set_num_threads(1)
    _, world, spec = world_and_spec(args)
    tokenizer = load_tokenizer(spec)
    examples = trial_examples(spec, tokenizer, "train")
    dataset = Dataset.from_list(
        [{"input_ids": list(e.input_ids), "prompt_length": e.prompt_length} for e in examples]
    )

    def collator(rows):
        from kdray.data.batches import EncodedExample

        batch = collate(
            [EncodedExample(tuple(r["input_ids"]), r["prompt_length"]) for r in rows],
            tokenizer.pad_token_id,
        )
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}

    class StepClock(TrainerCallback):
        first = last = None

        def on_step_begin(self, *_, **__):
            if self.first is None:
                self.first = time.perf_counter()

        def on_step_end(self, *_, **__):
            self.last = time.perf_counter()

    clock = StepClock()
    train = spec.train
    with tempfile.TemporaryDirectory() as out:
        trainer = GKDTrainer(
            model=load_model(spec.init_dir, torch.device("cpu")),
            teacher_model=load_model(prepared["teacher_dir"], torch.device("cpu")),
            args=GKDConfig(
                output_dir=out,
                beta=0.0,
                lmbda=0.0,
                temperature=1.0,
                seq_kd=False,
                max_steps=train.steps,
                per_device_train_batch_size=train.batch_size,
                learning_rate=train.learning_rate,
                warmup_steps=train.warmup_steps,
                lr_scheduler_type="cosine",
                weight_decay=train.weight_decay,
                max_grad_norm=train.grad_clip,
                use_cpu=True,
                report_to=[],
                save_strategy="no",
                logging_steps=max(1, train.steps // 4),
                dataloader_num_workers=0,
                max_length=train.max_length,
                seed=train.seed,
                disable_tqdm=True,
            ),  # fmt: skip
            data_collator=collator,
            train_dataset=dataset,
            processing_class=tokenizer,
            callbacks=[clock],
        )
        trainer.train()
        trainer.model.save_pretrained(out + "/student", safe_serialization=True)
        kl = held_out_kl(out + "/student", prepared["teacher_dir"], spec)
    steps = train.steps - 1  # from the first step's start to the last's end, as kdray counts
    return {
        "steps_per_second": (steps + 1) / (clock.last - clock.first) if steps else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "held_out_kl": kl,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="tiny-qwen2-m")
    parser.add_argument("--student", default="tiny-qwen2-s")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", help="also write the measurements here")
    parser.add_argument("--run", choices=["prepare", "kdray", "trl"], help=argparse.SUPPRESS)
    parser.add_argument("--prepared", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:  # a child process: one side of the comparison
        prepared = json.loads(args.prepared) if args.prepared else None
        runner = {"prepare": lambda: prepare(args), "kdray": lambda: run_kdray(args, prepared),
                  "trl": lambda: run_trl(args, prepared)}[args.run]  # fmt: skip
        print("RESULT " + json.dumps(runner()), flush=True)
        return

    def child(what: str, prepared: dict | None = None) -> dict:
        command = [sys.executable, __file__, "--run", what, "--teacher", args.teacher,
                   "--student", args.student, "--steps", str(args.steps)]  # fmt: skip
        if prepared:
            command += ["--prepared", json.dumps(prepared)]
        print(f"[vs_trl] {what} ...", flush=True)
        out = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.exit(f"vs_trl: the {what} run failed:\n{out.stderr[-3000:]}")
        return json.loads(lines[-1][len("RESULT ") :])

    prepared = child("prepare")
    results = {"kdray": child("kdray", prepared), "trl": child("trl", prepared)}
    kd, trl = results["kdray"], results["trl"]
    print(f"\n{args.teacher} -> {args.student}, {args.steps} steps, batch 32, one thread each")
    print("| | kdray (kd, cached teacher) | TRL GKDTrainer (beta 0, lambda 0) | kdray / TRL |")
    print("|---|---|---|---|")
    print(
        f"| training steps/s | {kd['steps_per_second']:.2f} | {trl['steps_per_second']:.2f} "
        f"| {kd['steps_per_second'] / trl['steps_per_second']:.2f} |"
    )
    print(
        f"| peak resident memory | {kd['peak_rss_mib']:.0f} MiB | {trl['peak_rss_mib']:.0f} MiB "
        f"| {kd['peak_rss_mib'] / trl['peak_rss_mib']:.2f} |"
    )
    kls = f"{kd['held_out_kl']:.4f} | {trl['held_out_kl']:.4f}"
    print(f"| held-out KL(teacher \\|\\| student) | {kls} | |")
    print(f"cache build (once per sweep): {prepared['cache_seconds']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"prepared": prepared, **results}, indent=1))


if __name__ == "__main__":
    main()
