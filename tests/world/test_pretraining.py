"""The tiny world's pretraining: a generic corpus (not the task's format), rationales with
several wordings, and seeded, cached bases that learn from the corpus."""

import dataclasses
import json
import re

import pytest
import torch

from kdray.config.pretrain import PretrainConfig
from kdray.config.run import TrainConfig
from kdray.config.schedule import warmup_then_decay
from kdray.errors import ConfigError
from kdray.eval.answers import extract_answer
from kdray.world.bases import build_base, pretraining_record
from kdray.world.build import build_world, init_seed
from kdray.world.pretraining import pretraining_corpus
from kdray.world.synthetic_commonsense import CommonsenseWorldConfig, fact_table
from kdray.world.synthetic_instruction import (
    OPPOSITES,
    InstructionWorldConfig,
    transform,
)
from kdray.world.synthetic_math import (
    ANSWER_PHRASES,
    START_PHRASES,
    MathWorldConfig,
    generate_splits,
)

SMALL = MathWorldConfig(train_size=300, validation_size=40, test_size=40)


@pytest.mark.parametrize(
    "config", [SMALL, CommonsenseWorldConfig(), InstructionWorldConfig()], ids=type
)
def test_corpus_is_seeded_generic_text_outside_the_task_format(config):
    documents = pretraining_corpus(config, 500)
    assert documents == pretraining_corpus(config, 500)
    assert documents != pretraining_corpus(dataclasses.replace(config, seed=1), 500)
    assert len(set(documents)) > 100  # varied, not one sentence repeated
    for document in documents:
        assert "###" not in document and "answer" not in document.lower()
        assert "\n" not in document


def test_math_corpus_states_true_arithmetic():
    facts = 0
    for document in pretraining_corpus(SMALL, 300):
        for a, op, b, c in re.findall(r"(\d+) ([-+]) (\d+) = (\d+)", document):
            assert eval(f"{a}{op}{b}") == int(c)  # noqa: S307 - digits and one operator
            facts += 1
        for a, word, b, c in re.findall(r"(\d+) (plus|minus) (\d+) is (\d+)", document):
            assert (int(a) + int(b) if word == "plus" else int(a) - int(b)) == int(c)
            facts += 1
    assert facts > 300


def test_math_stories_end_with_each_persons_true_amount():
    """The stories' recaps and counted endings are what the task's reading needs: each
    person's own thing and amount after their own changes, never another person's."""
    endings = 0
    for document in pretraining_corpus(SMALL, 400):
        story = re.split(r" In the end| Counting for", document)[0]
        starts = re.findall(r"(\w+) has (\d+) (\w+)\.", story)
        if not starts:
            continue  # a line of arithmetic facts
        amounts = {name: int(value) for name, value, _ in starts}
        items = {name: item for name, _, item in starts}
        for name, sign, amount in re.findall(r"(\w+) (finds|loses) (\d+)", document):
            amounts[name] += int(amount) if sign == "finds" else -int(amount)
        told = re.findall(r"(?:In the end|and|So) (\w+) has (\d+) (\w+)", document)
        assert told, document
        for name, value, item in told:
            assert (int(value), item) == (amounts[name], items[name]), document
            endings += 1
    assert endings > 200


def test_commonsense_corpus_states_the_fact_table():
    config = CommonsenseWorldConfig()
    table = fact_table(config)
    text = " ".join(pretraining_corpus(config, 400))
    for animal in table.animals:
        assert f"The {animal} is {table.value('colour', animal)}." in text


def test_instruction_corpus_retells_each_list_truly():
    """Each retelling is the sub-task's transform of the document's own list, so the corpus
    teaches copying, reversing, keeping and counting animals and turning an adjective."""
    kinds = set()
    for document in pretraining_corpus(InstructionWorldConfig(), 300):
        listed, *retellings = re.split(r"(?<=\.) ", document)
        words = listed.removeprefix("I see ").rstrip(".").split()
        expected = {
            "Once more": transform("copy", words),
            "Backwards": transform("reverse", words),
            "The animals among them": transform("filter", words),
            "Turned to the opposite": transform("opposite", words),
        }
        for sentence in retellings:
            head, _, tail = sentence.rstrip(".").partition(": ")
            if head in expected:
                assert tail.split() == expected[head], document
            elif head.startswith("Of these"):
                assert head.split()[2] == transform("count", words)[0], document
            else:
                adjective, opposite = re.fullmatch(r"The opposite of (\w+) is (\w+)", head).groups()
                assert OPPOSITES[adjective] == opposite, document
            kinds.add(head.split(",")[0])
    assert {"Once more", "Backwards", "The animals among them", "Turned to the opposite"} <= kinds


