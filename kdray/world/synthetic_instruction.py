"""A deterministic generator of instruction-following items in the Alpaca/Dolly form
(instruction, input, output) plus `answer` (the reference, the same as `output`) and `task`:
five tasks over a short list of words from a fixed vocabulary, scored with ROUGE-L against
the reference as the study scores Dolly and its kin.

Inputs are short shuffled lists of nouns (animals and things) and, for `copy`, `opposite` and
`reverse`, one adjective. The sub-tasks need different skills: copying a list in order
(`copy`), copying while changing one word (`opposite`: the adjective into its opposite),
keeping one kind (`filter`: the animals), counting one kind (`count`: the animals) and copying
in the reverse order (`reverse`).

What the tiny models can learn shaped the lists (benchmarks/calibrate_domains.py): copying
words from a list forms slowly in the 432k-parameter model, so the lists are short (3-4 words)
from a small vocabulary, and most sub-tasks build on copying. With 3-6 words from 56, and
sorting or word-by-word tasks instead of copying, it scored ROUGE-L 15 after 1,500 steps, half
of what echoing the input scores. No task changes case or inflection: ROUGE-L lower-cases and
the study stems (Porter), so upper-casing or pluralising would score a plain copy as (nearly)
perfect."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdray.config.run import _check
from kdray.world.splits import Record, draw_splits

# A small vocabulary: the fewer the words, the sooner a tiny model learns to copy them.
ANIMALS = ("cat", "dog", "fox", "owl", "bear", "frog", "duck", "goat", "mouse", "sheep")
THINGS = ("box", "cup", "key", "bell", "leaf", "pen", "hat", "shoe", "lamp", "bus")
OPPOSITES = {
    "big": "small", "hot": "cold", "fast": "slow", "old": "new", "happy": "sad", "wet": "dry",
}  # fmt: skip
OPPOSITES |= {b: a for a, b in OPPOSITES.items()}
ADJECTIVES = tuple(OPPOSITES)

TASKS = ("copy", "opposite", "filter", "count", "reverse")
INSTRUCTIONS = {
    "copy": "Copy these words.",
    "opposite": "Replace the adjective in these words with its opposite.",
    "filter": "Keep only the animals from these words.",
    "count": "How many of these words are animals?",
    "reverse": "Reverse the order of these words.",
}


@dataclass(frozen=True)
class InstructionWorldConfig:
    """The synthetic instruction-following task and its splits. Changing any field builds a
    new world."""

    seed: int = 0
    """Seeds the word lists."""
    min_words: int = 3
    """Fewest words in an input (nouns and one adjective)."""
    max_words: int = 4
    """Most words in an input; longer lists are harder to copy from."""
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
            3 <= self.min_words <= self.max_words <= 8,
            "need 3 <= min_words <= max_words <= 8",
        )
        _check(
            min(self.train_size, self.validation_size, self.test_size) >= 1,
            "every split needs at least one item",
        )


def transform(task: str, words: list[str]) -> list[str]:
    """The reference answer of `task` for an input word list."""
    if task == "copy":
        return list(words)
    if task == "opposite":
        return [OPPOSITES.get(w, w) for w in words]
    if task == "count":
        return [str(sum(w in ANIMALS for w in words))]
    if task == "filter":
        return [w for w in words if w in ANIMALS]
    if task == "reverse":
        return words[::-1]
    raise ValueError(f"unknown instruction task {task!r}: choose one of {', '.join(TASKS)}")


def _words(task: str, rng: random.Random, n: int) -> list[str]:
    """n distinct words, shuffled: for `count` and `filter` nouns with at least one animal and
    one thing, else one adjective and n - 1 nouns."""
    if task in ("count", "filter"):
        animals = rng.randint(1, n - 1)
        words = [*rng.sample(ANIMALS, animals), *rng.sample(THINGS, n - animals)]
    else:
        words = [rng.choice(ADJECTIVES), *rng.sample(ANIMALS + THINGS, n - 1)]
    rng.shuffle(words)
    return words


def _item(task: str, rng: random.Random, config: InstructionWorldConfig) -> Record:
    words = _words(task, rng, rng.randint(config.min_words, config.max_words))
    # A leading space: the tokenizer marks a word's start with "▁" except at the start of a
    # line, so without it the first word of the input or response would be another token
    # ("fox" vs "▁fox") and each word would have two forms to learn. ROUGE-L ignores it.
    reference = " " + " ".join(transform(task, words))
    return {
        "instruction": INSTRUCTIONS[task],
        "input": " " + " ".join(words),
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
