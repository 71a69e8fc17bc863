"""A deterministic generator of commonsense multiple-choice questions in the LLM-Adapters form
(instruction, input, output, answer) plus a `task` field: six sub-tasks, each with the answer
format of one real benchmark (BoolQ, PIQA, SIQA, ARC, WinoGrande, HellaSwag).

The "common sense" is a small seeded fact table of animals (a colour, a food, a home and a
friend each: 48 facts by default). It is never written in a prompt, so a model must learn it
from the training answers, and most questions combine facts: a fact of a friend (two hops), an
animal picked out by two of its facts (three hops), a fact checked for each animal of a group
or each option.

Each output is a short rationale, one line per fact or option, ending "So the correct answer is
answer3", whose last word is the gold `answer`. Options are checked one by one ("Answer2: the
cave - yes"), so the final choice only has to find the "yes" line: matching the facts to an
option's label in one step was out of reach of the tiny models (chance after 1,500 steps). No
content word touches punctuation, which the BPE tokenizer would merge into new tokens
("▁cave." vs "▁cave") and so hide that two mentions are the same word."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from kdray.config import _check
from kdray.world.splits import Record, draw_splits

ANIMALS = (
    "fox", "owl", "bear", "frog", "deer", "wolf", "hare", "duck",
    "goat", "mole", "crow", "seal", "lynx", "swan", "toad", "boar",
)  # fmt: skip
VALUES = {
    "colour": ("red", "blue", "green", "yellow", "black", "white"),
    "food": ("berries", "fish", "seeds", "grass", "nuts", "worms"),
    "home": ("forest", "river", "hill", "cave", "field", "lake"),
}
ATTRIBUTES = tuple(VALUES)
SCENES = ("In the morning", "At night", "After the rain", "On a sunny day")
"""Irrelevant openings: WinoGrande-like sentences vary without changing the answer."""
_DESCRIBE = {  # HellaSwag-like contexts: an animal picked out by two of its facts
    ("colour", "home"): "A {} animal from the {} wakes up",
    ("colour", "food"): "A {} animal that eats {} wakes up",
    ("food", "home"): "An animal that eats {} in the {} wakes up",
}

TASKS = ("boolq-like", "piqa-like", "siqa-like", "arc-like", "winogrande-like", "hellaswag-like")
ANSWER_TOKENS: dict[str, tuple[str, ...]] = {
    "boolq-like": ("true", "false"),
    "piqa-like": ("solution1", "solution2"),
    "siqa-like": ("answer1", "answer2", "answer3"),
    "arc-like": ("answer1", "answer2", "answer3", "answer4"),
    "winogrande-like": ("option1", "option2"),
    "hellaswag-like": ("ending1", "ending2", "ending3", "ending4"),
}
"""The answers a sub-task allows, as LLM-Adapters writes them in "Answer format: ..."."""


@dataclass(frozen=True)
class CommonsenseWorldConfig:
    """The synthetic commonsense task and its splits. Changing any field builds a new world."""

    seed: int = 0
    """Seeds the fact table and the questions."""
    entities: int = 12
    """Animals in the fact table (4 facts each; at most 16; the default split sizes need 10)."""
    max_group: int = 3
    """Most animals a BoolQ-like "does the fox or the owl ..." question names."""
    train_size: int = 16000
    """Training questions: the teacher's pool; students use the first TrainConfig.train_examples."""
    validation_size: int = 200
    """Validation questions."""
    test_size: int = 300
    """Test questions."""
    vocab_size: int = 400
    """Target size of the BPE tokenizer trained on the task."""

    def __post_init__(self) -> None:
        _check(
            len(VALUES["colour"]) <= self.entities <= len(ANIMALS),
            f"entities must be in [{len(VALUES['colour'])}, {len(ANIMALS)}]",
        )
        _check(2 <= self.max_group <= 3, "max_group must be 2 or 3")
        _check(
            min(self.train_size, self.validation_size, self.test_size) >= 1,
            "every split needs at least one question",
        )


