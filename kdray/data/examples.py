"""A run's examples: its splits read from the world's data folder, its training problems (the
teacher's own responses for seqkd), encoded in the order batches and the teacher cache index."""

from __future__ import annotations

import json
from pathlib import Path

from kdray.config.run_spec import RunSpec
from kdray.data.batches import (
    EncodedExample,
    encode_example,
)


def read_split(data_dir: str, split: str) -> list[dict[str, str]]:
    return json.loads((Path(data_dir) / f"{split}.json").read_text())


def training_problems(spec: RunSpec) -> list[dict[str, str]]:
    """The run's training problems; for `seqkd` their responses are the teacher's own."""
    problems = read_split(spec.data_dir, "train")[: spec.train.train_examples]
    if spec.kd.method != "seqkd":
        return problems
    if not spec.teacher_responses:
        raise ValueError(
            "seqkd needs the teacher's generated responses (RunSpec.teacher_responses)"
        )
    responses = json.loads(Path(spec.teacher_responses).read_text())
    if len(responses) < len(problems):
        raise ValueError(f"{len(responses)} teacher responses for {len(problems)} problems")
    return [{**p, "output": r} for p, r in zip(problems, responses, strict=False)]


_ENCODED: dict[tuple, list[EncodedExample]] = {}
_ENCODED_KEEP = 4  # a run's train and validation splits: 16 MiB for 16,000 tiny problems


def _examples_key(spec: RunSpec, split: str) -> tuple:
    """Everything trial_examples(spec, _, split) reads: runs with equal keys encode alike."""
    files = [Path(spec.data_dir) / f"{split}.json"]
    seqkd = split == "train" and spec.kd.method == "seqkd"
    if seqkd and spec.teacher_responses:
        files.append(Path(spec.teacher_responses))
    stats = tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.exists())
    count = spec.train.train_examples if split == "train" else None
    return (spec.tokenizer_dir, split, count, spec.train.max_length, seqkd, stats)


def trial_examples(spec: RunSpec, tokenizer, split: str) -> list[EncodedExample]:
    """The encoded examples a run trains on (`train`) or validates on (`validation`), in the
    order that batches and the teacher cache index them; `tokenizer` is spec.tokenizer_dir's.
    Kept in the process for the next run that reads the same: a study keys every KD setting's
    teacher cache by them, and a setting's seeds train one after another in one worker."""
    key = _examples_key(spec, split)
    if key not in _ENCODED:
        records = training_problems(spec) if split == "train" else read_split(spec.data_dir, split)
        while len(_ENCODED) >= _ENCODED_KEEP:
            _ENCODED.pop(next(iter(_ENCODED)))
        _ENCODED[key] = [encode_example(e, tokenizer, spec.train.max_length) for e in records]
    return list(_ENCODED[key])
