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


def trial_examples(spec: RunSpec, tokenizer, split: str) -> list[EncodedExample]:
    """The encoded examples a run trains on (`train`) or validates on (`validation`), in the
    order that batches and the teacher cache index them."""
    records = training_problems(spec) if split == "train" else read_split(spec.data_dir, split)
    return [encode_example(e, tokenizer, spec.train.max_length) for e in records]
