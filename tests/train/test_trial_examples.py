"""A run's encoded examples are kept in the process for the next run that reads the same data,
and encoded again when anything they depend on differs."""

import dataclasses
import json

import pytest

import kdray.data.examples as examples_module
from kdray.config.run import EvalConfig, KDConfig, TrainConfig
from kdray.config.run_spec import RunSpec
from kdray.data.batches import encode_example
from kdray.data.examples import trial_examples
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    config = MathWorldConfig(train_size=12, validation_size=4, test_size=4)
    return build_world(config, tmp_path_factory.mktemp("examples"))[0]


def spec(world, method="kd", **train) -> RunSpec:
    return RunSpec.in_world(
        world, "student", "tiny-qwen2-xs", TrainConfig(steps=1, batch_size=4, **train),
        KDConfig(method=method), EvalConfig(),
    )  # fmt: skip


@pytest.fixture
def encodings(monkeypatch):
    """Counts the examples encoded, from an empty store."""
    monkeypatch.setattr(examples_module, "_ENCODED", {})
    calls = []

    def counting(example, tokenizer, max_length=None):
        calls.append(example)
        return encode_example(example, tokenizer, max_length)

    monkeypatch.setattr(examples_module, "encode_example", counting)
    return calls


def test_the_next_run_with_the_same_data_reuses_the_encoding(world, encodings):
    tokenizer = world.tokenizer()
    first = trial_examples(spec(world), tokenizer, "train")
    assert len(encodings) == 12
    again = trial_examples(spec(world, seed=5), tokenizer, "train")  # another seed, same data
    assert again == first and again is not first and len(encodings) == 12
    again.pop()  # a caller's list is its own
    assert len(trial_examples(spec(world), tokenizer, "train")) == 12


def test_anything_the_examples_depend_on_encodes_them_again(world, encodings):
    tokenizer = world.tokenizer()
    full = trial_examples(spec(world), tokenizer, "train")
    fewer = trial_examples(spec(world, train_examples=5), tokenizer, "train")
    assert fewer == full[:5]
    shorter = trial_examples(spec(world, max_length=20), tokenizer, "train")
    assert all(len(e.input_ids) <= 20 for e in shorter) and shorter != full
    assert len(trial_examples(spec(world), tokenizer, "validation")) == 4
    assert len(encodings) == 12 + 5 + 12 + 4
    with pytest.raises(ValueError, match="seqkd needs the teacher's generated responses"):
        trial_examples(spec(world, method="seqkd"), tokenizer, "train")


def test_a_rewritten_data_file_is_read_again(tmp_path, world, encodings):
    data = tmp_path / "data"
    data.mkdir()
    records = json.loads((world.data_dir / "train.json").read_text())
    (data / "train.json").write_text(json.dumps(records))
    run = dataclasses.replace(spec(world), data_dir=str(data))
    tokenizer = world.tokenizer()
    assert len(trial_examples(run, tokenizer, "train")) == 12
    (data / "train.json").write_text(json.dumps(records[:3]))
    assert len(trial_examples(run, tokenizer, "train")) == 3
