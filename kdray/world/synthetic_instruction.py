"""A deterministic generator of instruction-following items in the Alpaca/Dolly form
(instruction, input, output) plus `answer` (the reference, the same as `output`) and `task`:
five tasks over a short list of words from a fixed vocabulary, scored with ROUGE-L against
the reference as the study scores Dolly and its kin.

The sub-tasks need different skills: positions (`reverse`), comparisons (`sort`: alphabetical
order), a category (`filter`: keep the animals; `count`: how many are animals) and word-by-word
knowledge (`opposite`). None changes case or inflection: ROUGE-L lower-cases and the study
stems (Porter), so upper-casing or pluralising would score a plain copy as (nearly) perfect."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdray.config import _check
from kdray.world.splits import Record, draw_splits

ANIMALS = (
    "cat", "dog", "fox", "owl", "bear", "frog", "duck", "goat",
    "mouse", "sheep", "goose", "wolf", "deer", "fish", "pony", "calf",
)  # fmt: skip
THINGS = (
    "box", "cup", "key", "bell", "leaf", "knife", "berry", "brush",
    "dish", "glass", "pen", "hat", "shoe", "lamp", "bus", "city",
)  # fmt: skip
NOUNS = ANIMALS + THINGS
OPPOSITES = {
    "big": "small", "hot": "cold", "fast": "slow", "old": "new", "happy": "sad",
    "dark": "light", "wet": "dry", "tall": "short", "hard": "soft", "loud": "quiet",
    "full": "empty", "early": "late",
}  # fmt: skip
OPPOSITES |= {b: a for a, b in OPPOSITES.items()}
ADJECTIVES = tuple(OPPOSITES)

TASKS = ("reverse", "sort", "filter", "count", "opposite")
INSTRUCTIONS = {
    "reverse": "Reverse the order of these words.",
    "sort": "Sort these words in alphabetical order.",
    "filter": "Keep only the animals from these words.",
    "count": "How many of these words are animals?",
    "opposite": "Replace each word with its opposite.",
}


@dataclass(frozen=True)
class InstructionWorldConfig:
    """The synthetic instruction-following task and its splits. Changing any field builds a
    new world."""

    seed: int = 0
    """Seeds the word lists."""
    min_words: int = 3
    """Fewest words in an input."""
    max_words: int = 6
    """Most words in an input."""
    train_size: int = 16000
    """Training items: the teacher's pool; students use the first TrainConfig.train_examples."""
    validation_size: int = 200
    """Validation items."""
    test_size: int = 300
    """Test items."""
    vocab_size: int = 400
    """Target size of the BPE tokenizer trained on the task."""

    def __post_init__(self) -> None:
        _check(
            2 <= self.min_words <= self.max_words <= 10,
            "need 2 <= min_words <= max_words <= 10",
        )
        _check(
            min(self.train_size, self.validation_size, self.test_size) >= 1,
            "every split needs at least one item",
        )


def transform(task: str, words: list[str]) -> list[str]:
    """The reference answer of `task` for an input word list."""
    if task == "reverse":
        return words[::-1]
    if task == "sort":
        return sorted(words)
    if task == "filter":
        return [w for w in words if w in ANIMALS]
    if task == "count":
        return [str(sum(w in ANIMALS for w in words))]
    if task == "opposite":
        return [OPPOSITES[w] for w in words]
    raise ValueError(f"unknown instruction task {task!r}: choose one of {', '.join(TASKS)}")


def _words(task: str, rng: random.Random, n: int) -> list[str]:
    if task == "opposite":
        return rng.sample(ADJECTIVES, n)
    if task in ("filter", "count"):  # at least one animal and one thing: a real filter
        animals = rng.randint(1, n - 1)
        words = rng.sample(ANIMALS, animals) + rng.sample(THINGS, n - animals)
        rng.shuffle(words)
        return words
    return rng.sample(NOUNS + ADJECTIVES, n)  # reverse, sort: any words


def _item(task: str, rng: random.Random, config: InstructionWorldConfig) -> Record:
    words = _words(task, rng, rng.randint(config.min_words, config.max_words))
    reference = " ".join(transform(task, words))
    return {
        "instruction": INSTRUCTIONS[task],
        "input": " ".join(words),
        "output": reference,
        "answer": reference,
        "task": task,
    }


def generate_splits(config: InstructionWorldConfig) -> dict[str, list[Record]]:
    """Test, validation and train splits (drawn in that order, sub-tasks in turn); no
    instruction + input text occurs in two splits."""

    def draw(rng: random.Random, index: int) -> Record:
        return _item(TASKS[index % len(TASKS)], rng, config)  # sub-tasks take turns

    return draw_splits(config, draw, hint="allow more words per item or use smaller splits")
