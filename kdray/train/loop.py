"""The training loop each Ray Train worker runs: setup → restore → steps → export → evaluate →
report, in that order (`train_run` reads as that list), for each run of the Train run's
sequence in turn (`train_worker`: a study's seeds of one setting share one Train run, so its
fixed cost is paid once).

Every rank calls ray.train.report the same number of times (Train hangs otherwise); rank 0
writes to MLflow and evaluates. Run i's outputs (model folder, metrics.json, predictions,
failure.json) end in `run-<i>/` of the Train run's final checkpoint (`run_output`)."""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import ray.train
import torch
from transformers import AutoTokenizer

from kdray.config.run import TrainConfig, score_metric
from kdray.config.run_spec import RunSpec
from kdray.data.batches import IGNORE_INDEX, EncodedExample, collate, length_grouped_batches
from kdray.data.examples import read_split, trial_examples
from kdray.eval.evaluate import PREDICTIONS_FILE, evaluate
from kdray.eval.likelihood import held_out_metrics
from kdray.eval.responses import generate_responses, mean_score, score_responses
from kdray.losses.divergences import SparseTeacher, restrict_to_vocab, training_loss
from kdray.losses.on_policy import draw_on_policy, sample_batch
from kdray.models import load_model, quiet_libraries
from kdray.teacher.cache import TeacherCache, opened_cache
from kdray.teacher.placement import OnlineTeacher, online_teacher
from kdray.tracking.outage import BufferedRunLogger, bound_http_retries
from kdray.train.averaging import decay_at, load_average, local_weights, update_average
from kdray.train.checkpoint import LoopState, restore_checkpoint, run_fingerprint, save_checkpoint
from kdray.train.engine import create_engine, full_state_dict, load_trainable_state, trainable_state
from kdray.train.lora import merged_lora_model, trainable_parameters, with_lora

METRICS_FILE = "metrics.json"
FAILURE_KEY = "kdray_failure"
"""A report carrying this key ends the run as failed (the reason is its value)."""


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the trial is failed with this reason."""


RUNS_KEY = "runs"
"""train_loop_config = {RUNS_KEY: [RunSpec.to_dict(), ...]}: the runs trained in turn."""
FAILURE_FILE = "failure.json"
RUN_FILE = "run.json"
"""In a run's outputs: the fingerprint of the run (its whole RunSpec, MLflow run id included)
that wrote them, so a restored Train run takes finished outputs only for the same run, and its
MLflow run id, so the run can be closed as soon as a checkpoint holds them
(kdray.trial.closing.RunCloser)."""


def run_output(folder: Path, index: int) -> Path:
    """Run `index`'s outputs inside a Train run's checkpoint folder."""
    return Path(folder) / f"run-{index}"


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point: `config` = {RUNS_KEY: the runs' RunSpec dicts}. The runs are
    trained one after another in these processes; a restarted worker group skips the runs
    whose outputs its checkpoint holds and resumes the one it was training."""
    runs = config[RUNS_KEY]
    with tempfile.TemporaryDirectory(prefix="kdray-runs-") as done:
        finished = restore_finished(ray.train.get_checkpoint(), Path(done))
        for index in still_to_train(runs, finished):
            run, output = runs[index], run_output(Path(done), index)
            shutil.rmtree(output, ignore_errors=True)  # another run's outputs, if any
            train_run(run, output)
            if len(runs) > 1:
                announce(run, output, index, len(runs))
            gc.collect()  # the finished run's engine and data before the next's


def announce(config: dict[str, Any], output: Path, index: int, count: int) -> None:
    """(rank 0, the only rank with outputs) A progress line for each run of a Train run that
    trains several: the driver hears of them only when the last one ends."""
    spec = RunSpec.from_dict(config)
    name = spec.run_name or spec.model_name
    if (output / FAILURE_FILE).is_file():
        reason = json.loads((output / FAILURE_FILE).read_text())["reason"]
        line = f"run {index + 1}/{count} FAILED, {name}: {reason}"
    elif (output / METRICS_FILE).is_file():
        metrics = json.loads((output / METRICS_FILE).read_text())
        nll = f", nll {metrics['nll']:.4f}" if "nll" in metrics else ""
        line = (
            f"run {index + 1}/{count} done, {name}: {score_metric(spec.domain)} "
            f"{metrics['score']:.1f}{nll} ({metrics['train_seconds']:.0f} s training, "
            f"{metrics['eval_seconds']:.0f} s evaluation)"
        )
    else:
        return
    # Not print(): Train's worker patches it to reach the console twice.
    sys.stderr.write(f"[kdray] {line}\n")
    sys.stderr.flush()