@dataclass(frozen=True)
class FactTable:
    """The world's facts: what every model has to learn from the training answers."""

    animals: tuple[str, ...]
    facts: dict[str, dict[str, str]]
    """attribute (colour, food, home, friend) -> animal -> value."""

    def value(self, attribute: str, animal: str) -> str:
        return self.facts[attribute][animal]

    @cached_property
    def identifiable(self) -> list[tuple[str, tuple[str, str]]]:
        """(animal, two attributes) where those two facts pick out that animal alone."""
        found = []
        for animal in self.animals:
            for pair in _DESCRIBE:
                values = [self.value(p, animal) for p in pair]
                matches = [x for x in self.animals if [self.value(p, x) for p in pair] == values]
                if matches == [animal]:
                    found.append((animal, pair))
        return found


def fact_table(config: CommonsenseWorldConfig) -> FactTable:
    """The seeded fact table of `config` (the one its questions are about)."""
    return _fact_table(random.Random(config.seed), config.entities)


def _fact_table(rng: random.Random, entities: int) -> FactTable:
    animals = tuple(rng.sample(ANIMALS, entities))
    facts: dict[str, dict[str, str]] = {}
    for attribute, values in VALUES.items():
        # Every value is held by about as many animals, so no answer is a safe guess.
        pool = [values[i % len(values)] for i in range(entities)]
        rng.shuffle(pool)
        facts[attribute] = dict(zip(animals, pool, strict=True))
    while True:  # a friend is another animal
        friends = rng.sample(animals, entities)
        if all(a != f for a, f in zip(animals, friends, strict=True)):
            break
    facts["friend"] = dict(zip(animals, friends, strict=True))
    return FactTable(animals, facts)


_STATES = {"colour": "is {}", "food": "eats {}", "home": "lives in the {}"}
_ASKS = {"colour": "is {1} {0}", "food": "does {1} eat {0}", "home": "does {1} live in the {0}"}


def _fact(table: FactTable, attribute: str, animal: str, start: str = "The") -> str:
    """'The fox lives in the cave', "The fox's friend is the owl"."""
    if attribute == "friend":
        return f"{start} {animal}'s friend is the {table.value('friend', animal)}"
    return f"{start} {animal} {_STATES[attribute].format(table.value(attribute, animal))}"


def _check_mark(ok: bool) -> str:
    return " - yes" if ok else " - no"


def _record(task: str, instruction: str, lines: Sequence[str], answer: str) -> Record:
    return {
        "instruction": instruction,
        "input": "",
        "output": "\n".join([*lines, f"So the correct answer is {answer}"]),
        "answer": answer,
        "task": task,
    }


def _choice(
    rng: random.Random,
    turn: int,
    task: str,
    question: str,
    options: Sequence[tuple[str, str]],
    label: str = "Answer",
    lines: Sequence[str] = (),
) -> Record:
    """A multiple-choice record from (option text, checked statement) pairs, the correct one
    first: it goes to position `turn` (cycling), the wrong ones are shuffled around it. After
    `lines`, the output checks every option in order."""
    tokens = ANSWER_TOKENS[task]
    wrong = list(options[1:])
    rng.shuffle(wrong)
    position = turn % len(tokens)
    ordered = [*wrong[:position], options[0], *wrong[position:]]
    listed = " ".join(f"{label}{i}: {text}" for i, (text, _) in enumerate(ordered, 1))
    checks = [
        f"{label}{i}: {statement}{_check_mark(i == position + 1)}"
        for i, (_, statement) in enumerate(ordered, 1)
    ]
    instruction = f"{question} {listed} Answer format: {'/'.join(tokens)}"
    return _record(task, instruction, [*lines, *checks], tokens[position])


def _other_values(rng: random.Random, attribute: str, exclude: Sequence[str], k: int) -> list:
    return rng.sample([v for v in VALUES[attribute] if v not in exclude], k)


