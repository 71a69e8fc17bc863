"""The teacher log-prob cache: the teacher's distribution at every scored position of a
trial's data, computed once (Ray tasks over shards of examples, in parallel on the cluster's
workers) and read by every off-policy trial of a sweep instead of running the teacher.

Layout of a cache folder (content-addressed and written atomically by kdray/cache.py):
`manifest.json` names the teacher, the mode (`full`: log-probs over the whole vocabulary;
`topk`: the k most likely tokens' log-probs, their ids and the log of the remaining mass), and
per split its shards with their example ranges; `<split>-NNNNN.safetensors` hold the rows;
`.checksums.json` has every file's size and SHA-256. Rows are stored at temperature 1;
temperature and noise are applied when a trial reads them. Opening a cache verifies every
shard; the study rebuilds a damaged cache, a trial refuses one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from kdray.cache import CacheCorruptError, build_once, content_key, verify_checksums
from kdray.data.batches import EncodedExample, collate
from kdray.losses.divergences import TAIL_LOG_FLOOR, SparseTeacher
from kdray.models import inference_device, load_model, quiet_libraries

CACHE_FORMAT = 1
MANIFEST = "manifest.json"
EXAMPLES_PER_SHARD = 256
FORWARD_BATCH = 16


def scored_span(example: EncodedExample, loss_tokens: str) -> tuple[int, int]:
    """(first position, rows): the logit positions whose next token is scored. Logits at t
    predict token t + 1, so a response starting at token s is predicted from s - 1 on."""
    first_scored = example.prompt_length if loss_tokens == "response" else 0
    start = max(first_scored, 1) - 1
    return start, max(0, len(example.input_ids) - 1 - start)


def examples_digest(examples: Sequence[EncodedExample]) -> str:
    digest = hashlib.sha256()
    for example in examples:
        digest.update(json.dumps([example.prompt_length, list(example.input_ids)]).encode())
    return digest.hexdigest()


# --- computing rows (runs where the teacher is: a Ray task, or in-process)


@torch.no_grad()
def teacher_rows(
    model: torch.nn.Module,
    examples: Sequence[EncodedExample],
    pad_token_id: int,
    vocab_size: int,
    loss_tokens: str,
    top_k: int | None,
    device: torch.device,
) -> dict[str, torch.Tensor]:
    """The teacher's T = 1 log-probs at the scored positions of `examples`, concatenated in
    example order: `log_probs` (rows, vocab) for the full mode; `top_log_probs`, `top_indices`
    (rows, k) and `tail_log_mass` (rows,) for top-k; `rows_per_example` either way."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    per_example: list[dict[str, torch.Tensor] | None] = [None] * len(examples)
    for first in range(0, len(order), FORWARD_BATCH):
        chosen = order[first : first + FORWARD_BATCH]
        batch = collate([examples[i] for i in chosen], pad_token_id)
        logits = model(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            use_cache=False,
        ).logits
        log_probs = F.log_softmax(logits[..., :vocab_size].float(), dim=-1).cpu()
        for row, index in enumerate(chosen):
            start, rows = scored_span(examples[index], loss_tokens)
            per_example[index] = compress_rows(log_probs[row, start : start + rows], top_k)
    merged = {name: torch.cat([part[name] for part in per_example]) for name in per_example[0]}
    merged["rows_per_example"] = torch.tensor(
        [scored_span(e, loss_tokens)[1] for e in examples], dtype=torch.int64
    )
    return merged


def compress_rows(log_probs: torch.Tensor, top_k: int | None) -> dict[str, torch.Tensor]:
    if top_k is None:
        return {"log_probs": log_probs.contiguous()}
    top, indices = log_probs.topk(top_k, dim=-1)
    # log(1 - sum top-k p), floored: an empty tail must not become log(0).
    tail = torch.log(-torch.expm1(torch.logsumexp(top, dim=-1).clamp_max(-1e-7)))
    return {
        "top_log_probs": top.contiguous(),
        "top_indices": indices.to(torch.int32).contiguous(),
        "tail_log_mass": tail.clamp_min(TAIL_LOG_FLOOR),
    }


