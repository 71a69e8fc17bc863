"""Answer extraction as in the study, which follows LLM-Adapters' `evaluate.py` (math) and
`commonsense_evaluate.py` (commonsense):

- `number` (AddSub, GSM8K, MultiArith, SingleEq, SVAMP): the last number in the response,
  commas removed; correct when abs(predicted - gold) <= 0.001.
- `letter` (AQuA): the first of the capital letters A-E anywhere in the response.
- `boolean`, `solution`, `answer`, `option`, `ending` (commonsense): the first occurrence of the
  task's fixed token set (`true|false`, `solution1|solution2`, `answer1`..`answer5`,
  `option1|option2`, `ending1`..`ending4`); correct when it equals the gold token.

All rules are case-sensitive and take raw substring matches, as LLM-Adapters does: "Answer: C"
reads as "A" (from "Answer"), and "untrue" reads as "true". These quirks are part of the
protocol whose numbers the study reports, so they are kept.
"""

from __future__ import annotations

import math
import re

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
TOLERANCE = 0.001


def last_number(text: str) -> float | None:
    """The last number in `text` (thousands separators removed), or None if there is none."""
    numbers = _NUMBER.findall(text.replace(",", ""))
    return float(numbers[-1]) if numbers else None


def same_number(a: float | None, b: float | None) -> bool:
    """Equal within the study's tolerance of 0.001; a missing answer never matches."""
    return a is not None and b is not None and abs(a - b) <= TOLERANCE


ANSWER_KINDS: tuple[str, ...] = (
    "number",
    "letter",
    "boolean",
    "solution",
    "answer",
    "option",
    "ending",
)

# LLM-Adapters' number regex: it also takes a trailing dot ("5." -> 5.0).
_STUDY_NUMBER = re.compile(r"-?\d+\.?\d*")
# Gold numbers: "576.0", "-3", ".5", "1e+20" (the last is how `extract_answer` writes huge values).
_GOLD_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_TOKENS: dict[str, tuple[str, ...]] = {
    "letter": ("A", "B", "C", "D", "E"),
    "boolean": ("true", "false"),
    "solution": ("solution1", "solution2"),
    "answer": ("answer1", "answer2", "answer3", "answer4", "answer5"),
    "option": ("option1", "option2"),
    "ending": ("ending1", "ending2", "ending3", "ending4"),
}
_TOKEN_PATTERNS = {kind: re.compile("|".join(tokens)) for kind, tokens in _TOKENS.items()}


def _short(value: object, limit: int = 60) -> str:
    """`repr` cut to `limit` characters, so error messages stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_kind(kind: str) -> None:
    if kind not in ANSWER_KINDS:
        raise ValueError(f"unknown answer kind {kind!r}: expected one of {', '.join(ANSWER_KINDS)}")


def _canonical_number(value: float) -> str | None:
    """'12' for 12.0, '2.5' for 2.5; None for a value too large to be finite."""
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def extract_answer(kind: str, response: str) -> str | None:
    """The answer the study reads from a model response, or None when there is none.

    For `number` this is the last number as a canonical string ("12" for "12.00", "2.5",
    "-3"; thousands separators dropped), which `parse_gold`/`answers_match` read back; for the
    other kinds it is the matched token ("C", "true", "answer3", ...).
    """
    _check_kind(kind)
    if kind == "number":
        numbers = _STUDY_NUMBER.findall(response.replace(",", ""))
        return _canonical_number(float(numbers[-1])) if numbers else None
    match = _TOKEN_PATTERNS[kind].search(response)
    return match.group(0) if match else None


def parse_gold(kind: str, gold: str) -> str:
    """The gold answer in canonical form ("576" for "576.0", "1234" for "1,234"; tokens with
    surrounding whitespace stripped); ValueError when it is not a valid answer of `kind`."""
    _check_kind(kind)
    text = gold.strip() if isinstance(gold, str) else gold
    if not isinstance(text, str):
        raise ValueError(f"gold answer {_short(gold)} is not a string (answer kind {kind})")
    if kind == "number":
        plain = text.replace(",", "")
        canonical = _canonical_number(float(plain)) if _GOLD_NUMBER.fullmatch(plain) else None
        if canonical is None:
            raise ValueError(f"gold answer {_short(gold)} is not a number (answer kind number)")
        return canonical
    if text not in _TOKENS[kind]:
        expected = "/".join(_TOKENS[kind])
        raise ValueError(
            f"gold answer {_short(gold)} is not one of {expected} (answer kind {kind})"
        )
    return text


def answers_match(kind: str, predicted: str | None, gold: str) -> bool:
    """Whether an extracted answer is correct: numbers within `TOLERANCE`, other kinds by exact
    string match. A missing prediction (None) never matches; an unreadable prediction does not
    match either. A gold answer that does not parse raises ValueError."""
    canonical_gold = parse_gold(kind, gold)
    if predicted is None:
        return False
    if kind == "number":
        try:
            value = float(parse_gold(kind, predicted))
        except ValueError:
            return False
        return same_number(value, float(canonical_gold))
    return predicted.strip() == canonical_gold


ROUGE = "rouge_l"
_CHOICE_GOLD = re.compile(r"(solution|answer|option|ending)[1-5]")


def answer_kind(domain: str, gold: str) -> str:
    """How an item is scored: ROUGE-L for instruction following, else the study's extraction
    rule that its gold answer's form calls for (a number, an A-E letter, true/false, or a
    `solutionN`/`answerN`/`optionN`/`endingN` token)."""
    if domain == "instruction":
        return ROUGE
    text = gold.strip()
    if match := _CHOICE_GOLD.fullmatch(text):
        return match.group(1)
    if text in ("true", "false"):
        return "boolean"
    if text in ("A", "B", "C", "D", "E"):
        return "letter"
    return "number"
