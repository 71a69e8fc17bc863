"""The synthetic commonsense and instruction domains, the shared split contract, and the math
generator's unchanged texts (now with a `task` field)."""

import dataclasses
import hashlib
import json
import random
import re
from collections import Counter, defaultdict

import pytest

from kdray.data.prompts import format_prompt
from kdray.errors import ConfigError
from kdray.world import synthetic_commonsense as cs
from kdray.world import synthetic_instruction as si
from kdray.world.splits import draw_splits
from kdray.world.synthetic_math import NAMES, MathWorldConfig, person_styles
from kdray.world.synthetic_math import generate_splits as math_splits
from kdray.world.tokenizer import train_tokenizer

SIZES = {"train_size": 1200, "validation_size": 60, "test_size": 120}
COMMONSENSE = cs.CommonsenseWorldConfig(**SIZES)
INSTRUCTION = si.InstructionWorldConfig(**SIZES)
CONFIGS = {"commonsense": (COMMONSENSE, cs), "instruction": (INSTRUCTION, si)}


@pytest.fixture(scope="module")
def splits():
    return {name: module.generate_splits(config) for name, (config, module) in CONFIGS.items()}


@pytest.mark.parametrize("domain", CONFIGS)
def test_generators_are_deterministic_and_seeded(domain, splits):
    config, module = CONFIGS[domain]
    assert module.generate_splits(config) == splits[domain]
    assert module.generate_splits(dataclasses.replace(config, seed=1)) != splits[domain]


@pytest.mark.parametrize("domain", CONFIGS)
def test_splits_are_sized_disjoint_and_cover_every_sub_task(domain, splits):
    module = CONFIGS[domain][1]
    records = splits[domain]
    assert list(records) == ["test", "validation", "train"]
    assert {n: len(r) for n, r in records.items()} == {"train": 1200, "validation": 60, "test": 120}
    items = {n: {(x["instruction"], x["input"]) for x in r} for n, r in records.items()}
    assert {n: len(i) for n, i in items.items()} == {n: len(r) for n, r in records.items()}
    assert not items["train"] & items["test"]
    assert not items["train"] & items["validation"]
    assert not items["validation"] & items["test"]
    for split in records.values():
        shares = Counter(x["task"] for x in split)
        assert set(shares) == set(module.TASKS)
        assert min(shares.values()) >= 0.1 * len(split)
    for record in records["train"]:
        assert set(record) == {"instruction", "input", "output", "answer", "task"}


def test_commonsense_labels_are_balanced_on_train(splits):
    labels = defaultdict(Counter)
    for record in splits["commonsense"]["train"]:
        labels[record["task"]][record["answer"]] += 1
    for task, counts in labels.items():
        k = len(cs.ANSWER_TOKENS[task])
        assert set(counts) == set(cs.ANSWER_TOKENS[task]), task
        assert max(counts.values()) <= 1.5 / k * sum(counts.values()), (task, counts)


def test_commonsense_outputs_end_with_an_allowed_answer(splits):
    for records in splits["commonsense"].values():
        for record in records:
            tokens = cs.ANSWER_TOKENS[record["task"]]
            assert record["answer"] in tokens
            assert record["output"].endswith(f"the correct answer is {record['answer']}")
            assert record["instruction"].endswith("Answer format: " + "/".join(tokens))
            # The rationale names no other answer token, so reading the first one is right.
            assert cs.extract_choice(record["task"], record["output"]) == record["answer"]
            assert record["input"] == ""


_LINE = re.compile(
    r"The (?:friend of the (?P<of>\w+) is the (?P<friend>\w+)"
    r"|(?P<animal>\w+) (?P<verb>can|cannot|eats|lives in the|is) (?P<value>\w+))"
)
_TARGET = r"(?:friend of the )?\w+"


def _resolve(table: cs.FactTable, named: str) -> str:
    """'fox' -> fox; 'friend of the fox' -> the fox's friend."""
    if named.startswith("friend of the "):
        return table.value("friend", named.removeprefix("friend of the "))
    return named