def compute_shard(
    teacher_dir: str,
    examples: list[EncodedExample],
    pad_token_id: int,
    vocab_size: int,
    loss_tokens: str,
    top_k: int | None,
    use_gpu: bool,
    gpus: int = 1,
) -> bytes:
    """One shard as safetensors bytes: loads the teacher where it runs (a Ray task's worker).
    With gpus > 1 (a teacher whose forward does not fit one GPU) the task holds that many GPUs
    and the teacher's layers are spread over them (transformers' device_map="auto")."""

    quiet_libraries()
    device, dtype = inference_device(use_gpu)
    if use_gpu and gpus > 1:
        model = load_model(teacher_dir, None, dtype, device_map="auto").eval()
        device = model.get_input_embeddings().weight.device
    else:
        model = load_model(teacher_dir, device, dtype).eval()
    rows = teacher_rows(model, examples, pad_token_id, vocab_size, loss_tokens, top_k, device)
    return save_safetensors(rows)


ShardRunner = Callable[[list[tuple]], list[bytes]]
"""Computes shards from compute_shard argument tuples: in parallel Ray tasks or in-process."""


def ray_shard_runner(use_gpu: bool, gpus: int = 1) -> ShardRunner:
    """Shards as parallel Ray tasks, each on `gpus` GPUs (with use_gpu) or one CPU."""

    def run(jobs: list[tuple]) -> list[bytes]:
        import ray

        resources = {"num_gpus": gpus, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        task = ray.remote(**resources)(compute_shard)
        return ray.get([task.remote(*job, gpus) for job in jobs])

    return run


def local_shard_runner(jobs: list[tuple]) -> list[bytes]:
    return [compute_shard(*job) for job in jobs]


# --- building and opening a cache folder


@dataclass(frozen=True)
class CacheRequest:
    """What a cache is of; its content key names the folder."""

    teacher_dir: str
    """Teacher model folder (prepared teachers' folder names are content keys themselves)."""
    vocab_size: int
    """The tokenizer's vocabulary: the rows are over these tokens."""
    pad_token_id: int
    loss_tokens: str
    top_k: int | None
    """None: the full vocabulary."""
    splits: dict[str, list[EncodedExample]]
    """Example lists by split name (`train`, `validation`), in the order trials index them."""

    def key(self) -> str:
        digests = {name: examples_digest(examples) for name, examples in self.splits.items()}
        return content_key(
            CACHE_FORMAT, Path(self.teacher_dir).name, self.vocab_size, self.loss_tokens,
            self.top_k, digests,
        )  # fmt: skip

    def folder(self, cache_root: Path) -> Path:
        mode = "full" if self.top_k is None else f"top{self.top_k}"
        name = f"{Path(self.teacher_dir).name[:40]}-{mode}-{self.key()}"
        return cache_root / "teacher_cache" / name


def build_teacher_cache(
    request: CacheRequest,
    cache_root: Path,
    runner: ShardRunner,
    use_gpu: bool = False,
    on_rebuild: Callable[[str], None] | None = None,
) -> tuple[Path, bool]:
    """The cache folder for `request`, verified: reused when complete and intact, rebuilt when a
    shard fails verification, built when missing. Returns (folder, built_now)."""
    target = request.folder(cache_root)

    def build(staging: Path) -> None:
        staging.mkdir(parents=True)
        jobs, placements = [], []
        for split, examples in request.splits.items():
            for first in range(0, len(examples), EXAMPLES_PER_SHARD):
                chunk = list(examples[first : first + EXAMPLES_PER_SHARD])
                jobs.append(
                    (request.teacher_dir, chunk, request.pad_token_id, request.vocab_size,
                     request.loss_tokens, request.top_k, use_gpu)
                )  # fmt: skip
                placements.append((split, first, len(chunk)))
        manifest = {
            "format": CACHE_FORMAT,
            "teacher_dir": request.teacher_dir,
            "mode": "full" if request.top_k is None else "topk",
            "top_k": request.top_k,
            "vocab_size": request.vocab_size,
            "loss_tokens": request.loss_tokens,
            "splits": {
                name: {"examples": len(examples), "shards": []}
                for name, examples in request.splits.items()
            },
        }
        for (split, first, count), payload in zip(placements, runner(jobs), strict=True):
            name = f"{split}-{first // EXAMPLES_PER_SHARD:05d}.safetensors"
            (staging / name).write_bytes(payload)
            manifest["splits"][split]["shards"].append(
                {"file": name, "first_example": first, "examples": count}
            )
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))

    return build_once(target, build, verify=True, on_rebuild=on_rebuild)