def _distinct_group(
    rng: random.Random, table: FactTable, attribute: str, size: int, exclude: Sequence[str] = ()
) -> list[str]:
    """`size` animals whose `attribute` values differ from each other and from `exclude`, so
    every value in a rationale is a different word."""
    while True:
        group = rng.sample(table.animals, size)
        values = [table.value(attribute, a) for a in group]
        if len(set(values)) == size and not set(values) & set(exclude):
            return group


def _boolq(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """True/false: does one animal of a group, or an animal's friend, have a fact?"""
    truth = turn % 2 == 0
    attribute = rng.choice(ATTRIBUTES)
    if rng.random() < 0.2:  # two hops: the friend's fact
        animal = rng.choice(table.animals)
        friend = table.value("friend", animal)
        held = table.value(attribute, friend)
        value = held if truth else _other_values(rng, attribute, [held], 1)[0]
        question = _ASKS[attribute].format(value, f"the {animal}'s friend")
        lines = [
            _fact(table, "friend", animal),
            _fact(table, attribute, friend) + _check_mark(truth),
        ]
    else:
        group = _distinct_group(rng, table, attribute, rng.randint(2, config.max_group))
        held = [table.value(attribute, a) for a in group]
        value = rng.choice(held) if truth else _other_values(rng, attribute, held, 1)[0]
        question = _ASKS[attribute].format(value, " or ".join(f"the {a}" for a in group))
        lines = [
            _fact(table, attribute, a) + _check_mark(v == value)
            for a, v in zip(group, held, strict=True)
        ]
    prefix = "Please answer the following question with true or false, question:"
    instruction = f"{prefix} {question} ? Answer format: true/false"
    return _record("boolq-like", instruction, lines, "true" if truth else "false")


_GOALS = {
    "food": ("how do you feed the {} and the {} ?", "bring {} and {}"),
    "home": ("how do you visit the {} and then the {} ?", "go to the {} then to the {}"),
    "colour": ("how do you spot the {} and the {} ?", "look for a {} one and a {} one"),
}


def _piqa(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """A goal about two animals; the wrong solution gets one of their two facts wrong."""
    attribute = rng.choice(ATTRIBUTES)
    a, b = _distinct_group(rng, table, attribute, 2)
    right = [table.value(attribute, a), table.value(attribute, b)]
    wrong = list(right)
    wrong[rng.randrange(2)] = _other_values(rng, attribute, right, 1)[0]
    goal, solution = _GOALS[attribute]
    question = f"Please choose the correct solution to the question: {goal.format(a, b)}"
    options = [(solution.format(*right),) * 2, (solution.format(*wrong),) * 2]
    lines = [_fact(table, attribute, a), _fact(table, attribute, b)]
    return _choice(rng, turn, "piqa-like", question, options, "Solution", lines)


_SOCIAL = {
    "food": "The {} wants to bring food to the {}'s friend. What should it bring ?",
    "home": "The {} wants to visit the {}'s friend. Where should it go ?",
    "colour": "The {} is looking for the {}'s friend. What colour should it look for ?",
}


def _siqa(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """Three options; the answer is a fact of a friend (two hops)."""
    attribute = rng.choice(ATTRIBUTES)
    b = rng.choice(table.animals)
    friend = table.value("friend", b)
    a = rng.choice([x for x in table.animals if x not in (b, friend)])
    correct = table.value(attribute, friend)
    shown = (lambda v: f"the {v}") if attribute == "home" else (lambda v: v)
    values = [correct, *_other_values(rng, attribute, [correct], 2)]
    question = (
        f"Please choose the correct answer to the question: {_SOCIAL[attribute].format(a, b)}"
    )
    lines = [_fact(table, "friend", b), _fact(table, attribute, friend)]
    options = [(shown(v), shown(v)) for v in values]
    return _choice(rng, turn, "siqa-like", question, options, lines=lines)


def _arc(rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int) -> Record:
    """Four animals: which one has a given fact?"""
    attribute = rng.choice(ATTRIBUTES)
    group = _distinct_group(rng, table, attribute, 4)
    value = table.value(attribute, group[0])
    question = (
        "Please choose the correct answer to the question: "
        f"which of these animals {_STATES[attribute].format(value)} ?"
    )
    options = [(f"the {a}", _fact(table, attribute, a, "the")) for a in group]
    return _choice(rng, turn, "arc-like", question, options)


_BLANKS = {
    "food": "{} the {} and the {} find some {} and only _ eats them.",
    "home": "{} the {} and the {} walk to the {} where only _ lives.",
    "colour": "{} the {} and the {} find a {} feather and only _ has that colour.",
}


def _winogrande(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """A sentence with a blank and two animals, resolved by a fact of one of them."""
    attribute = rng.choice(ATTRIBUTES)
    a, b = _distinct_group(rng, table, attribute, 2)
    correct, other = (a, b) if rng.random() < 0.5 else (b, a)
    sentence = _BLANKS[attribute].format(rng.choice(SCENES), a, b, table.value(attribute, correct))
    question = (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        + sentence
    )
    options = [(f"the {x}", _fact(table, attribute, x, "the")) for x in (correct, other)]
    return _choice(rng, turn, "winogrande-like", question, options, "Option")


_ENDINGS = {
    "food": "eats some {}",
    "home": "goes back to the {}",
    "colour": "shakes its {} fur",
    "friend": "plays with the {}",
}


def _hellaswag(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """Context: an animal described by two facts; the right ending is another fact of it."""
    animal, pair = rng.choice(table.identifiable)
    context = _DESCRIBE[pair].format(*(table.value(p, animal) for p in pair))
    (remaining,) = set(ATTRIBUTES) - set(pair)
    ending = rng.choice((remaining, "friend"))
    correct = table.value(ending, animal)
    if ending == "friend":
        wrong = rng.sample([x for x in table.animals if x not in (animal, correct)], 3)
    else:
        wrong = _other_values(rng, ending, [correct], 3)
    question = f"Please choose the correct ending to complete the given sentence: {context}. It"
    lines = [f"The animal is the {animal}", _fact(table, ending, animal)]
    options = [(_ENDINGS[ending].format(v),) * 2 for v in [correct, *wrong]]
    return _choice(rng, turn, "hellaswag-like", question, options, "Ending", lines)


_Generator = Callable[[random.Random, FactTable, CommonsenseWorldConfig, int], Record]
_GENERATORS: dict[str, _Generator] = {
    "boolq-like": _boolq,
    "piqa-like": _piqa,
    "siqa-like": _siqa,
    "arc-like": _arc,
    "winogrande-like": _winogrande,
    "hellaswag-like": _hellaswag,
}


def generate_splits(config: CommonsenseWorldConfig) -> dict[str, list[Record]]:
    """Test, validation and train splits (drawn in that order, sub-tasks in turn); no
    instruction text occurs in two splits."""
    rng = random.Random(config.seed)
    table = _fact_table(rng, config.entities)

    def draw(rng: random.Random, index: int) -> Record:
        # Sub-tasks take turns, and each sub-task's turns cycle through its gold answers, so
        # every split is balanced over both (a retried draw keeps its turn).
        task, turn = TASKS[index % len(TASKS)], index // len(TASKS)
        return _GENERATORS[task](rng, table, config, turn)

    return draw_splits(config, draw, rng, hint="use more entities or smaller splits")


_ANSWER_PATTERNS = {
    task: re.compile(r"\b(" + "|".join(tokens) + r")\b") for task, tokens in ANSWER_TOKENS.items()
}


def extract_choice(task: str, response: str) -> str | None:
    """The first of the sub-task's answer tokens in a response (LLM-Adapters reads the first
    match; the rationale's "Answer2:" labels are capitalised and do not count), or None."""
    match = _ANSWER_PATTERNS[task].search(response)
    return match.group(1) if match else None
