"""The tiny world: deterministic, disjoint splits, a working tokenizer, cached by content."""

import dataclasses
import re

import pytest
from transformers import AutoModelForCausalLM

from kdray.data.batches import IGNORE_INDEX, collate, encode_example, length_grouped_batches
from kdray.errors import ConfigError
from kdray.eval.answers import last_number
from kdray.world.build import build_world
from kdray.world.synthetic_math import MathWorldConfig, generate_splits

SMALL = MathWorldConfig(train_size=300, validation_size=40, test_size=40)


def test_generator_is_deterministic_and_seeded():
    assert generate_splits(SMALL) == generate_splits(SMALL)
    assert generate_splits(SMALL) != generate_splits(dataclasses.replace(SMALL, seed=1))


def test_splits_are_disjoint_and_sized():
    splits = generate_splits(SMALL)
    texts = {name: {p["instruction"] for p in problems} for name, problems in splits.items()}
    assert {n: len(t) for n, t in texts.items()} == {"train": 300, "validation": 40, "test": 40}
    assert not texts["train"] & texts["test"]
    assert not texts["train"] & texts["validation"]
    assert not texts["validation"] & texts["test"]


def test_rationales_are_correct_arithmetic_ending_in_the_answer():
    for problem in generate_splits(SMALL)["train"]:
        assert set(problem) == {"instruction", "input", "output", "answer", "task"}
        steps = len(re.findall(r" = ", problem["output"]))
        assert problem["task"] == f"arith-{steps}step"
        last_line = problem["output"].split(". ")[-1]  # worded several ways, ends in the answer
        assert re.search(rf"(?<!\d){problem['answer']}(?!\d)", last_line), problem["output"]
        assert last_number(problem["output"]) == float(problem["answer"])
        for a, op, b, c in re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)", problem["output"]):
            assert eval(f"{a}{op}{b}") == int(c)  # noqa: S307 - digits and one operator


def test_invalid_world_config_is_refused():
    with pytest.raises(ConfigError):
        MathWorldConfig(min_steps=3, max_steps=1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(SMALL, tmp_path_factory.mktemp("cache"))


def test_world_is_built_once_then_reused(world, tmp_path):
    built_world, built_now = world
    assert built_now
    again, built_again = build_world(SMALL, built_world.root.parent.parent)
    assert not built_again and again.root == built_world.root
    other, _ = build_world(dataclasses.replace(SMALL, seed=5), built_world.root.parent.parent)
    assert other.root != built_world.root


def test_tokenizer_round_trips_and_models_load_from_folders(world):
    built, _ = world
    tokenizer = built.tokenizer()
    problem = built.split("test")[0]
    encoded = encode_example(problem, tokenizer)
    text = tokenizer.decode(encoded.input_ids, skip_special_tokens=True)
    assert text.endswith(problem["output"])
    assert encoded.input_ids[-1] == tokenizer.eos_token_id
    sizes = built.parameter_counts()
    assert sizes["tiny-qwen2-xs"] < sizes["tiny-qwen2-s"] < sizes["tiny-qwen2-m"]
    model = AutoModelForCausalLM.from_pretrained(str(built.model_dir("tiny-qwen2-xs")))
    assert model.config.model_type == "qwen2"
    assert sum(p.numel() for p in model.parameters()) == sizes["tiny-qwen2-xs"]


def test_collate_scores_only_response_tokens_and_batches_cover_ranks(world):
    built, _ = world
    tokenizer = built.tokenizer()
    examples = [encode_example(p, tokenizer) for p in built.split("train")[:64]]
    batch = collate(examples[:4], tokenizer.pad_token_id)
    for row, example in enumerate(examples[:4]):
        scored = (batch["labels"][row] != IGNORE_INDEX).nonzero().flatten()
        assert scored.min().item() == example.prompt_length
        assert scored.max().item() == len(example.input_ids) - 1
    rank0 = length_grouped_batches(examples, 8, seed=0, rank=0, world_size=2)
    rank1 = length_grouped_batches(examples, 8, seed=0, rank=1, world_size=2)
    seen0 = {i for _ in range(4) for i in next(rank0)}  # example indices
    seen1 = {i for _ in range(4) for i in next(rank1)}
    assert len(seen0) == len(seen1) == 32 and not seen0 & seen1


def test_a_model_folder_loads_the_tokenizer_its_model_trained_on(tmp_path):
    """Beside a Qwen2 config.json, transformers 5 would take Qwen2Tokenizer, which drops the
    tiny world's spaces; Seq-KD's teacher responses and every folder load go through this."""
    from transformers import AutoTokenizer

    from conftest import tiny_student_folder
    from kdray.models import load_tokenizer

    folder = tiny_student_folder(tmp_path / "student")
    text = "Ann has 3 pens and gets 4 more. How many?"
    trained_on = AutoTokenizer.from_pretrained(str(tmp_path / "tokenizer"))
    loaded = load_tokenizer(str(folder))
    assert loaded(text)["input_ids"] == trained_on(text)["input_ids"]
    ids = loaded(text)["input_ids"]
    assert loaded.decode(ids) == trained_on.decode(ids) != text.replace(" ", "")
