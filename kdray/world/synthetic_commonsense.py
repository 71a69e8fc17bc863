"""A deterministic generator of commonsense multiple-choice questions in the LLM-Adapters form
(instruction, input, output, answer) plus a `task` field: six sub-tasks, each with the answer
format of one real benchmark (BoolQ, PIQA, SIQA, ARC, WinoGrande, HellaSwag).

The "common sense" is a small seeded fact table of animals: a colour, a food, a home, whether it
can swim, whether it can climb, and a friend (72 facts by default). It is never written in a
prompt, so a model must learn it from the training answers. Questions combine facts: a fact of
an animal's friend (two hops), both skills of one animal, a skill of two animals joined with
"or"/"both" or telling them apart. Each output is a short rationale, one fact per line, then "So the
correct answer is answer3", whose last word is the gold `answer`.

What the tiny models can learn shaped the format (benchmarks/calibrate_domains.py):
- Options are listed in a fixed order per question (WinoGrande's: as the sentence names them),
  so the label follows from the facts. With shuffled options, matching the answer to its label
  in context stayed at chance for the 432k-parameter model after 1,500 steps, even alone.
- The animals a rationale needs come right after fixed words of the question ("visit the fox",
  "can the fox or the owl"), as the math problems' numbers do; other animals in the prompt are
  distractors.
- No content word touches punctuation, which the BPE tokenizer would merge into another token
  ("▁cave." vs "▁cave"). Irrelevant openings ("At night") make the texts distinct."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdray.config.run import _check
from kdray.world.splits import Record, draw_splits

ANIMALS = (
    "fox", "owl", "bear", "frog", "deer", "wolf", "hare", "duck",
    "goat", "mole", "crow", "seal", "lynx", "swan", "toad", "boar",
)  # fmt: skip
COLOURS = ("red", "blue", "green", "yellow")
FOODS = ("seeds", "fish")
HOMES = ("forest", "field", "cave")
SKILLS = ("swim", "climb")
SCENES = (
    "In the morning", "At night", "After the rain", "On a sunny day", "In winter", "In spring",
    "Today", "In the dark", "At noon", "In the snow", "After lunch", "On a windy day",
)  # fmt: skip
"""Irrelevant openings: they make texts distinct without changing the answer."""

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
    """Animals in the fact table (6 facts each; 8 to 16; the default split sizes need 10)."""
    max_hops: int = 2
    """2: questions may be about an animal's friend (look up the friend, then its fact)."""
    train_size: int = 16000
    """Training questions: the teacher's pool; students use the first TrainConfig.train_examples."""
    validation_size: int = 200
    """Validation questions."""
    test_size: int = 300
    """Test questions."""
    vocab_size: int = 400
    """Target size of the BPE tokenizer trained on the task."""

    def __post_init__(self) -> None:
        _check(8 <= self.entities <= len(ANIMALS), f"entities must be in [8, {len(ANIMALS)}]")
        _check(self.max_hops in (1, 2), "max_hops must be 1 or 2")
        _check(
            min(self.train_size, self.validation_size, self.test_size) >= 1,
            "every split needs at least one question",
        )


@dataclass(frozen=True)
class FactTable:
    """The world's facts: what every model has to learn from the training answers."""

    animals: tuple[str, ...]
    facts: dict[str, dict[str, str]]
    """attribute (colour, food, home, swim, climb, friend) -> animal -> value ("yes"/"no" for
    the skills)."""

    def value(self, attribute: str, animal: str) -> str:
        return self.facts[attribute][animal]

    def with_value(self, attribute: str, value: str) -> list[str]:
        return [a for a in self.animals if self.facts[attribute][a] == value]


def fact_table(config: CommonsenseWorldConfig) -> FactTable:
    """The seeded fact table of `config` (the one its questions are about)."""
    return _fact_table(random.Random(config.seed), config.entities)


def _balanced(rng: random.Random, values: Sequence, n: int) -> list:
    """n values, each as often as the others (give or take one), in random order: no answer
    is a safe guess."""
    pool = [values[i % len(values)] for i in range(n)]
    rng.shuffle(pool)
    return pool


def _fact_table(rng: random.Random, entities: int) -> FactTable:
    animals = tuple(rng.sample(ANIMALS, entities))
    facts = {
        name: dict(zip(animals, _balanced(rng, values, entities), strict=True))
        for name, values in (("colour", COLOURS), ("food", FOODS), ("home", HOMES))
    }
    # Both skills from one balanced pool, so each of the four combinations is as common.
    skills = _balanced(rng, [(s, c) for s in ("yes", "no") for c in ("yes", "no")], entities)
    facts["swim"] = {a: s for a, (s, _) in zip(animals, skills, strict=True)}
    facts["climb"] = {a: c for a, (_, c) in zip(animals, skills, strict=True)}
    while True:  # a friend is another animal
        friends = rng.sample(animals, entities)
        if all(a != f for a, f in zip(animals, friends, strict=True)):
            break
    facts["friend"] = dict(zip(animals, friends, strict=True))
    return FactTable(animals, facts)


