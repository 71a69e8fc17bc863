"""Before a study's trials start: choose each trial's teacher signal and build the teacher
caches they share (once per teacher x data x mode), so a sweep pays for the teacher once."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from kdray.config.run_spec import RunSpec
from kdray.data.examples import trial_examples
from kdray.teacher.cache import CacheRequest, build_teacher_cache, ray_shard_runner
from kdray.teacher.signal import ONLINE, choose_teacher_signal


def cache_request(spec: RunSpec, top_k: int | None) -> CacheRequest:
    """The cache a trial of `spec` reads: its training examples (the teacher's responses for
    seqkd) and, when it selects checkpoints on validation loss, its validation examples."""
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)
    splits = ["train", "validation"] if spec.train.eval_every else ["train"]
    return CacheRequest(
        teacher_dir=spec.teacher_dir,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        loss_tokens=spec.kd.loss_tokens,
        top_k=top_k,
        splits={split: trial_examples(spec, tokenizer, split) for split in splits},
    )


def attach_teacher_signals(
    plans: list[dict[str, Any]],
    cache_root: Path,
    say: Callable[[str], None],
    shard_gpus: Callable[[str], int] = lambda teacher: 1,
) -> None:
    """Set each plan's `teacher_signal` params and, for cached ones, its spec's teacher_cache
    (plans hold RunSpec objects here). shard_gpus(teacher name): GPUs per cache-build task."""
    built: dict[str, Path] = {}
    online: dict[str, int] = {}  # placement -> trials
    for plan in plans:
        spec: RunSpec = plan["spec"]
        vocab = len(AutoTokenizer.from_pretrained(spec.tokenizer_dir))
        signal = choose_teacher_signal(spec.kd, vocab)
        plan["params"]["teacher_signal"] = signal.kind
        plan["params"]["teacher_signal_reason"] = signal.reason
        if signal.kind == ONLINE:
            online[spec.kd.teacher_placement] = online.get(spec.kd.teacher_placement, 0) + 1
        if not signal.cached:
            continue
        request = cache_request(spec, signal.top_k)
        key = request.key()
        if key not in built:
            folder, built_now = build_teacher_cache(
                request, cache_root,
                ray_shard_runner(spec.train.use_gpu, shard_gpus(plan["teacher"])),
                spec.train.use_gpu, on_rebuild=say,
            )  # fmt: skip
            rows = sum(len(examples) for examples in request.splits.values())
            say(
                f"teacher cache ({signal.kind}, {rows} examples) "
                f"{'built' if built_now else 'reused'}: {folder}"
            )
            built[key] = folder
        plan["spec"] = dataclasses.replace(spec, teacher_cache=str(built[key]))
    for placement, trials in online.items():
        say(
            f"{trials} trial(s) run the teacher online, placement {placement} "
            "(--teacher-placement; --dry-run prints each placement's memory)"
        )
