"""The training loop each Ray Train worker runs: setup, steps, export, evaluate, report.

One readable loop with a fixed life cycle. Every rank calls ray.train.report the same
number of times (Train hangs otherwise); rank 0 writes to MLflow and evaluates."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import torch
from transformers import AutoTokenizer

from kdray.config.run_spec import RunSpec
from kdray.data.batches import (
    IGNORE_INDEX,
    collate,
    length_grouped_batches,
)
from kdray.data.examples import read_split, trial_examples
from kdray.eval.evaluate import PREDICTIONS_FILE, evaluate
from kdray.eval.responses import (
    generate_responses,
    mean_score,
    score_responses,
)
from kdray.losses.divergences import restrict_to_vocab, training_loss
from kdray.losses.on_policy import draw_on_policy, sample_batch
from kdray.models import load_model, quiet_libraries
from kdray.teacher.cache import TeacherCache
from kdray.teacher.placement import online_teacher
from kdray.tracking.outage import BufferedRunLogger, bound_http_retries
from kdray.train.checkpoint import LoopState, restore_checkpoint, run_fingerprint, save_checkpoint
from kdray.train.engine import create_engine, full_state_dict, load_trainable_state, trainable_state
from kdray.train.lora import merged_lora_model, trainable_parameters, with_lora

METRICS_FILE = "metrics.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the trial is failed with this reason."""


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config` is RunSpec.to_dict()."""
    spec = RunSpec.from_dict(config)
    quiet_libraries()
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = (
        torch.device("cuda", context.get_local_rank())
        if spec.train.use_gpu
        else torch.device("cpu")
    )
    if not spec.train.use_gpu:  # Ray's default is one thread per worker whatever its CPUs
        torch.set_num_threads(max(1, round(spec.train.cpus_per_worker)))
    torch.manual_seed(spec.train.seed + rank)
    bound_http_retries()
    logger = None
    if rank == 0 and spec.run_id:  # keeps what it cannot send while the server is away
        spool = tempfile.TemporaryDirectory(prefix="kdray-unsent-")
        logger = BufferedRunLogger(spec.tracking_uri, spec.run_id, Path(spool.name))

    # --- setup
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    examples = {"train": trial_examples(spec, tokenizer, "train")}
    train = dataclasses.replace(
        spec.train, steps=spec.train.resolved_steps(len(examples["train"]), world_size), epochs=None
    )
    batches = length_grouped_batches(
        examples["train"], train.batch_size, train.seed, rank, world_size,
        train.length_group_window,
    )  # fmt: skip
    model = load_model(spec.init_dir, device)
    if train.finetune == "lora":
        model = with_lora(model, train)
    teacher, cache = None, None
    if spec.kd.needs_teacher_logits and spec.teacher_cache:
        cache = TeacherCache(spec.teacher_cache, spec.kd.loss_tokens)  # verified on load
    elif spec.kd.needs_teacher_logits:
        teacher = online_teacher(spec, device)
    engine = create_engine(model, train)
    noise = torch.Generator(device=device).manual_seed(spec.train.seed * 7919 + rank)
    on_policy_rng = random.Random(spec.train.seed * 104729 + rank)
    vocab = len(tokenizer)
    accumulate = spec.train.grad_accum_steps

    def next_micro_batch() -> tuple[dict[str, torch.Tensor], bool]:
        indices = next(batches)
        batch = collate(
            [examples["train"][i] for i in indices], tokenizer.pad_token_id, spec.kd.loss_tokens
        )
        batch = {k: v.to(device) for k, v in batch.items()}
        batch["example_index"] = torch.tensor(indices)
        if spec.kd.method != "gkd" or not draw_on_policy(on_policy_rng, spec.kd.on_policy_fraction):
            return batch, False
        sampled = sample_batch(
            engine.module, batch, tokenizer.pad_token_id, tokenizer.eos_token_id,
            spec.kd.temperature, spec.eval.max_new_tokens, spec.kd.loss_tokens,
            synced_gpus=spec.train.zero_stage == 3 and world_size > 1,
        )  # fmt: skip
        return sampled, True

    def forward_loss(batch, normalizer: int, generator, split: str = "train") -> torch.Tensor:
        inputs = {
            "input_ids": batch["input_ids"],
            "attention_mask": batch["attention_mask"],
            "use_cache": False,  # no KV cache in training forwards
        }
        student_logits = restrict_to_vocab(engine(**inputs).logits, vocab)
        teacher_logits = None
        if teacher is not None:
            raw = teacher.logits(batch["input_ids"], batch["attention_mask"])
            teacher_logits = restrict_to_vocab(raw, vocab)
        elif cache is not None:
            indices = batch["example_index"].tolist()
            chosen = [examples[split][i] for i in indices]
            signal = cache.signal(split, indices, chosen, batch["input_ids"].shape[1])
            teacher_logits = signal.to(device)
        loss, _ = training_loss(
            student_logits, batch["labels"], spec.kd, teacher_logits, generator,
            normalizer=normalizer,
        )  # fmt: skip
        return loss

    if train.eval_every:
        examples["validation"] = trial_examples(spec, tokenizer, "validation")
    validation = examples.get("validation", [])

    @torch.no_grad()
    def validation_loss() -> float:
        """The run's own loss on the validation split (every rank computes all of it: under
        ZeRO-3 each forward is a collective anyway), with the same noise draw each time."""
        engine.eval()
        batches = []
        for first in range(0, len(validation), train.batch_size):
            indices = list(range(first, min(first + train.batch_size, len(validation))))
            chosen = [validation[i] for i in indices]
            batch = collate(chosen, tokenizer.pad_token_id, spec.kd.loss_tokens)
            batches.append({**batch, "example_index": torch.tensor(indices)})
        tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
        generator = torch.Generator(device=device).manual_seed(train.seed)
        total = 0.0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            total += forward_loss(batch, max(tokens, 1), generator, "validation").item()
        engine.train()
        return total

    score_items = (
        read_split(spec.data_dir, "validation")[: train.report_val_score]
        if train.report_val_score
        else []
    )
    synced = train.zero_stage == 3 and world_size > 1  # ZeRO-3 forwards are collectives

    def validation_score() -> float:
        """Greedy score of the model as it is now on the first validation items (every rank
        computes it, so every rank reports the same; ASHA and Optuna compare trials on it)."""
        greedy = dataclasses.replace(spec.eval, decoding="greedy")
        responses = generate_responses(engine.module, tokenizer, score_items, greedy, synced)
        engine.train()
        return mean_score(score_responses(score_items, responses, spec.domain))

    # --- steps (from the latest checkpoint when Ray Train restarted failed workers)
    progress = LoopState(run_fingerprint(config))
    restored = restore_checkpoint(
        ray.train.get_checkpoint(), engine, progress.fingerprint, rank,
        agree=lambda bad: global_sum(float(bad), device, world_size) > 0,
    )  # fmt: skip
    if restored:
        progress, python_rng, rngs = restored
        on_policy_rng.setstate(python_rng)
        noise.set_state(rngs["noise"])
        torch.set_rng_state(rngs["torch"])
        if "cuda" in rngs:
            torch.cuda.set_rng_state(rngs["cuda"], device)
        for _ in range(progress.step * accumulate):  # the data position: batches already used
            next(batches)
        if rank == 0:
            print(f"[kdray] {spec.model_name}: resuming at step {progress.step} from a checkpoint")
    if logger:  # a restarted run does not log again the points it logged before it failed
        names = [*progress.curves, "val_score"]
        logger.continue_curves(names, progress.delivered, fresh=restored is None)

    def rng_states() -> dict[str, torch.Tensor]:
        states = {"noise": noise.get_state(), "torch": torch.get_rng_state()}
        if spec.train.use_gpu:
            states["cuda"] = torch.cuda.get_rng_state(device)
        return states

    curves = progress.curves
    seconds_before = progress.train_seconds
    started = time.perf_counter()
    window_started, window_tokens = started, 0
    failure = None
    for step in range(progress.step + 1, train.steps + 1):
        micro_batches = [next_micro_batch() for _ in range(accumulate)]
        progress.on_policy_batches += sum(sampled for _, sampled in micro_batches)
        window_tokens += sum(int(b["attention_mask"].sum()) for b, _ in micro_batches)
        # The step's loss is a mean over all its scored tokens, whatever the micro-batching.
        step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, _ in micro_batches)
        step_loss = 0.0
        curves["lr"].append((step, engine.get_lr()[0]))
        for batch, _ in micro_batches:
            loss = forward_loss(batch, max(step_tokens, 1), noise)
            # Every rank stops at the same step: a NaN on any rank is NaN in the sum.
            if not math.isfinite(overall := global_sum(loss.item(), device, world_size)):
                failure = f"loss became {overall} at step {step}"
                break
            engine.backward(loss * accumulate)  # DeepSpeed divides by the accumulation steps
            engine.step()
            step_loss += loss.item()
        if failure:
            break
        curves["train_loss"].append((step, step_loss))
        if train.eval_every and (step % train.eval_every == 0 or step == train.steps):
            loss = validation_loss()
            curves["val_loss"].append((step, loss))
            if progress.best_loss is None or loss < progress.best_loss:
                progress.best_loss, progress.best_step = loss, step
                progress.best_weights = trainable_state(engine, train.zero_stage)
        if step % train.report_every == 0 and step < train.steps:
            now = time.perf_counter()
            speed = window_tokens * world_size / (now - window_started)
            curves["tokens_per_second"].append((step, speed))
            report = {"step": step, "train_loss": _recent_mean(curves["train_loss"])}
            if score_items:
                report["val_score"] = validation_score()
            if logger:
                logger.log_curves({k: curves[k] for k in ("train_loss", "lr", "tokens_per_second")})
                if "val_score" in report:
                    logger.log_curves({"val_score": [(step, report["val_score"])]})
            progress.step, progress.train_seconds = step, seconds_before + now - started
            progress.delivered = dict(logger.delivered) if logger else {}
            if train.checkpoints_at(step):
                with tempfile.TemporaryDirectory() as folder:
                    states = rng_states()
                    save_checkpoint(Path(folder), engine, progress, on_policy_rng, states, rank)
                    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))
            else:
                ray.train.report(report)
            window_started, window_tokens = time.perf_counter(), 0
    if failure:
        report_failure(failure, rank)
        return
    attempt_seconds = time.perf_counter() - started

    # --- export, evaluate, report
    if progress.best_weights is not None:
        load_trainable_state(engine, train.zero_stage, progress.best_weights)
    state = full_state_dict(engine, train.zero_stage)
    metrics = {
        "step": train.steps,
        "train_loss": _recent_mean(curves["train_loss"]),
        "train_seconds": seconds_before + attempt_seconds,
        "steps_per_second": (train.steps - (progress.resumed_from or 0)) / attempt_seconds,
        "tokens_per_second": window_tokens * world_size / (time.perf_counter() - window_started),
        "on_policy_batches": progress.on_policy_batches,
        "trainable_parameters": trainable_parameters(engine.module),
        "peak_rss_mib": peak_rss_mib(),
        "restarts": progress.restarts,
    }
    if progress.resumed_from is not None:
        metrics["resumed_from_step"] = progress.resumed_from
    if spec.train.use_gpu:
        metrics["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    nodes = worker_nodes(world_size)
    metrics["worker_nodes"] = len(nodes)
    if progress.best_step is not None:
        metrics.update(best_val_loss=progress.best_loss, best_step=progress.best_step)
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        if train.finetune == "lora":  # merged: an ordinary model folder, like full FT's
            merged = merged_lora_model(load_model(spec.init_dir, device), state, train)
            merged.save_pretrained(folder, safe_serialization=True)
        else:
            engine.module.save_pretrained(folder, state_dict=state, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        metrics.update(evaluate(spec, load_model(folder, device), tokenizer, Path(folder)))
        (Path(folder) / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
        if logger:
            logger.set_tags({"kdray.worker_nodes": ",".join(nodes)})  # Ray node ids
            logger.log_curves({k: curves[k] for k in ("train_loss", "lr", "val_loss")})
            final = {k: v for k, v in metrics.items() if k not in ("step", "train_loss")}
            logger.log_metrics(final, step=train.steps)
            logger.log_file(Path(folder) / PREDICTIONS_FILE)
            if not logger.flush():  # the server is away: the trial driver delivers the rest
                kept = logger.save_unsent(Path(folder))
                print(f"[kdray] {spec.model_name}: {kept} logging ops kept for the trial driver")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def worker_nodes(world_size: int) -> list[str]:
    """The Ray node ids of all ranks (a collective: every rank calls it), sorted, unique."""
    mine = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [mine]
    everyone: list[str] = [""] * world_size
    torch.distributed.all_gather_object(everyone, mine)
    return sorted(set(everyone))


FAILURE_KEY = "kdray_failure"
"""A report carrying this key ends the run as failed (the reason is its value)."""


def report_failure(reason: str, rank: int) -> None:
    """End the run as failed without raising: every rank reports the same reason and returns
    (rank 0 with a checkpoint, so the driver's Result carries it). A raised error would count
    as a worker failure, which Train retries from the latest checkpoint, only to fail the
    same way again."""
    if rank != 0:
        ray.train.report({FAILURE_KEY: reason})
        return
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "failure.json").write_text(json.dumps({"reason": reason}))
        checkpoint = ray.train.Checkpoint.from_directory(folder)
        ray.train.report({FAILURE_KEY: reason}, checkpoint=checkpoint)


def global_sum(value: float, device: torch.device, world_size: int) -> float:
    """`value` summed over all ranks (a collective when there are several)."""
    if world_size == 1 or not torch.distributed.is_initialized():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.item()


def peak_rss_mib() -> float:
    """This worker process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _recent_mean(curve: list[tuple[int, float]], window: int = 20) -> float:
    recent = [value for _, value in curve[-window:]]
    return sum(recent) / len(recent)
