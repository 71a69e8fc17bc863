"""A deterministic generator of math word problems in the LLM-Adapters form
(instruction, input, output, answer) plus a `task` field ("arith-2step": the number of
arithmetic steps, for scores per sub-task): one to three arithmetic steps, a short step-by-step
rationale and a final line whose last number is the answer, as in the study's math data.

A rationale is worded as a person might word it: each line one of several ways, the operands of
a + or x step in either order, the item named after a result or not. None of it changes the
arithmetic, all of it is drawn at random, so a teacher that has learnt the task spreads its
next-token belief where the reference made one arbitrary choice: what KD can pass on beyond
the reference (24% of a rationale's tokens, where the teacher's entropy is above 0.1 nats; 11%
when only each line's wording varied)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from kdray.config.run import _check, _finite
from kdray.world.splits import draw_splits

NAMES = ("Tom", "Anna", "Ben", "Mia", "Sam", "Lucy", "Max", "Eva", "Leo", "Nora")
ITEMS = ("apples", "pens", "books", "coins", "cards", "stickers", "marbles", "shells")
START_PHRASES = ("{name} starts with {value} {item}.", "At first {name} has {value} {item}.",
                 "{name} begins with {value} {item}.", "{name} has {value} {item}.",
                 "We start with {value} {item}.")  # fmt: skip
STEP_PHRASES = ("{a} {op} {b} = {c}.", "Then {a} {op} {b} = {c}.", "So {a} {op} {b} = {c}.",
                "Next, {a} {op} {b} = {c}.", "Now {a} {op} {b} = {c}.")  # fmt: skip
"""Rationale wordings (the first is the original one); every wording keeps the numbers in
the same order, so the answer still follows from the steps."""
ANSWER_PHRASES = (
    "The answer is {value}.",
    "So the answer is {value}.",
    "{name} has {value} now.",
    "{name} ends with {value} {item}.",
)
"""Wordings of the last line; each ends in the answer's number or its item, so the answer is
still the response's last number."""


@dataclass(frozen=True)
class MathWorldConfig:
    """The synthetic math task and its splits. Changing any field builds a new world."""

    seed: int = 0
    max_start: int = 60
    """Largest starting amount."""
    max_operand: int = 40
    """Largest number added or taken away in one step."""
    max_factor: int = 5
    """Largest multiplier in a "times as many" step (below 2: no multiplication)."""
    max_value: int = 400
    """No intermediate result exceeds this."""
    min_steps: int = 1
    max_steps: int = 3
    distractor_prob: float = 0.4
    """Chance of one irrelevant sentence with a number in it."""
    train_size: int = 16000
    """Training problems: the teacher's pool; students use the first TrainConfig.train_examples."""
    validation_size: int = 200
    test_size: int = 300
    vocab_size: int = 400
    """Target size of the BPE tokenizer trained on the task."""
    phrasings: int = 5
    """Ways a rationale may word its first line and each step (1: one fixed wording). Drawn
    at random per line, so a task-aware teacher's next-token distributions are not one-hot:
    there is something for KD to transfer beyond the answer."""
    answer_phrasings: int = 4
    """Ways the last line may be worded (1: always "The answer is N.")."""
    commute_prob: float = 0.5
    """Chance that a + or x step writes its operands the other way round ("3 + 12" for
    "12 + 3"): both are right, so a teacher that knows the task splits its belief."""
    unit_prob: float = 0.5
    """Chance that a step names the item after its result ("= 15 apples.")."""
    style_concentration: float = 0.0
    """0: every choice above is drawn the same way for every problem. Above 0: each person
    (NAMES) words a rationale in a style of their own: their chances of each wording, of
    writing operands the other way round and of naming the item, drawn once per world from a
    Dirichlet (Beta for the two yes/no choices) with this concentration around the settings
    above (smaller: more marked styles). A teacher that has learnt the task knows each
    person's style and gives it in every soft target; a student learning from references
    sees one draw of it per line and has to find it person by person (`person_styles`)."""

    def __post_init__(self) -> None:
        _check(
            1 <= self.phrasings <= len(START_PHRASES),
            f"phrasings must be in [1, {len(START_PHRASES)}]",
        )
        _check(
            1 <= self.answer_phrasings <= len(ANSWER_PHRASES),
            f"answer_phrasings must be in [1, {len(ANSWER_PHRASES)}]",
        )
        _check(
            0 <= self.commute_prob <= 1 and 0 <= self.unit_prob <= 1,
            "commute_prob and unit_prob must be in [0, 1]",
        )
        _check(
            _finite(self.style_concentration) and self.style_concentration >= 0,
            f"style_concentration must be >= 0, got {self.style_concentration}",
        )
        _check(1 <= self.min_steps <= self.max_steps, "need 1 <= min_steps <= max_steps")
        _check(self.max_start >= 2 and self.max_operand >= 1, "max_start/max_operand too small")
        _check(0 <= self.distractor_prob <= 1, "distractor_prob must be in [0, 1]")
        _check(
            min(self.train_size, self.validation_size, self.test_size) >= 1,
            "every split needs at least one problem",
        )


