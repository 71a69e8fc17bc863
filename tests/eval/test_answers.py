"""The study's answer extraction (LLM-Adapters' rules) and MiniLLM's ROUGE-L."""

import pytest

from kdray.eval.answers import (
    ANSWER_KINDS,
    TOLERANCE,
    answers_match,
    extract_answer,
    last_number,
    parse_gold,
    same_number,
)
from kdray.eval.rouge import mean_rouge_l, rouge_l


def test_legacy_helpers_unchanged():
    assert TOLERANCE == 0.001
    assert last_number("3 apples and 1,234 pears") == 1234.0
    assert last_number("no digits") is None
    assert same_number(1.0, 1.0005) and not same_number(1.0, 1.002)
    assert not same_number(None, 1.0)


def test_answer_kinds():
    assert ANSWER_KINDS == ("number", "letter", "boolean", "solution", "answer", "option", "ending")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("7 - 3 = 4. The answer is 4.", "4"),  # last number, trailing-dot number
        ("He had 1,234 coins, then 2,000,000.", "2000000"),  # commas removed
        ("The temperature fell to -12 degrees", "-12"),
        ("Each costs 2.50 dollars", "2.5"),
        ("The answer is 576.0", "576"),
        ("first 5 then 5.", "5"),
        ("nothing numeric here", None),
        ("", None),
    ],
)
def test_number_extraction(response, expected):
    assert extract_answer("number", response) == expected


def test_number_too_large_is_no_answer():
    assert extract_answer("number", "9" * 400) is None


@pytest.mark.parametrize(
    ("predicted", "gold", "correct"),
    [
        ("10.001", "10", True),  # within 0.001
        ("10.002", "10", False),  # just outside
        ("0.001", "0.0", True),
        ("4", "4.0", True),
        ("1234", "1,234", True),
        ("-3", "-3.0", True),
        ("0.667", "0.6666666666666666", True),
        ("0.67", "0.6666666666666666", False),  # two decimals are not enough for 2/3
        (None, "4", False),
        ("four", "4", False),
    ],
)
def test_number_match_tolerance(predicted, gold, correct):
    assert answers_match("number", predicted, gold) is correct


def test_number_gold_parsing():
    assert parse_gold("number", "576.0") == "576"
    assert parse_gold("number", " 1,234 ") == "1234"
    assert parse_gold("number", "0.6666666666666666") == "0.6666666666666666"
    assert parse_gold("number", "-10.0") == "-10"
    assert parse_gold("number", "1e+20") == "1e+20"
    for bad in ("", "abc", "12 apples", "nan", "inf", "1e400"):
        with pytest.raises(ValueError, match="answer kind number") as caught:
            parse_gold("number", bad)
        assert "\n" not in str(caught.value)


def test_letter_takes_first_capital_a_to_e():
    assert extract_answer("letter", "The answer is (C).") == "C"
    assert extract_answer("letter", "(B) is right, not (D)") == "B"
    # LLM-Adapters' quirk, kept: any capital A-E counts, here the one in "Answer".
    assert extract_answer("letter", "Answer: C") == "A"
    assert extract_answer("letter", "the answer is c") is None
    assert answers_match("letter", "C", "C") and not answers_match("letter", "A", "C")
    assert not answers_match("letter", None, "C")


@pytest.mark.parametrize(
    ("kind", "response", "expected"),
    [
        ("boolean", "the correct answer is false", "false"),
        ("boolean", "true or false? false", "true"),  # first match wins
        ("boolean", "It is TRUE", None),  # case-sensitive, as LLM-Adapters
        ("solution", "solution2 is better than solution1", "solution2"),
        ("answer", "the correct answer is answer4", "answer4"),
        ("answer", "answer5 answer5", "answer5"),  # the token twice
        ("answer", "answer6", None),
        ("option", "option1", "option1"),
        ("ending", "ending3, not ending1", "ending3"),
        ("ending", "ending5", None),
        ("solution", "", None),
    ],
)
def test_commonsense_extraction(kind, response, expected):
    assert extract_answer(kind, response) == expected


def test_commonsense_match_and_gold():
    assert answers_match("answer", "answer3", "answer3")
    assert not answers_match("answer", "answer2", "answer3")
    assert not answers_match("boolean", None, "true")
    assert parse_gold("ending", " ending2\n") == "ending2"
    with pytest.raises(ValueError, match="not one of option1/option2"):
        parse_gold("option", "option3")
    with pytest.raises(ValueError, match="answer kind letter"):
        parse_gold("letter", "F")


def test_unknown_kind_names_the_valid_ones():
    for call in (
        lambda: extract_answer("rouge_l", "x"),
        lambda: parse_gold("choice", "A"),
        lambda: answers_match("digits", "1", "1"),
    ):
        with pytest.raises(ValueError, match="number, letter, boolean"):
            call()


def test_gold_that_does_not_parse_raises_in_match():
    with pytest.raises(ValueError):
        answers_match("number", "4", "four")


def test_rouge_l_known_values():
    assert rouge_l("the cat sat on the mat", "the cat sat on the mat") == pytest.approx(100.0)
    assert rouge_l("alpha beta", "gamma delta") == 0.0
    # LCS "the cat on the" = 4 of 6 tokens each side: P = R = F = 2/3.
    assert rouge_l("the cat sat on the mat", "the cat lay on the rug") == pytest.approx(200 / 3)
    # Stemming on, as MiniLLM: "running dogs" and "run dog" are the same tokens.
    assert rouge_l("running dogs", "run dog") == pytest.approx(100.0)
    assert rouge_l("", "anything") == 0.0


def test_rouge_l_best_reference_and_mean():
    assert rouge_l("a b c", ["x y z", "a b c"]) == pytest.approx(100.0)
    assert mean_rouge_l(["a b", "c d"], ["a b", "x y"]) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        mean_rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError):
        mean_rouge_l([], [])
    with pytest.raises(ValueError):
        rouge_l("a", [])