def still_to_train(runs: list[dict[str, Any]], finished: dict[int, str | None]) -> list[int]:
    """The positions of `runs` whose outputs a restored checkpoint lacks, or holds from
    another run: a resumed study reopens its unfinished MLflow runs under new ids and trains
    only those, so position i may then be a run other than the one that wrote run-i."""
    return [i for i, run in enumerate(runs) if finished.get(i) != run_fingerprint(run)]


def restore_finished(checkpoint, done: Path) -> dict[int, str | None]:
    """The runs a restored checkpoint had finished, by position: their outputs copied into
    `done`, each with the fingerprint of the run that wrote it (None if it has none)."""
    if checkpoint is None:
        return {}
    finished = {}
    with checkpoint.as_directory() as directory:
        for output in sorted(Path(directory).glob("run-*")):
            shutil.copytree(output, done / output.name)
            record = output / RUN_FILE
            fingerprint = (
                json.loads(record.read_text())["fingerprint"] if record.is_file() else None
            )
            finished[int(output.name.removeprefix("run-"))] = fingerprint
    return finished


def record_run(output: Path, fingerprint: str, run_id: str | None) -> None:
    """Mark `output` as the outputs of the run with this fingerprint and MLflow run (rank 0)."""
    output.mkdir(parents=True)
    (output / RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint, "run_id": run_id}))


def train_run(config: dict[str, Any], output: Path) -> None:
    """One run (`config` is its RunSpec.to_dict()), its outputs written to `output`."""
    worker = setup_worker(config, output.parent)
    monitor = system_metrics(worker)
    try:
        _train_run(worker, config, output)
    finally:
        if monitor:
            finish_system_metrics(monitor)


def finish_system_metrics(monitor) -> None:
    """Stop the sampler; a run shorter than one sampling interval still gets one sample (the
    sampler publishes only after a full interval)."""
    monitor.finish()
    if monitor._logging_step == 0:
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
        monitor.mlflow_logger.flush()


def system_metrics(worker: Worker):
    """(rank 0, when the run asks for it) MLflow's system-metrics sampler on the run, started."""
    spec = worker.spec
    if worker.rank != 0 or not worker.logger or spec.system_metrics_seconds <= 0:
        return None
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        spec.run_id, sampling_interval=spec.system_metrics_seconds,
        tracking_uri=spec.tracking_uri, resume_logging=True,
    )  # fmt: skip
    monitor.start()
    return monitor


def _train_run(worker: Worker, config: dict[str, Any], output: Path) -> None:
    progress = restore(worker, config)
    clock = StepClock(progress.train_seconds)
    failure = train_steps(worker, progress, clock)
    if failure:
        report_failure(failure, worker.rank, output, progress.fingerprint, worker.spec.run_id)
        return
    clock.stop()
    state = final_state(worker, progress)
    metrics = final_metrics(worker, progress, clock)
    if worker.rank != 0:
        ray.train.report(metrics)
        return
    export_evaluate_and_report(worker, progress, state, metrics, output)


# --- setup


