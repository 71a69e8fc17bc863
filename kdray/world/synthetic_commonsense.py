"""A deterministic generator of commonsense multiple-choice questions in the LLM-Adapters form
(instruction, input, output, answer) plus a `task` field: six sub-tasks, each with the answer
format of one real benchmark (BoolQ, PIQA, SIQA, ARC, WinoGrande, HellaSwag).

The "common sense" is a small seeded fact table of animals (colour, food, home, size rank and
one friend each: about 60 facts). It is never written in a prompt, so a model must learn it
from the training answers, and most questions combine facts: a fact of a friend (two hops), an
animal picked out by two of its facts (three hops), a fact checked for every animal of a
group, or comparisons of sizes. Each output is a short rationale that states the facts used
and ends "So the correct answer is answer3", whose last word is the gold `answer`."""

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
_DESCRIBE = {  # HellaSwag-like contexts: an animal picked out by two facts
    ("colour", "home"): "a {} animal from the {}",
    ("colour", "food"): "a {} animal that eats {}",
    ("food", "home"): "an animal that eats {} from the {}",
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
    """Animals in the fact table (each has 5 facts; at most 16)."""
    max_group: int = 3
    """Most animals a BoolQ-like "does one of ..." question names."""
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
        _check(2 <= self.max_group <= 4, "max_group must be in [2, 4]")
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
    size: dict[str, int]
    """animal -> size rank (1 = smallest); all different."""

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
    ranks = rng.sample(range(1, entities + 1), entities)
    return FactTable(animals, facts, dict(zip(animals, ranks, strict=True)))


# Phrases: "The fox is red." / "does it eat nuts?" / "plays with its friend the owl."
_STATES = {"colour": "is {}", "food": "eats {}", "home": "lives in the {}"}
_ASKS = {"colour": "is {}", "food": "eat {}", "home": "live in the {}"}


def _fact(table: FactTable, attribute: str, animal: str) -> str:
    if attribute == "friend":
        return f"The {animal}'s friend is the {table.value('friend', animal)}."
    return f"The {animal} {_STATES[attribute].format(table.value(attribute, animal))}."


def _names(animals: Sequence[str]) -> str:
    """'the fox', 'the fox and the owl', 'the fox, the owl and the bear'."""
    named = [f"the {a}" for a in animals]
    return named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]


def _choice(
    rng: random.Random,
    turn: int,
    task: str,
    question: str,
    correct: str,
    wrong: Sequence[str],
    rationale: str,
    label: str = "Answer",
) -> Record:
    """A multiple-choice record: the correct option at position `turn` (cycling), the wrong
    ones shuffled around it."""
    tokens = ANSWER_TOKENS[task]
    options = list(wrong)
    rng.shuffle(options)
    position = turn % len(tokens)
    options.insert(position, correct)
    listed = " ".join(f"{label}{i}: {o}" for i, o in enumerate(options, 1))
    return _record(
        task, f"{question} {listed} Answer format: {'/'.join(tokens)}", rationale, tokens[position]
    )


def _record(task: str, instruction: str, rationale: str, answer: str) -> Record:
    return {
        "instruction": instruction,
        "input": "",
        "output": f"{rationale} So the correct answer is {answer}",
        "answer": answer,
        "task": task,
    }


def _other_values(rng: random.Random, attribute: str, exclude: Sequence[str], k: int) -> list:
    return rng.sample([v for v in VALUES[attribute] if v not in exclude], k)