STYLE_SEED_OFFSET = 4_242_424
"""The persons' styles draw from config.seed + this, apart from the splits' stream."""


@dataclass(frozen=True)
class PersonStyle:
    """How one person words a rationale: weights of each START/STEP/ANSWER wording, and the
    chances of commuting a + step's operands and of naming the item after a result."""

    start: tuple[float, ...]
    step: tuple[float, ...]
    answer: tuple[float, ...]
    commute_prob: float
    unit_prob: float


def _dirichlet(rng: random.Random, count: int, concentration: float) -> tuple[float, ...]:
    draws = [rng.gammavariate(concentration, 1.0) for _ in range(count)]
    total = sum(draws) or 1.0
    return tuple(d / total for d in draws)


def _beta_around(rng: random.Random, mean: float, concentration: float) -> float:
    # A chance of 0 or 1 stays fixed: the setting turned that choice off.
    if mean in (0.0, 1.0):
        return mean
    return rng.betavariate(2 * concentration * mean, 2 * concentration * (1 - mean))


def person_styles(config: MathWorldConfig) -> dict[str, PersonStyle] | None:
    """Each person's style (None when style_concentration is 0: one style for all, uniform)."""
    if config.style_concentration == 0:
        return None
    rng = random.Random(config.seed + STYLE_SEED_OFFSET)
    c = config.style_concentration
    return {
        name: PersonStyle(
            start=_dirichlet(rng, config.phrasings, c),
            step=_dirichlet(rng, config.phrasings, c),
            answer=_dirichlet(rng, config.answer_phrasings, c),
            commute_prob=_beta_around(rng, config.commute_prob, c),
            unit_prob=_beta_around(rng, config.unit_prob, c),
        )
        for name in NAMES
    }


def _one_problem(
    rng: random.Random, config: MathWorldConfig, styles: dict[str, PersonStyle] | None = None
) -> dict[str, str]:
    name, other = rng.sample(NAMES, 2)
    item, other_item = rng.sample(ITEMS, 2)
    value = rng.randint(2, config.max_start)
    sentences = [f"{name} has {value} {item}."]
    style = styles[name] if styles else None

    def phrase(options: tuple[str, ...], count: int, weights: tuple[float, ...] = ()) -> str:
        # One wording draws nothing (nor does a chance of 0 below), so the settings that turn a
        # variation off give the earlier generator's texts exactly.
        if count <= 1:
            return options[0]
        if weights:
            return options[rng.choices(range(count), weights=weights)[0]]
        return options[rng.randrange(count)]

    def chance(probability: float) -> bool:
        return probability > 0 and rng.random() < probability

    start = phrase(START_PHRASES, config.phrasings, style.start if style else ())
    rationale = [start.format(name=name, value=value, item=item)]
    commute_prob = style.commute_prob if style else config.commute_prob
    unit_prob = style.unit_prob if style else config.unit_prob
    steps = rng.randint(config.min_steps, config.max_steps)
    for _ in range(steps):
        feasible = {
            "+": value < config.max_value,
            "-": value >= 2,
            "*": config.max_factor >= 2 and 2 * value <= config.max_value,
        }
        op = rng.choice([name for name, ok in feasible.items() if ok])
        if op == "+":
            amount = rng.randint(1, min(config.max_operand, config.max_value - value))
            sentences.append(
                rng.choice((f"{name} gets {amount} more.", f"Then {amount} more come."))
            )
            new_value = value + amount
        elif op == "-":
            amount = rng.randint(1, min(config.max_operand, value - 1))
            sentences.append(
                rng.choice((f"{name} gives away {amount}.", f"Then {amount} are lost."))
            )
            new_value = value - amount
        else:
            top = min(config.max_factor, config.max_value // value)
            amount = rng.randint(2, top)
            sentences.append(f"Then {name} has {amount} times as many.")
            new_value = value * amount
        first, second = (amount, value) if op != "-" and chance(commute_prob) else (value, amount)
        result = f"{new_value} {item}" if chance(unit_prob) else new_value
        line = phrase(STEP_PHRASES, config.phrasings, style.step if style else ())
        rationale.append(line.format(a=first, op=op, b=second, c=result))
        value = new_value
    if rng.random() < config.distractor_prob:
        position = rng.randint(1, len(sentences))
        sentences.insert(position, f"{other} has {rng.randint(2, config.max_start)} {other_item}.")
    sentences.append(f"How many {item} does {name} have now?")
    last = phrase(ANSWER_PHRASES, config.answer_phrasings, style.answer if style else ())
    rationale.append(last.format(name=name, value=value, item=item))
    return {
        "instruction": " ".join(sentences),
        "input": "",
        "output": " ".join(rationale),
        "answer": str(value),
        "task": f"arith-{steps}step",
    }


def generate_splits(config: MathWorldConfig) -> dict[str, list[dict[str, str]]]:
    """Test, validation and train splits (drawn in that order); no instruction text occurs in
    two splits."""
    styles = person_styles(config)
    return draw_splits(
        config, lambda rng, _: _one_problem(rng, config, styles), hint="widen the ranges"
    )
