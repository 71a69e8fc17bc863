"""The tiny world's pretraining corpus: generic text of the world, never in the task's prompt
format, that a base model learns before any fine-tuning (as the study's students and teachers
start from pretrained checkpoints).

- math: arithmetic statements ("7 + 3 = 10.", "7 plus 3 is 10.") over the world's number range
  and short stories of people and things changing in number;
- commonsense: the fact table in sentences (what the questions ask about), in varied order;
- instruction: short word lists retold (again, backwards, only the animals, counted, with the
  adjective turned to its opposite).

Each document is one line; the corpus is drawn from its own seed, so it shares no text with the
task's splits by construction (no prompt template, no question, no rationale format)."""

from __future__ import annotations

import random
from collections.abc import Callable

from kdray.world.synthetic_commonsense import CommonsenseWorldConfig, fact_table
from kdray.world.synthetic_instruction import (
    ADJECTIVES,
    OPPOSITES,
    THINGS,
    InstructionWorldConfig,
)
from kdray.world.synthetic_instruction import ANIMALS as WORD_ANIMALS
from kdray.world.synthetic_math import ITEMS, NAMES, MathWorldConfig

CORPUS_SEED_OFFSET = 7_777_777
"""The corpus draws from config.seed + this, apart from the splits' own stream."""


def _math_facts(rng: random.Random, config: MathWorldConfig) -> str:
    facts = []
    for _ in range(rng.randint(3, 6)):
        a = rng.randint(0, config.max_value)
        b = rng.randint(0, max(config.max_operand, 1))
        if rng.random() < 0.5:
            a, b, c, op, word = a, b, a + b, "+", "plus"
        else:
            a, c = max(a, b), max(a, b) - b
            op, word = "-", "minus"
        facts.append(f"{a} {op} {b} = {c}." if rng.random() < 0.7 else f"{a} {word} {b} is {c}.")
    return " ".join(facts)


def _math_events(rng: random.Random, config: MathWorldConfig):
    """One to three people with things, and one to four changes in number among them:
    (people, items, start values, final values, events as (person, word, amount, before,
    after))."""
    people = rng.sample(NAMES, rng.randint(1, 3))
    items = dict(zip(people, rng.sample(ITEMS, len(people)), strict=True))
    starts = {p: rng.randint(2, config.max_start) for p in people}
    values, events = dict(starts), []
    for _ in range(rng.randint(1, 4)):
        person = rng.choice(people)
        value = values[person]
        if value < config.max_value and (value < 2 or rng.random() < 0.5):
            amount = rng.randint(1, min(config.max_operand, config.max_value - value))
            events.append((person, "plus", amount, value, value + amount))
        elif value >= 2:
            amount = rng.randint(1, min(config.max_operand, value - 1))
            events.append((person, "minus", amount, value, value - amount))
        else:
            continue
        values[person] = events[-1][-1]
    return people, items, starts, values, events


def _math_story(rng: random.Random, config: MathWorldConfig) -> str:
    """A story of people whose things change in number, then either a recap in another order
    or one person's changes counted in order. Both have to find that person's thing, amounts
    and changes earlier in the text and skip the others': the reading the task needs, in
    other words than its prompts and rationales."""
    people, items, starts, final, events = _math_events(rng, config)
    sentences = [f"{p} has {starts[p]} {items[p]}." for p in people]
    for person, word, amount, _, _ in events:
        sentences.append(f"{person} finds {amount} more." if word == "plus" else
                         f"{person} loses {amount}.")  # fmt: skip
    counted = [p for p in people if any(e[0] == p for e in events)]
    if not counted or rng.random() < 0.4:
        recap = rng.sample(people, len(people))
        sentences.append(
            "In the end " + " and ".join(f"{p} has {final[p]} {items[p]}" for p in recap) + "."
        )
        return " ".join(sentences)
    person = rng.choice(counted)
    steps = [f"{b} {w} {a} is {c}" for p, w, a, b, c in events if p == person]
    sentences.append(f"Counting for {person}: " + ", ".join(steps) + ".")
    sentences.append(f"So {person} has {final[person]} {items[person]}.")
    return " ".join(sentences)


def _math_document(rng: random.Random, config: MathWorldConfig) -> str:
    return _math_facts(rng, config) if rng.random() < 0.25 else _math_story(rng, config)


def _commonsense_documents(config: CommonsenseWorldConfig) -> Callable[[random.Random], str]:
    table = fact_table(config)
    verbs = {"colour": "is", "food": "eats", "home": "lives in the"}

    def sentence(attribute: str, animal: str) -> str:
        value = table.value(attribute, animal)
        if attribute in ("swim", "climb"):
            return f"The {animal} {'can' if value == 'yes' else 'cannot'} {attribute}."
        if attribute == "friend":
            return f"The friend of the {animal} is the {value}."
        return f"The {animal} {verbs[attribute]} {value}."

    def draw(rng: random.Random) -> str:
        animal = rng.choice(table.animals)
        attributes = rng.sample(sorted(table.facts), rng.randint(2, 4))
        return " ".join(sentence(a, animal) for a in attributes)

    return draw


def _instruction_document(rng: random.Random) -> str:
    """A short list of words (half the time with an adjective), then two to four retellings of
    it: once more in order, backwards, only its animals, how many are animals, or with its
    adjective turned into the opposite. These are the skills the sub-tasks need (copying in
    order or reversed, keeping or counting one kind, changing one word), in other words than
    the instructions. Copying has to be learnt here: fine-tuning alone did not teach it."""
    nouns = WORD_ANIMALS + THINGS
    n = rng.randint(3, 5)
    has_adjective = rng.random() < 0.5
    words = rng.sample(nouns, n - has_adjective) + [rng.choice(ADJECTIVES)] * has_adjective
    rng.shuffle(words)
    animals = [w for w in words if w in WORD_ANIMALS]
    retellings = [
        f"Once more: {' '.join(words)}.",
        f"Backwards: {' '.join(reversed(words))}.",
        f"Of these, {len(animals)} are animals.",
    ]
    if animals:
        retellings.append(f"The animals among them: {' '.join(animals)}.")
    if has_adjective:
        turned = " ".join(OPPOSITES.get(w, w) for w in words)
        retellings.append(f"Turned to the opposite: {turned}.")
    else:
        adjective = rng.choice(ADJECTIVES)
        retellings.append(f"The opposite of {adjective} is {OPPOSITES[adjective]}.")
    return f"I see {' '.join(words)}. " + " ".join(rng.sample(retellings, rng.randint(2, 4)))


def pretraining_corpus(config, size: int) -> list[str]:
    """`size` documents of generic text of the world that `config` describes."""
    rng = random.Random(config.seed + CORPUS_SEED_OFFSET)
    if isinstance(config, MathWorldConfig):
        draw = lambda r: _math_document(r, config)  # noqa: E731
    elif isinstance(config, CommonsenseWorldConfig):
        draw = _commonsense_documents(config)
    elif isinstance(config, InstructionWorldConfig):
        draw = _instruction_document
    else:
        raise TypeError(f"no pretraining corpus for {type(config).__name__}")
    return [draw(rng) for _ in range(size)]