def _statement(table: FactTable, attribute: str, animal: str) -> str:
    """One rationale line: 'The fox can swim', 'The fox lives in the cave'."""
    value = table.value(attribute, animal)
    if attribute in SKILLS:
        return f"The {animal} {'can' if value == 'yes' else 'cannot'} {attribute}"
    if attribute == "friend":
        return f"The friend of the {animal} is the {value}"
    verb = {"colour": "is", "food": "eats", "home": "lives in the"}[attribute]
    return f"The {animal} {verb} {value}"


@dataclass(frozen=True)
class _Target:
    """An animal as a question names it: 'fox' or, two hops away, 'friend of the fox'."""

    named: str
    mentioned: str
    """The animal the question names."""
    animal: str
    """The animal the question is about."""
    lines: tuple[str, ...]
    """Rationale lines that find it (the friend look-up)."""


def _targets(table: FactTable, config: CommonsenseWorldConfig) -> list[_Target]:
    found = [_Target(a, a, a, ()) for a in table.animals]
    if config.max_hops >= 2:
        for a in table.animals:
            friend = table.value("friend", a)
            lines = (_statement(table, "friend", a),)
            found.append(_Target(f"friend of the {a}", a, friend, lines))
    return found


def _record(task: str, question: str, options: str, lines: Sequence[str], answer: str) -> Record:
    tokens = ANSWER_TOKENS[task]
    parts = [question, options, f"Answer format: {'/'.join(tokens)}"]
    return {
        "instruction": " ".join(p for p in parts if p),
        "input": "",
        "output": "\n".join([*lines, f"So the correct answer is {answer}"]),
        "answer": answer,
        "task": task,
    }


def _listed(label: str, options: Sequence[str]) -> str:
    return " ".join(f"{label}{i}: {text}" for i, text in enumerate(options, 1))