class TeacherSource(Protocol):
    def logits(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor | SparseTeacher:
        """The teacher's signal for a collated batch of `split`, over the student's vocab."""


@dataclass
class OnlineTeacherSource:
    """A teacher that runs in the trial (any placement): its logits, trimmed to the vocab."""

    teacher: OnlineTeacher
    vocab: int

    def logits(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        raw = self.teacher.logits(batch["input_ids"], batch["attention_mask"])
        return restrict_to_vocab(raw, self.vocab)


@dataclass
class CachedTeacherSource:
    """A teacher read from its log-prob cache, by the batch's dataset indices."""

    cache: TeacherCache
    examples: dict[str, list[EncodedExample]]
    device: torch.device

    def logits(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor | SparseTeacher:
        indices = batch["example_index"].tolist()
        chosen = [self.examples[split][i] for i in indices]
        signal = self.cache.signal(split, indices, chosen, batch["input_ids"].shape[1])
        return signal.to(self.device)


@dataclass
class Worker:
    """What one Train worker holds for its run, built once by `setup_worker`."""

    spec: RunSpec
    train: TrainConfig
    """spec.train with the step count resolved for this world size."""
    rank: int
    world_size: int
    device: torch.device
    tokenizer: Any
    examples: dict[str, list[EncodedExample]]
    """`train`, and `validation` when the run validates (eval_every)."""
    batches: Iterator[list[int]]
    engine: Any
    teacher: TeacherSource | None
    noise: torch.Generator
    on_policy_rng: random.Random
    score_items: list[dict[str, str]]
    """Validation items scored greedily at each report (report_val_score)."""
    logger: BufferedRunLogger | None
    spool: Any = None
    """The folder that keeps the logger's unsent files (lives as long as the worker)."""
    done: Path | None = None
    """The outputs of the Train run's finished runs: every checkpoint carries them."""
    nodes: list[str] = field(default_factory=list)
    """The Ray node ids of all ranks (known at the end of training)."""

    @property
    def synced(self) -> bool:
        """ZeRO-3 forwards are collectives: generation must keep every rank in step."""
        return self.train.zero_stage == 3 and self.world_size > 1


def setup_worker(config: dict[str, Any], done: Path | None = None) -> Worker:
    """Device, seeds, logger, data, model, teacher and engine, in this order (the RNG draws
    of LoRA and the engine depend on it)."""
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
    logger, spool = None, None
    if rank == 0 and spec.run_id:  # keeps what it cannot send while the server is away
        spool = tempfile.TemporaryDirectory(prefix="kdray-unsent-")
        logger = BufferedRunLogger(spec.tracking_uri, spec.run_id, Path(spool.name))

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
    teacher = teacher_source(spec, examples, device, len(tokenizer))
    engine = create_engine(model, train)
    noise = torch.Generator(device=device).manual_seed(spec.train.seed * 7919 + rank)
    on_policy_rng = random.Random(spec.train.seed * 104729 + rank)
    if train.eval_every:
        examples["validation"] = trial_examples(spec, tokenizer, "validation")
    score_items = (
        read_split(spec.data_dir, "validation")[: train.report_val_score]
        if train.report_val_score
        else []
    )
    return Worker(
        spec, train, rank, world_size, device, tokenizer, examples, batches, engine, teacher,
        noise, on_policy_rng, score_items, logger, spool, done,
    )  # fmt: skip


def teacher_source(
    spec: RunSpec, examples: dict[str, list[EncodedExample]], device: torch.device, vocab: int
) -> TeacherSource | None:
    """The run's teacher signal: its cache when it has one, else the teacher online; None
    for methods that take no teacher logits."""
    if spec.kd.needs_teacher_logits and spec.teacher_cache:
        cache = opened_cache(spec.teacher_cache, spec.kd.loss_tokens)  # verified on load
        return CachedTeacherSource(cache, examples, device)
    if spec.kd.needs_teacher_logits:
        return OnlineTeacherSource(online_teacher(spec, device), vocab)
    return None


# --- restore


def restore(worker: Worker, config: dict[str, Any]) -> LoopState:
    """The loop's state: fresh, or from the latest checkpoint when Ray Train restarted failed
    workers (weights, optimizer, RNG states and the data position all restored)."""
    device, rank = worker.device, worker.rank
    progress = LoopState(run_fingerprint(config))
    restored = restore_checkpoint(
        ray.train.get_checkpoint(), worker.engine, progress.fingerprint, rank,
        agree=lambda bad: global_sum(float(bad), device, worker.world_size) > 0,
    )  # fmt: skip
    if restored:
        progress, python_rng, rngs = restored
        worker.on_policy_rng.setstate(python_rng)
        worker.noise.set_state(rngs["noise"])
        torch.set_rng_state(rngs["torch"])
        if "cuda" in rngs:
            torch.cuda.set_rng_state(rngs["cuda"], device)
        for _ in range(progress.step * worker.spec.train.grad_accum_steps):  # batches used
            next(worker.batches)
        if rank == 0:
            name = worker.spec.model_name
            print(f"[kdray] {name}: resuming at step {progress.step} from a checkpoint")
    if worker.logger:  # a restarted run does not log again the points it logged before
        names = [*progress.curves, "val_score"]
        worker.logger.continue_curves(names, progress.delivered, fresh=restored is None)
    return progress


def rng_states(worker: Worker) -> dict[str, torch.Tensor]:
    states = {"noise": worker.noise.get_state(), "torch": torch.get_rng_state()}
    if worker.spec.train.use_gpu:
        states["cuda"] = torch.cuda.get_rng_state(worker.device)
    return states


# --- steps


@dataclass
class StepClock:
    """Seconds of the step loop (over every attempt) and the token-throughput window."""

    seconds_before: float
    """Step-loop seconds of earlier attempts (a restored run)."""
    started: float = field(default_factory=time.perf_counter)
    window_started: float = 0.0
    window_tokens: int = 0
    attempt_seconds: float = 0.0
    """Seconds of this attempt's step loop (set by `stop`)."""

    def __post_init__(self) -> None:
        self.window_started = self.started

    def tokens_per_second(self, world_size: int, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        return self.window_tokens * world_size / (now - self.window_started)

    def stop(self) -> None:
        self.attempt_seconds = time.perf_counter() - self.started

    def new_window(self) -> None:
        self.window_started, self.window_tokens = time.perf_counter(), 0


def train_steps(worker: Worker, progress: LoopState, clock: StepClock) -> str | None:
    """The optimizer steps from where `progress` stands to the last; the failure reason if
    the loss stopped being finite (every rank stops at the same step)."""
    train, curves = worker.train, progress.curves
    for step in range(progress.step + 1, train.steps + 1):
        step_loss = train_step(worker, step, progress, clock)
        if isinstance(step_loss, str):
            return step_loss
        curves["train_loss"].append((step, step_loss))
        if train.average_decay:
            weights = local_weights(worker.engine, train.zero_stage)
            decay = decay_at(train.average_decay, step)
            progress.average_weights = update_average(progress.average_weights, weights, decay)
        if train.eval_every and (step % train.eval_every == 0 or step == train.steps):
            loss = validation_loss(worker)
            curves["val_loss"].append((step, loss))
            if progress.best_loss is None or loss < progress.best_loss:
                progress.best_loss, progress.best_step = loss, step
                progress.best_weights = trainable_state(worker.engine, train.zero_stage)
        if step % train.report_every == 0 and step < train.steps:
            report_progress(worker, step, progress, clock)
    return None


def train_step(worker: Worker, step: int, progress: LoopState, clock: StepClock) -> float | str:
    """One optimizer step over its micro-batches: the step's loss, or why it failed."""
    engine, accumulate = worker.engine, worker.spec.train.grad_accum_steps
    micro_batches = [next_micro_batch(worker) for _ in range(accumulate)]
    progress.on_policy_batches += sum(sampled for _, sampled in micro_batches)
    clock.window_tokens += sum(int(b["attention_mask"].sum()) for b, _ in micro_batches)
    # The step's loss is a mean over all its scored tokens, whatever the micro-batching.
    step_tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b, _ in micro_batches)
    step_loss = 0.0
    progress.curves["lr"].append((step, engine.get_lr()[0]))
    for batch, _ in micro_batches:
        loss = forward_loss(worker, batch, max(step_tokens, 1), worker.noise)
        # Every rank stops at the same step: a NaN on any rank is NaN in the sum.
        if not math.isfinite(overall := global_sum(loss.item(), worker.device, worker.world_size)):
            return f"loss became {overall} at step {step}"
        engine.backward(loss * accumulate)  # DeepSpeed divides by the accumulation steps
        engine.step()
        step_loss += loss.item()
    return step_loss


def next_micro_batch(worker: Worker) -> tuple[dict[str, torch.Tensor], bool]:
    """The next training micro-batch on the device, or (gkd, with probability λ) one the
    student sampled itself; True when it is on-policy."""
    spec, tokenizer = worker.spec, worker.tokenizer
    indices = next(worker.batches)
    batch = collate(
        [worker.examples["train"][i] for i in indices], tokenizer.pad_token_id, spec.kd.loss_tokens
    )
    batch = {k: v.to(worker.device) for k, v in batch.items()}
    batch["example_index"] = torch.tensor(indices)
    if spec.kd.method != "gkd" or not draw_on_policy(
        worker.on_policy_rng, spec.kd.on_policy_fraction
    ):
        return batch, False
    sampled = sample_batch(
        worker.engine.module, batch, tokenizer.pad_token_id, tokenizer.eos_token_id,
        spec.kd.temperature, spec.eval.max_new_tokens, spec.kd.loss_tokens,
        synced_gpus=worker.synced,
    )  # fmt: skip
    return sampled, True


def forward_loss(
    worker: Worker, batch, normalizer: int, generator, split: str = "train"
) -> torch.Tensor:
    """The run's loss on a batch: the student's forward, the teacher's signal, the method."""
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "use_cache": False,  # no KV cache in training forwards
    }
    student_logits = restrict_to_vocab(worker.engine(**inputs).logits, len(worker.tokenizer))
    teacher_logits = worker.teacher.logits(batch, split) if worker.teacher else None
    loss, _ = training_loss(
        student_logits, batch["labels"], worker.spec.kd, teacher_logits, generator,
        normalizer=normalizer,
    )  # fmt: skip
    return loss


@torch.no_grad()
def validation_loss(worker: Worker) -> float:
    """The run's own loss on the validation split (every rank computes all of it: under
    ZeRO-3 each forward is a collective anyway), with the same noise draw each time."""
    engine, train, validation = worker.engine, worker.train, worker.examples["validation"]
    engine.eval()
    batches = []
    for first in range(0, len(validation), train.batch_size):
        indices = list(range(first, min(first + train.batch_size, len(validation))))
        chosen = [validation[i] for i in indices]
        batch = collate(chosen, worker.tokenizer.pad_token_id, worker.spec.kd.loss_tokens)
        batches.append({**batch, "example_index": torch.tensor(indices)})
    tokens = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in batches)
    generator = torch.Generator(device=worker.device).manual_seed(train.seed)
    total = 0.0
    for batch in batches:
        batch = {k: v.to(worker.device) for k, v in batch.items()}
        total += forward_loss(worker, batch, max(tokens, 1), generator, "validation").item()
    engine.train()
    return total


def validation_score(worker: Worker) -> float:
    """Greedy score of the model as it is now on the first validation items (every rank
    computes it, so every rank reports the same; ASHA and Optuna compare trials on it)."""
    spec, items = worker.spec, worker.score_items
    greedy = dataclasses.replace(spec.eval, decoding="greedy")
    responses = generate_responses(
        worker.engine.module, worker.tokenizer, items, greedy, worker.synced
    )
    worker.engine.train()
    return mean_score(score_responses(items, responses, spec.domain))


def validation_nll(worker: Worker) -> float:
    """Teacher-free response NLL of the model as it is now on the same validation items: a
    continuous metric that ranks methods alike (each method's own loss does not), for ASHA."""
    worker.engine.eval()
    nll = held_out_metrics(worker.engine.module, worker.tokenizer, worker.score_items)["nll"]
    worker.engine.train()
    return nll


def report_progress(worker: Worker, step: int, progress: LoopState, clock: StepClock) -> None:
    """A progress report to Ray Train (Tune's ASHA and Optuna read it), its curves to MLflow,
    and a checkpoint when this step keeps one."""
    curves, logger = progress.curves, worker.logger
    now = time.perf_counter()
    curves["tokens_per_second"].append((step, clock.tokens_per_second(worker.world_size, now)))
    report = {"step": step, "train_loss": _recent_mean(curves["train_loss"])}
    if worker.score_items:
        report["val_score"] = validation_score(worker)
        report["val_nll"] = validation_nll(worker)
    if logger:
        logger.log_curves({k: curves[k] for k in ("train_loss", "lr", "tokens_per_second")})
        for key in ("val_score", "val_nll"):  # the final values come later, at the last step
            if key in report:
                logger.log_curves({key: [(step, report[key])]})
    progress.step, progress.train_seconds = step, clock.seconds_before + now - clock.started
    progress.delivered = dict(logger.delivered) if logger else {}
    if worker.train.checkpoints_at(step):
        with tempfile.TemporaryDirectory() as folder:
            states = rng_states(worker)
            save_checkpoint(
                Path(folder), worker.engine, progress, worker.on_policy_rng, states, worker.rank
            )
            if worker.rank == 0 and worker.done:  # a restart must not train these again
                shutil.copytree(worker.done, folder, dirs_exist_ok=True)
            ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(folder))
    else:
        ray.train.report(report)
    clock.new_window()