def test_rationales_vary_in_wording_but_not_in_arithmetic():
    varied = generate_splits(SMALL)["train"]
    markers = ("starts with", "At first", "begins with", " has ", "We start with")
    assert len(START_PHRASES) == len(markers)
    first_lines = [r["output"].split(". ")[0] for r in varied]
    assert {next(m for m in markers if m in line) for line in first_lines} == set(markers)
    endings = {re.sub(r"\d+|[A-Z][a-z]+ (?=has|ends)|\w+\.$", "#", r["output"].split(". ")[-1])
               for r in varied}  # fmt: skip
    assert len(endings) == len(ANSWER_PHRASES)
    swapped = units = 0
    for record in varied:
        item = re.search(r"How many (\w+) does", record["instruction"]).group(1)
        steps = re.findall(r"(\d+) ([-+*]) (\d+) = (\d+)( \w+)?\.", record["output"])
        assert len(steps) == int(record["task"].split("-")[1][0])  # every step is written
        value = None
        for a, op, b, c, unit in steps:
            a, b, c = int(a), int(b), int(c)  # (test_world checks the arithmetic)
            assert unit in ("", f" {item}")
            if value is not None and a != value:  # the running amount comes second
                assert op != "-" and b == value
                swapped += 1
            units += bool(unit)
            value = c
        assert extract_answer("number", record["output"]) == record["answer"] == str(value)
    assert swapped > 0.2 * len(varied) and units > 0.5 * len(varied)  # both happen often
    fixed = dataclasses.replace(
        SMALL, phrasings=1, answer_phrasings=1, commute_prob=0.0, unit_prob=0.0
    )
    for record in generate_splits(fixed)["train"]:  # every variation off: the old wording
        assert " starts with " in record["output"]
        assert record["output"].endswith(
            f" = {record['answer']}. The answer is {record['answer']}."
        )
    with pytest.raises(ConfigError, match="phrasings"):
        MathWorldConfig(phrasings=0)
    with pytest.raises(ConfigError, match="commute_prob"):
        MathWorldConfig(commute_prob=1.5)


def test_learning_rate_floor():
    train = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    factor = warmup_then_decay(train)
    assert factor(0) == pytest.approx(0.1)  # warm-up from 1/10
    assert factor(10) == pytest.approx(1.0)
    assert factor(100) == pytest.approx(0.1)  # the floor, not zero
    assert warmup_then_decay(dataclasses.replace(train, min_lr_ratio=0.0))(100) == 0.0
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="min_lr_ratio"):
            TrainConfig(min_lr_ratio=bad)
    with pytest.raises(ConfigError, match="step"):
        PretrainConfig(steps=0)


def test_bases_are_seeded_cached_and_learn(tmp_path):
    world, _ = build_world(SMALL, tmp_path)
    pretrain = PretrainConfig(steps=30, teacher_steps=30, learning_rate=1e-2)
    first, built = build_base(world, "tiny-qwen2-xs", 0, pretrain, teacher=False)
    again, built_again = build_base(world, "tiny-qwen2-xs", 0, pretrain, teacher=False)
    other, _ = build_base(world, "tiny-qwen2-xs", 1, pretrain, teacher=False)
    assert built and not built_again and again == first and other != first
    curve = pretraining_record(first)["curve"]
    assert curve[-1][1] < curve[0][1] - 0.5  # it learned the corpus
    weights = [_weights(folder) for folder in (first, other)]
    assert not torch.equal(weights[0], weights[1])  # another seed: another initialisation
    assert init_seed("tiny-qwen2-xs", "qwen", 0) != init_seed("tiny-qwen2-xs", "qwen", 1)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))["model.embed_tokens.weight"]


def test_the_package_ships_the_default_studys_bases_for_the_world_built_here(tmp_path):
    """The world built on this machine has the tokenizer and keys the packaged bases were made
    with, so a fresh cache installs them (checksums verified) instead of pretraining: the
    default study's and the headline cell's seeds 3 and 4."""
    from kdray.cli.package_bases import packaged_needs
    from kdray.world.bases import base_folder, install_packaged_base, packaged_base

    config, needs = packaged_needs(str(tmp_path))
    world, _ = build_world(config.world, config.cache_root(), config.family)
    assert len(needs) == 9  # the teacher's, 2 students x 3 seeds, tiny-qwen2-s seeds 3 and 4
    assert {(n.model, n.seed) for n in needs[7:]} == {("tiny-qwen2-s", 3), ("tiny-qwen2-s", 4)}
    folders = [base_folder(world, n.model, n.seed, config.pretrain, n.teacher) for n in needs]
    assert all(packaged_base(world, folder) for folder in folders)
    assert install_packaged_base(world, folders[0])
    record = pretraining_record(folders[0])
    assert (
        record["model"] == needs[0].model
        and record["recipe"]["steps"] == config.pretrain.teacher_steps
    )


def test_a_damaged_or_foreign_packaged_base_is_refused(tmp_path):
    import shutil

    from kdray.cache import CacheCorruptError, write_checksums
    from kdray.world.bases import (
        PACKAGED_BASES,
        install_packaged_base,
        packaged_base,
        tokenizer_sha256,
    )

    world, _ = build_world(SMALL, tmp_path / "cache")
    source = next(PACKAGED_BASES.iterdir())
    packaged = tmp_path / "packaged"
    shutil.copytree(source, packaged / source.name)
    folder = tmp_path / "cache" / "bases" / source.name
    assert packaged_base(world, folder, packaged) is None  # another world's tokenizer
    record = {"tokenizer_sha256": tokenizer_sha256(world)}  # as if made for this world
    (packaged / source.name / "packaged.json").write_text(json.dumps(record))
    (packaged / source.name / "checksums.json").unlink()
    write_checksums(packaged / source.name, "checksums.json")
    assert install_packaged_base(world, folder, packaged)  # intact: installed
    shutil.rmtree(folder)
    weights = packaged / source.name / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # truncated
    with pytest.raises(CacheCorruptError, match="does not match its checksum"):
        install_packaged_base(world, folder, packaged)
    assert not folder.exists()  # nothing half-written in the cache