def _gold(table: cs.FactTable, task: str, question: str) -> str:
    """The answer recomputed from the question and the fact table, apart from the generator."""
    can = {a: {s: table.value(s, a) == "yes" for s in cs.SKILLS} for a in table.animals}
    if task == "boolq-like":
        both, a, join, b, skill = re.search(
            r"can (both )?the (\w+) (or|and) the (\w+) (\w+) \?", question
        ).groups()
        holds = [can[a][skill], can[b][skill]]
        return str(all(holds) if both else any(holds)).lower()
    if task == "piqa-like":
        target = re.search(rf"feed the ({_TARGET}) (?:while|when|before)", question).group(1)
        return f"solution{cs.FOODS.index(table.value('food', _resolve(table, target))) + 1}"
    if task == "siqa-like":
        target = re.search(rf"go to \w+ the ({_TARGET}) \?", question).group(1)
        return f"answer{cs.HOMES.index(table.value('home', _resolve(table, target))) + 1}"
    if task == "arc-like":
        target = re.search(rf"what colour is the ({_TARGET}) that", question).group(1)
        return f"answer{cs.COLOURS.index(table.value('colour', _resolve(table, target))) + 1}"
    if task == "winogrande-like":
        a, b, skill = re.search(
            rf"the ({_TARGET}) and the ({_TARGET}) \w+ but only _ can (\w+)", question
        ).groups()
        assert can[_resolve(table, a)][skill] != can[_resolve(table, b)][skill]
        return "option1" if can[_resolve(table, a)][skill] else "option2"
    target = re.search(rf"the ({_TARGET}) (?:goes|wakes|walks)", question).group(1)
    animal = _resolve(table, target)
    combo = (can[animal]["swim"], can[animal]["climb"])
    return f"ending{[(True, True), (True, False), (False, True), (False, False)].index(combo) + 1}"


def test_commonsense_gold_answers_and_rationales_follow_the_fact_table(splits):
    table = cs.fact_table(COMMONSENSE)
    verbs = {"eats": "food", "lives in the": "home", "is": "colour"}
    for records in splits["commonsense"].values():
        for record in records:
            assert _gold(table, record["task"], record["instruction"]) == record["answer"]
            *lines, last = record["output"].split("\n")
            assert last == f"So the correct answer is {record['answer']}"
            for line in lines:
                fact = _LINE.fullmatch(line)
                assert fact, line
                if fact["of"]:
                    assert table.value("friend", fact["of"]) == fact["friend"], line
                elif fact["verb"] in ("can", "cannot"):
                    held = table.value(fact["value"], fact["animal"])
                    assert held == ("yes" if fact["verb"] == "can" else "no"), line
                else:
                    assert table.value(verbs[fact["verb"]], fact["animal"]) == fact["value"]


def _recomputed(task: str, words: list[str]) -> list[str]:
    """The transformations written out independently of the generator."""
    animals = [w for w in words if w in si.ANIMALS]
    return {
        "copy": words,
        "opposite": [si.OPPOSITES[w] if w in si.ADJECTIVES else w for w in words],
        "filter": animals,
        "count": [str(len(animals))],
        "reverse": list(reversed(words)),
    }[task]


def test_instruction_references_are_correct(splits):
    for records in splits["instruction"].values():
        for record in records:
            assert record["output"].strip() and record["output"] == record["answer"]
            assert record["instruction"] == si.INSTRUCTIONS[record["task"]]
            words = record["input"].split()
            assert 3 <= len(words) <= 4 and len(set(words)) == len(words)
            adjectives = [w for w in words if w in si.ADJECTIVES]
            assert len(adjectives) == (0 if record["task"] in ("count", "filter") else 1)
            assert record["output"].split() == _recomputed(record["task"], words)
    assert si.transform("copy", ["fox", "cup", "big"]) == ["fox", "cup", "big"]
    assert si.transform("reverse", ["fox", "cup", "big"]) == ["big", "cup", "fox"]
    assert si.transform("filter", ["fox", "cup", "owl"]) == ["fox", "owl"]
    assert si.transform("count", ["fox", "cup", "owl"]) == ["2"]
    assert si.transform("opposite", ["fox", "cold", "cup"]) == ["fox", "hot", "cup"]