class _Draw:
    """One sub-task's draw: the fact table, config, rng and this record's `turn` (its index
    among the sub-task's records in the split, which picks the gold answer in rotation)."""

    def __init__(self, rng: random.Random, table: FactTable, config: CommonsenseWorldConfig):
        self.rng, self.table, self.config = rng, table, config
        self.targets = _targets(table, config)

    def pick(self, candidates: Sequence, accept: Callable[..., bool]):
        """A random candidate that `accept`s (candidates are tried in a random order)."""
        order = list(candidates)
        self.rng.shuffle(order)
        for candidate in order:
            if accept(candidate):
                return candidate
        raise ValueError("no candidate fits: use more entities")

    def other(self, target: _Target) -> str:
        """A distractor: an animal the question names besides the target."""
        return self.pick(self.table.animals, lambda a: a not in (target.animal, target.mentioned))

    def boolq(self, turn: int) -> Record:
        """Can the fox or (both) the owl swim? Two skill facts joined by or/and."""
        truth = turn % 2 == 0
        skill, both = self.rng.choice(SKILLS), self.rng.random() < 0.5
        join = all if both else any

        def fits(pair: tuple[str, str]) -> bool:
            return join(self.table.value(skill, a) == "yes" for a in pair) == truth

        a, b = self.pick(_pairs(self.table.animals), fits)
        names = f"both the {a} and the {b}" if both else f"the {a} or the {b}"
        question = (
            "Please answer the following question with true or false, question: "
            f"{self.rng.choice(SCENES).lower()} can {names} {skill} ?"
        )
        lines = [_statement(self.table, skill, a), _statement(self.table, skill, b)]
        return _record("boolq-like", question, "", lines, "true" if truth else "false")

    def piqa(self, turn: int) -> Record:
        """How to feed an animal (or its friend): which of the two foods?"""
        food = FOODS[turn % len(FOODS)]
        target = self.pick(self.targets, lambda t: self.table.value("food", t.animal) == food)
        when = self.rng.choice(
            ("while the {} sleeps", "when the {} is away", "before the {} comes")
        )
        question = (
            "Please choose the correct solution to the question: "
            f"{self.rng.choice(SCENES).lower()} how do you feed the {target.named} "
            f"{when.format(self.other(target))} ?"
        )
        options = _listed("Solution", [f"bring some {f}" for f in FOODS])
        lines = [*target.lines, _statement(self.table, "food", target.animal)]
        return _record("piqa-like", question, options, lines, f"solution{FOODS.index(food) + 1}")

    def siqa(self, turn: int) -> Record:
        """Where does someone find an animal (or its friend)? Its home, of three."""
        home = HOMES[turn % len(HOMES)]
        target = self.pick(self.targets, lambda t: self.table.value("home", t.animal) == home)
        visitor = self.other(target)
        verb = self.rng.choice(("visit", "find", "meet"))
        question = (
            "Please choose the correct answer to the question: "
            f"{self.rng.choice(SCENES).lower()} where should the {visitor} go to {verb} the "
            f"{target.named} ?"
        )
        options = _listed("Answer", [f"the {h}" for h in HOMES])
        lines = [*target.lines, _statement(self.table, "home", target.animal)]
        return _record("siqa-like", question, options, lines, f"answer{HOMES.index(home) + 1}")

    def arc(self, turn: int) -> Record:
        """What colour is an animal (or its friend)? One of four."""
        colour = COLOURS[turn % len(COLOURS)]
        target = self.pick(self.targets, lambda t: self.table.value("colour", t.animal) == colour)
        other = self.other(target)
        near = self.rng.choice(("plays with", "sits by", "runs from"))
        question = (
            "Please choose the correct answer to the question: "
            f"{self.rng.choice(SCENES).lower()} what colour is the {target.named} "
            f"that {near} the {other} ?"
        )
        lines = [*target.lines, _statement(self.table, "colour", target.animal)]
        answer = f"answer{COLOURS.index(colour) + 1}"
        return _record("arc-like", question, _listed("Answer", COLOURS), lines, answer)

    def winogrande(self, turn: int) -> Record:
        """Two animals (or their friends) and a blank: only one of them can swim (climb)."""
        first = turn % 2 == 0
        skill = self.rng.choice(SKILLS)

        def fits(pair: tuple[_Target, _Target]) -> bool:
            x, y = pair
            holds = [self.table.value(skill, t.animal) == "yes" for t in pair]
            return x.mentioned != y.mentioned and holds == [first, not first]

        x, y = self.pick(_pairs(self.targets), fits)
        meet = self.rng.choice(("meet", "play", "rest"))
        question = (
            "Please choose the correct answer to fill in the blank to complete the given "
            f"sentence: {self.rng.choice(SCENES)} the {x.named} and the {y.named} {meet} but "
            f"only _ can {skill}"
        )
        options = _listed("Option", (f"the {x.named}", f"the {y.named}"))
        lines = [
            *x.lines,
            _statement(self.table, skill, x.animal),
            *y.lines,
            _statement(self.table, skill, y.animal),
        ]
        return _record("winogrande-like", question, options, lines, f"option{1 if first else 2}")

    def hellaswag(self, turn: int) -> Record:
        """An animal (or its friend) goes out: the ending is what both its skills allow."""
        combos = [("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no")]
        wanted = combos[turn % len(combos)]

        def fits(t: _Target) -> bool:
            return tuple(self.table.value(s, t.animal) for s in SKILLS) == wanted

        target = self.pick(self.targets, fits)
        other = self.other(target)
        goes = self.rng.choice(("goes out with", "wakes up next to", "walks away from"))
        question = (
            "Please choose the correct ending to complete the given sentence: "
            f"{self.rng.choice(SCENES)} the {target.named} {goes} the {other} and then it"
        )
        endings = ("swims and climbs", "swims but does not climb", "climbs but does not swim")
        options = _listed("Ending", (*endings, "stays on the ground"))
        lines = [*target.lines, *(_statement(self.table, s, target.animal) for s in SKILLS)]
        return _record(
            "hellaswag-like", question, options, lines, f"ending{combos.index(wanted) + 1}"
        )


def _pairs(items: Sequence) -> list:
    """Ordered pairs of distinct items."""
    return [(a, b) for a in items for b in items if a != b]


def generate_splits(config: CommonsenseWorldConfig) -> dict[str, list[Record]]:
    """Test, validation and train splits (drawn in that order, sub-tasks in turn); no
    instruction text occurs in two splits."""
    rng = random.Random(config.seed)
    draws = _Draw(rng, _fact_table(rng, config.entities), config)
    generators = {task: getattr(draws, task.removesuffix("-like")) for task in TASKS}

    def draw(rng: random.Random, index: int) -> Record:
        # Sub-tasks take turns, and each sub-task's turns cycle through its gold answers, so
        # every split is balanced over both (a retried draw keeps its turn).
        return generators[TASKS[index % len(TASKS)]](index // len(TASKS))

    return draw_splits(config, draw, rng, hint="use more entities or smaller splits")


_ANSWER_PATTERNS = {
    task: re.compile(r"\b(" + "|".join(tokens) + r")\b") for task, tokens in ANSWER_TOKENS.items()
}


def extract_choice(task: str, response: str) -> str | None:
    """The first of the sub-task's answer tokens in a response (LLM-Adapters reads the first
    match), or None."""
    match = _ANSWER_PATTERNS[task].search(response)
    return match.group(1) if match else None