class TeacherCache:
    """A verified cache in memory, read batch by batch by the training loop."""

    def __init__(self, folder: str | Path, loss_tokens: str):
        folder = Path(folder)
        verify_checksums(folder)
        self.manifest = json.loads((folder / MANIFEST).read_text())
        if self.manifest["loss_tokens"] != loss_tokens:
            raise CacheCorruptError(
                f"teacher cache {folder} scores {self.manifest['loss_tokens']} tokens, "
                f"the trial {loss_tokens}: it belongs to another setting"
            )
        self.vocab_size = self.manifest["vocab_size"]
        self.top_k = self.manifest["top_k"]
        self.loss_tokens = loss_tokens
        self._splits = {
            name: _concatenate(
                [load_safetensors((folder / s["file"]).read_bytes()) for s in split["shards"]]
            )
            for name, split in self.manifest["splits"].items()
        }

    def signal(
        self, split: str, indices: Sequence[int], examples: Sequence[EncodedExample], width: int
    ) -> torch.Tensor | SparseTeacher:
        """The teacher signal for a collated batch of `examples` (dataset indices `indices`,
        padded to `width`): full log-probs (batch, width, vocab), usable as logits, or a
        SparseTeacher. Unscored positions hold a valid dummy distribution (weight 0)."""
        rows, offsets = self._splits[split], self._offsets(split)
        batch = len(indices)
        if self.top_k is None:
            out = torch.zeros(batch, width, self.vocab_size)
        else:
            k = self.top_k
            uniform = -torch.log(torch.tensor(float(k + 1)))
            top = torch.full((batch, width, k), float(uniform))
            ids = torch.arange(k, dtype=torch.int64).expand(batch, width, k).clone()
            tail = torch.full((batch, width), float(uniform))
        for row, (index, example) in enumerate(zip(indices, examples, strict=True)):
            start, count = scored_span(example, self.loss_tokens)
            first, stop = int(offsets[index]), int(offsets[index + 1])
            if stop - first != count:
                raise CacheCorruptError(
                    f"teacher cache has {stop - first} rows for example {index}, expected {count}"
                )
            if self.top_k is None:
                out[row, start : start + count] = rows["log_probs"][first:stop]
            else:
                top[row, start : start + count] = rows["top_log_probs"][first:stop]
                ids[row, start : start + count] = rows["top_indices"][first:stop].long()
                tail[row, start : start + count] = rows["tail_log_mass"][first:stop]
        if self.top_k is None:
            return out
        return SparseTeacher(top, ids, tail, self.vocab_size)

    def _offsets(self, split: str) -> torch.Tensor:
        rows = self._splits[split]
        if "offsets" not in rows:
            rows["offsets"] = F.pad(rows["rows_per_example"].cumsum(0), (1, 0))
        return rows["offsets"]


def _concatenate(shards: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([shard[name] for shard in shards]) for name in shards[0]}


_OPENED: dict[tuple[str, str], TeacherCache] = {}


def opened_cache(folder: str | Path, loss_tokens: str) -> TeacherCache:
    """The cache in `folder`, loaded and verified once per process: the KD runs that a Train
    run trains one after another read the same cache (1-2 s to load and verify the tiny
    world's 680 MiB each time). One cache is kept at a time; caches are content-keyed
    folders, so a folder's bytes do not change under a process."""
    key = (str(Path(folder).resolve()), loss_tokens)
    if key not in _OPENED:
        _OPENED.clear()  # the old one is freed before the new one is read
        _OPENED[key] = TeacherCache(folder, loss_tokens)
    return _OPENED[key]