# sha256 of the test/validation/train records (all fields but `task`) of MathWorldConfig(**_M),
# and of the same with small numbers, each pinned when its wording was the default: the texts
# of a config must not change (or the content keys would name different data).
_M = {"train_size": 400, "validation_size": 40, "test_size": 40}
_PRESET = {"max_start": 12, "max_operand": 4, "max_factor": 1, "max_value": 16}
_OLD = {"answer_phrasings": 1, "commute_prob": 0.0, "unit_prob": 0.0}
"""The variations added on 2026-12-06, turned off."""
_MATH_DIGESTS = {
    # One wording (phrasings=1): the texts of the generator before rationales varied.
    "a5bde4940ce0a977cf9c24315b0b78b0732b4aef0a3a47541851d7592642eeac": {
        **_M, **_OLD, "phrasings": 1,
    },
    "8d5d0a895ab4f9d00d80dc897b45f56e47ef81fb36eada2b2570ab5165deb6dc": {
        **_M, **_PRESET, **_OLD, "distractor_prob": 0.3, "phrasings": 1,
    },
    # Three wordings per rationale line (the default from 2026-12-03 to 2026-12-06).
    "b26198183121590e108c78ede71472df95928a600128615240f40207f472b33f": {
        **_M, **_OLD, "phrasings": 3,
    },
    "9a0554dfc7157796a33d940b377a4af3ec94bca5c30b011c2a598c3982d0c719": {
        **_M, **_PRESET, **_OLD, "distractor_prob": 0.3, "phrasings": 3,
    },
    # Five wordings a line, four last lines, operands in either order, items named or not
    # (the default since 2026-12-06).
    "81435efd24274fa9bf43f70830e6dcff2be05bc8175345e14e67eadb6cfab06b": _M,
    "fc220c83fa6451fa1450466b79aa4c7ebaf55cb79f48b2c6cf7dd906e899789e": {
        **_M, **_PRESET, "distractor_prob": 0.3,
    },
}  # fmt: skip


@pytest.mark.parametrize("digest", _MATH_DIGESTS)
def test_math_texts_are_unchanged_and_tasks_count_steps(digest):
    records = math_splits(MathWorldConfig(**_MATH_DIGESTS[digest]))
    fields = ("instruction", "input", "output", "answer")
    stripped = {n: [{f: r[f] for f in fields} for r in rs] for n, rs in records.items()}
    assert hashlib.sha256(json.dumps(stripped, sort_keys=True).encode()).hexdigest() == digest
    for record in records["test"] + records["train"]:
        assert record["task"] == f"arith-{record['output'].count(' = ')}step"


@pytest.mark.parametrize("domain", CONFIGS)
def test_prompts_fit_the_models_context(domain, splits):
    records = splits[domain]
    texts = [format_prompt(r) + r["output"] for r in records["train"][:600]]
    tokenizer = train_tokenizer(texts, CONFIGS[domain][0].vocab_size)
    for record in records["test"] + records["train"][:300]:
        ids = tokenizer(format_prompt(record) + record["output"], add_special_tokens=False)
        assert len(ids["input_ids"]) + 1 < 256  # + EOS


def test_too_small_a_space_and_bad_configs_are_refused():
    class Sizes:
        seed, test_size, validation_size, train_size = 0, 2, 2, 2

    def three_items(rng: random.Random, index: int) -> dict[str, str]:
        return {"instruction": str(rng.randrange(3)), "input": ""}

    with pytest.raises(ValueError, match="distinct validation items"):
        draw_splits(Sizes(), three_items)
    with pytest.raises(ConfigError):
        cs.CommonsenseWorldConfig(entities=40)
    with pytest.raises(ConfigError):
        cs.CommonsenseWorldConfig(max_hops=3)
    with pytest.raises(ConfigError):
        si.InstructionWorldConfig(min_words=4, max_words=3)
    with pytest.raises(ConfigError):
        si.InstructionWorldConfig(test_size=0)


_STYLED = MathWorldConfig(**{**_M, "train_size": 4000}, **_PRESET, style_concentration=0.5)


def test_math_persons_word_their_rationales_in_their_own_style():
    styles = person_styles(_STYLED)
    assert person_styles(MathWorldConfig()) is None
    assert set(styles) == set(NAMES) and styles == person_styles(_STYLED)  # seeded
    # Styles differ from person to person (a concentration of 0.5 marks them).
    favourites = {max(range(5), key=style.step.__getitem__) for style in styles.values()}
    assert len(favourites) >= 3
    # Each person's step lines follow their own weights, measured on the training split.
    counts: dict[str, Counter] = defaultdict(Counter)
    for record in math_splits(_STYLED)["train"]:
        name = record["instruction"].split()[0]
        for line in re.findall(r"(?:^|\. )(\w+,? )?\d+ [-+] \d+ = ", record["output"]):
            counts[name][line.strip() or "(none)"] += 1
    openers = {"(none)": 0, "Then": 1, "So": 2, "Next,": 3, "Now": 4}
    for name, style in styles.items():
        total = sum(counts[name].values())
        assert total > 500
        for opener, index in openers.items():
            assert abs(counts[name][opener] / total - style.step[index]) < 0.06, (name, opener)
    with pytest.raises(ConfigError, match="style_concentration"):
        MathWorldConfig(style_concentration=-1)
