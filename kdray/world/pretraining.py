"""The tiny world's pretraining corpus: generic text of the world, never in the task's prompt
format, that a base model learns before any fine-tuning (as the study's students and teachers
start from pretrained checkpoints).

- math: arithmetic statements ("7 + 3 = 10.", "7 plus 3 is 10.") over the world's number range
  and short stories of people and things changing in number;
- commonsense: the fact table in sentences (what the questions ask about), in varied order;
- instruction: sentences over the word vocabulary, with opposites and counts of animals.

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


def _math_document(rng: random.Random, config: MathWorldConfig) -> str:
    if rng.random() < 0.5:  # a line of facts
        facts = []
        for _ in range(rng.randint(3, 6)):
            a = rng.randint(0, config.max_value)
            b = rng.randint(0, max(config.max_operand, 1))
            if rng.random() < 0.5:
                a, b, c, op, word = a, b, a + b, "+", "plus"
            else:
                a, c = max(a, b), max(a, b) - b
                op, word = "-", "minus"
            facts.append(
                f"{a} {op} {b} = {c}." if rng.random() < 0.7 else f"{a} {word} {b} is {c}."
            )
        return " ".join(facts)
    name = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    value = rng.randint(1, config.max_start)
    sentences = [f"{name} has {value} {item}."]
    for _ in range(rng.randint(1, 3)):
        if value < config.max_value and rng.random() < 0.5:
            amount = rng.randint(1, min(config.max_operand, config.max_value - value))
            sentences.append(f"{name} finds {amount} more, so now there are {value + amount}.")
            value += amount
        elif value >= 2:
            amount = rng.randint(1, min(config.max_operand, value - 1))
            sentences.append(f"{name} loses {amount}, so {value - amount} are left.")
            value -= amount
    return " ".join(sentences)


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
    nouns = rng.sample(WORD_ANIMALS + THINGS, rng.randint(3, 5))
    animals = sum(w in WORD_ANIMALS for w in nouns)
    adjective = rng.choice(ADJECTIVES)
    parts = [
        f"I see {' '.join(nouns)}.",
        f"Of these, {animals} are animals.",
        f"The opposite of {adjective} is {OPPOSITES[adjective]}.",
        f"Backwards: {' '.join(reversed(nouns))}.",
    ]
    return " ".join(rng.sample(parts, rng.randint(2, 4)))


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
