"""A Train worker's resumable state: saved with some progress reports, restored when Ray Train
restarts the workers after a failure (FailureConfig), so a run continues from its latest
checkpoint instead of starting over, and ends where an uninterrupted run would.

Each rank writes its own folder; Ray Train gathers every rank's folder into one checkpoint
directory, so each name that could collide carries its rank:
  deepspeed/                DeepSpeed's engine checkpoint: weights, optimizer, LR schedule
  loop.rank<r>.json         rank r's position, counters, RNG state; rank 0's also the curves
  rng.rank<r>.safetensors   rank r's torch RNG states
  best.safetensors          (rank 0) the best-validation weights so far, if any
  average.rank<r>.safetensors  rank r's part of the weights' moving average, if any
  .checksums.json.rank<r>   size and SHA-256 of each of rank r's files
A checkpoint whose checksums do not match, or that belongs to another run, is not used: the
run starts again from step 0."""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from kdray.cache import CHECKSUMS, CacheCorruptError, content_key, verify_checksums, write_checksums

DEEPSPEED_TAG = "deepspeed"
BEST_WEIGHTS = "best.safetensors"
CURVES = ("train_loss", "lr", "val_loss", "tokens_per_second")


def _loop_file(rank: int) -> str:
    return f"loop.rank{rank}.json"


def _rng_file(rank: int) -> str:
    return f"rng.rank{rank}.safetensors"


def _average_file(rank: int) -> str:
    return f"average.rank{rank}.safetensors"


def _checksums_file(rank: int) -> str:
    return f"{CHECKSUMS}.rank{rank}"


@dataclass
class LoopState:
    """What a worker's training loop has done so far, beyond the DeepSpeed engine's state."""

    fingerprint: str
    """The run this state belongs to (`run_fingerprint` of its RunSpec)."""
    step: int = 0
    """Optimizer steps done."""
    train_seconds: float = 0.0
    """Seconds spent in the step loop, over every attempt."""
    on_policy_batches: int = 0
    curves: dict[str, list[tuple[int, float]]] = field(
        default_factory=lambda: {name: [] for name in CURVES}
    )
    """(step, value) points of each of CURVES."""
    best_loss: float | None = None
    best_step: int | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    """Trainable weights at the best validation loss so far (eval_every runs)."""
    average_weights: dict[str, torch.Tensor] | None = None
    """This rank's part of the moving average of the trainable weights (average_decay runs)."""
    delivered: dict[str, int] = field(default_factory=dict)
    """(rank 0) The last step of each curve that the tracking server has."""
    resumed_from: int | None = None
    """The step this attempt restored (None: it started at step 0)."""
    restarts: int = 0
    """How many times the run was restored from a checkpoint."""

    def to_json(self, python_rng: random.Random) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values.pop("best_weights")
        values.pop("average_weights")
        values["python_rng"] = python_rng.getstate()
        return values


def run_fingerprint(spec: dict[str, Any]) -> str:
    """Which run a checkpoint belongs to: the hash of its whole RunSpec (MLflow run included),
    so a checkpoint left by another run under the same Train name is never taken for this one."""
    return content_key(spec)


def save_checkpoint(
    folder: Path,
    engine,
    state: LoopState,
    python_rng: random.Random,
    rngs: dict[str, torch.Tensor],
    rank: int,
) -> None:
    """Write rank `rank`'s part of a resumable checkpoint into `folder` (a collective: every
    rank calls it at the same step)."""
    engine.save_checkpoint(str(folder), tag=DEEPSPEED_TAG, save_latest=False)
    (folder / _loop_file(rank)).write_text(json.dumps(state.to_json(python_rng)))
    save_file({k: v.contiguous() for k, v in rngs.items()}, str(folder / _rng_file(rank)))
    if rank == 0 and state.best_weights is not None:
        save_file(state.best_weights, str(folder / BEST_WEIGHTS))
    if state.average_weights is not None:
        average = {k: v.cpu().contiguous() for k, v in state.average_weights.items()}
        save_file(average, str(folder / _average_file(rank)))
    write_checksums(folder, _checksums_file(rank))


def restore_checkpoint(
    checkpoint, engine, fingerprint: str, rank: int, agree
) -> tuple[LoopState, tuple, dict[str, torch.Tensor]] | None:
    """The loop state, python RNG state and torch RNG states saved in Ray Train's `checkpoint`,
    with the engine's weights, optimizer and schedule put back; None (and the engine left as
    it is) when there is no checkpoint, when it is not a resumable one of this run, or when
    any rank finds it damaged. `agree(bad)` is True on every rank if any rank passed True."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        folder = Path(directory)
        problem = _problem(folder, fingerprint, rank)
        if agree(problem is not None):
            if problem and problem != "not resumable":  # said by the rank that found it
                print(f"[kdray] {problem}: training this run again from step 0", file=sys.stderr)
            return None
        engine.load_checkpoint(str(folder), tag=DEEPSPEED_TAG, load_module_strict=True)
        values = json.loads((folder / _loop_file(rank)).read_text())
        rngs = load_file(str(folder / _rng_file(rank)))
        best = load_file(str(folder / BEST_WEIGHTS)) if values["best_step"] is not None else None
        average_file = folder / _average_file(rank)
        average = load_file(str(average_file)) if average_file.is_file() else None
    python_rng = _as_tuples(values.pop("python_rng"))
    values["curves"] = {k: [tuple(p) for p in v] for k, v in values["curves"].items()}
    state = LoopState(**values, best_weights=best, average_weights=average)
    state.resumed_from = state.step
    state.restarts += 1
    return state, python_rng, rngs


def _problem(folder: Path, fingerprint: str, rank: int) -> str | None:
    """Why this rank cannot resume from `folder`, or None."""
    if not (folder / _loop_file(rank)).is_file() or not (folder / _loop_file(0)).is_file():
        return "not resumable"  # e.g. a finished run's final checkpoint: a model folder
    try:
        for owner in {0, rank}:  # own files, and rank 0's that every rank reads
            verify_checksums(folder, _checksums_file(owner))
    except CacheCorruptError as error:
        return f"checkpoint {folder.name} is damaged ({error})"
    if json.loads((folder / _loop_file(rank)).read_text())["fingerprint"] != fingerprint:
        return "not resumable"  # another run's checkpoint under the same Train run name
    return None


def _as_tuples(value):
    """random.Random.getstate() after a JSON round trip (lists back into tuples)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value