def _boolq(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """True/false: a size comparison, or whether one animal of a group has a fact."""
    truth = turn % 2 == 0
    prefix = "Please answer the following question with true or false, question:"
    if rng.random() < 0.25:
        a, b = rng.sample(table.animals, 2)
        if (table.size[a] > table.size[b]) != truth:
            a, b = b, a
        big, small = sorted((a, b), key=table.size.__getitem__, reverse=True)
        question, rationale = (
            f"is the {a} bigger than the {b}?",
            f"The {big} is bigger than the {small}.",
        )
    else:
        attribute = rng.choice(ATTRIBUTES)
        group = rng.sample(table.animals, rng.randint(2, config.max_group))
        held = [table.value(attribute, a) for a in group]
        value = rng.choice(held) if truth else _other_values(rng, attribute, held, 1)[0]
        verb = "is" if attribute == "colour" else "does"
        question = f"{verb} one of {_names(group)} {_ASKS[attribute].format(value)}?"
        rationale = " ".join(_fact(table, attribute, a) for a in group)
    answer = "true" if truth else "false"
    return _record(
        "boolq-like", f"{prefix} {question} Answer format: true/false", rationale, answer
    )


_GOALS = {
    "food": ("how do you feed the {} and the {}?", "bring {} and {}."),
    "home": ("how do you visit the {} and then the {}?", "go to the {}, then to the {}."),
    "colour": ("how do you spot the {} and the {}?", "look for a {} one and a {} one."),
}


def _piqa(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """A goal about two animals; the wrong solution gets one of their two facts wrong."""
    attribute = rng.choice(ATTRIBUTES)
    while True:
        a, b = rng.sample(table.animals, 2)
        right = [table.value(attribute, a), table.value(attribute, b)]
        if right[0] != right[1]:
            break
    wrong = list(right)
    slot = rng.randrange(2)
    wrong[slot] = _other_values(rng, attribute, right, 1)[0]
    goal, solution = _GOALS[attribute]
    question = f"Please choose the correct solution to the question: {goal.format(a, b)}"
    rationale = f"{_fact(table, attribute, a)} {_fact(table, attribute, b)}"
    return _choice(
        rng,
        turn,
        "piqa-like",
        question,
        solution.format(*right),
        [solution.format(*wrong)],
        rationale,
        "Solution",
    )


_SOCIAL = {
    "food": "The {} wants to bring food to the {}'s friend. What should it bring?",
    "home": "The {} wants to visit the {}'s friend. Where should it go?",
    "colour": "The {} is looking for the {}'s friend. What colour should it look for?",
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
    wrong = [shown(v) for v in _other_values(rng, attribute, [correct], 2)]
    question = (
        f"Please choose the correct answer to the question: {_SOCIAL[attribute].format(a, b)}"
    )
    rationale = f"{_fact(table, 'friend', b)} {_fact(table, attribute, friend)}"
    return _choice(rng, turn, "siqa-like", question, shown(correct), wrong, rationale)


def _arc(rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int) -> Record:
    """Four animals: the biggest or smallest of them, or the one with a given fact."""
    prefix = "Please choose the correct answer to the question:"
    if rng.random() < 0.5:
        group = rng.sample(table.animals, 4)
        extreme = rng.choice(("biggest", "smallest"))
        pick = max if extreme == "biggest" else min
        correct = pick(group, key=table.size.__getitem__)
        question = f"{prefix} which animal is the {extreme}?"
        rationale = f"The {correct} is the {extreme} of them."
    else:
        attribute = rng.choice(ATTRIBUTES)
        correct = rng.choice(table.animals)
        value = table.value(attribute, correct)
        others = [x for x in table.animals if table.value(attribute, x) != value]
        group = [correct, *rng.sample(others, 3)]
        question = f"{prefix} which of these animals {_STATES[attribute].format(value)}?"
        rationale = _fact(table, attribute, correct)
    wrong = [x for x in group if x != correct]
    return _choice(rng, turn, "arc-like", question, correct, wrong, rationale)


_BLANKS = {
    "food": "{} the {} and the {} find some {}, but only _ eats them.",
    "home": "{} the {} and the {} walk home, but only _ lives in the {}.",
    "colour": "{} the {} and the {} hide in the leaves, but only _ is {}.",
}


def _winogrande(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """A sentence with a blank and two animals: resolved by a fact or by a size comparison."""
    scene = rng.choice(SCENES)
    kind = rng.choice((*ATTRIBUTES, "size", "hide"))
    if kind in ATTRIBUTES:
        while True:
            a, b = rng.sample(table.animals, 2)
            if table.value(kind, a) != table.value(kind, b):
                break
        correct = rng.choice((a, b))
        sentence = _BLANKS[kind].format(scene, a, b, table.value(kind, correct))
        rationale = _fact(table, kind, correct)
    else:
        a, b = rng.sample(table.animals, 2)
        big, small = sorted((a, b), key=table.size.__getitem__, reverse=True)
        rationale = f"The {big} is bigger than the {small}."
        if kind == "size":
            extreme = rng.choice(("bigger", "smaller"))
            correct = big if extreme == "bigger" else small
            sentence = f"{scene} the {a} and the {b} meet, and _ is the {extreme} one."
        else:  # the twin-sentence trigger word decides, given the fact that big > small
            trigger = rng.choice(("big", "small"))
            correct = big if trigger == "big" else small
            sentence = (
                f"{scene} the {big} cannot hide behind the {small} because _ is too {trigger}."
            )
    other = b if correct == a else a
    question = (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        + sentence
    )
    return _choice(
        rng,
        turn,
        "winogrande-like",
        question,
        f"the {correct}",
        [f"the {other}"],
        rationale,
        "Option",
    )


_ENDINGS = {
    "food": "eats some {}.",
    "home": "goes back to the {}.",
    "colour": "shakes its {} fur.",
    "friend": "plays with its friend the {}.",
}


def _hellaswag(
    rng: random.Random, table: FactTable, config: CommonsenseWorldConfig, turn: int
) -> Record:
    """Context: an animal described by two facts; the right ending is another fact of it."""
    animal, pair = rng.choice(table.identifiable)
    description = _DESCRIBE[pair].format(*(table.value(p, animal) for p in pair))
    (remaining,) = set(ATTRIBUTES) - set(pair)
    ending = rng.choice((remaining, "friend"))
    correct = table.value(ending, animal)
    if ending == "friend":
        wrong = rng.sample([x for x in table.animals if x not in (animal, correct)], 3)
    else:
        wrong = _other_values(rng, ending, [correct], 3)
    context = f"{description[0].upper()}{description[1:]} wakes up. It"
    question = f"Please choose the correct ending to complete the given sentence: {context}"
    rationale = f"The animal is the {animal}. {_fact(table, ending, animal)}"
    endings = [_ENDINGS[ending].format(v) for v in wrong]
    return _choice(
        rng,
        turn,
        "hellaswag-like",
        question,
        _ENDINGS[ending].format(correct),
        endings,
        rationale,
        "Ending",
    )


_GENERATORS: dict[
    str, Callable[[random.Random, FactTable, CommonsenseWorldConfig, int], Record]
] = {
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
    match), or None."""
    match = _ANSWER_PATTERNS[task].search(response)
    return match.group(1) if match else None