# --- export, evaluate, report


def final_state(worker: Worker, progress: LoopState) -> dict[str, torch.Tensor]:
    """The full weights at the best validation loss, their average over the steps, or the last
    step's, on every rank: under ZeRO-3 both the restore of the best weights and the gather are
    collectives."""
    engine, train = worker.engine, worker.train
    if progress.best_weights is not None:
        load_trainable_state(engine, train.zero_stage, progress.best_weights)
    if progress.average_weights is not None:
        load_average(engine, train.zero_stage, progress.average_weights)
    return full_state_dict(engine, train.zero_stage)


def final_metrics(worker: Worker, progress: LoopState, clock: StepClock) -> dict[str, Any]:
    """The run's training metrics (every rank computes them: worker_nodes is a collective)."""
    train, attempt_seconds = worker.train, clock.attempt_seconds
    metrics = {
        "step": train.steps,
        "train_loss": _recent_mean(progress.curves["train_loss"]),
        "train_seconds": clock.seconds_before + attempt_seconds,
        "steps_per_second": (train.steps - (progress.resumed_from or 0)) / attempt_seconds,
        "tokens_per_second": clock.tokens_per_second(worker.world_size),
        "on_policy_batches": progress.on_policy_batches,
        "trainable_parameters": trainable_parameters(worker.engine.module),
        "peak_rss_mib": peak_rss_mib(),
        "restarts": progress.restarts,
    }
    if progress.resumed_from is not None:
        metrics["resumed_from_step"] = progress.resumed_from
    if worker.spec.train.use_gpu:
        metrics["peak_gpu_mib"] = torch.cuda.max_memory_allocated(worker.device) / 2**20
    worker.nodes = worker_nodes(worker.world_size)
    metrics["worker_nodes"] = len(worker.nodes)
    if progress.best_step is not None:
        metrics.update(best_val_loss=progress.best_loss, best_step=progress.best_step)
    return metrics


def export_evaluate_and_report(
    worker: Worker,
    progress: LoopState,
    state: dict[str, torch.Tensor],
    metrics: dict[str, Any],
    output: Path,
) -> None:
    """(rank 0) The model at its best validation loss (or last step) written as an ordinary
    Hugging Face folder in `output`, evaluated, logged to MLflow and reported with the
    checkpoint of every finished run so far."""
    spec, train, tokenizer, device = worker.spec, worker.train, worker.tokenizer, worker.device
    record_run(output, progress.fingerprint, spec.run_id)
    export_model(worker, state, output)
    metrics.update(evaluate(spec, load_model(output, device), tokenizer, output))
    (output / METRICS_FILE).write_text(json.dumps(metrics, indent=1))
    if logger := worker.logger:
        curves = progress.curves
        logger.set_tags({"kdray.worker_nodes": ",".join(worker.nodes)})  # Ray node ids
        logger.log_curves({k: curves[k] for k in ("train_loss", "lr", "val_loss")})
        final = {k: v for k, v in metrics.items() if k not in ("step", "train_loss")}
        logger.log_metrics(final, step=train.steps)
        logger.log_file(output / PREDICTIONS_FILE)
        if not logger.flush():  # the server is away: the trial driver delivers the rest
            kept = logger.save_unsent(output)
            print(f"[kdray] {spec.model_name}: {kept} logging ops kept for the trial driver")
    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(output.parent))


def export_model(worker: Worker, state: dict[str, torch.Tensor], folder: Path) -> None:
    """The trained student as a safetensors model folder with its tokenizer (LoRA merged)."""
    engine, train = worker.engine, worker.train
    if train.finetune == "lora":  # merged: an ordinary model folder, like full FT's
        merged = merged_lora_model(load_model(worker.spec.init_dir, worker.device), state, train)
        merged.save_pretrained(folder, safe_serialization=True)
    else:
        engine.module.save_pretrained(folder, state_dict=state, safe_serialization=True)
    worker.tokenizer.save_pretrained(folder)


# --- collectives and small helpers


def worker_nodes(world_size: int) -> list[str]:
    """The Ray node ids of all ranks (a collective: every rank calls it), sorted, unique."""
    mine = ray.get_runtime_context().get_node_id()
    if world_size == 1 or not torch.distributed.is_initialized():
        return [mine]
    everyone: list[str] = [""] * world_size
    torch.distributed.all_gather_object(everyone, mine)
    return sorted(set(everyone))


def report_failure(
    reason: str, rank: int, output: Path, fingerprint: str, run_id: str | None
) -> None:
    """End the run as failed without raising: every rank reports the same reason and returns
    (rank 0 with the checkpoint, `output` holding failure.json, so the driver's Result carries
    it) and the Train run goes on to its next run. A raised error would count as a worker
    failure, which Train retries from the latest checkpoint, only to fail the same way again."""
    if rank != 0:
        ray.train.report({FAILURE_KEY: reason})
        return
    record_run(output, fingerprint, run_id)
    (output / FAILURE_FILE).write_text(json.dumps({"reason": reason}))
    checkpoint = ray.train.Checkpoint.from_directory(output.parent)
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
