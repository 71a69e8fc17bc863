"""ROUGE-L for instruction following (Dolly, SelfInst, Vicuna, S-NI, UnNI), as MiniLLM scores it.

MiniLLM's `rouge_metric.py` (adapted from Super-NaturalInstructions' evaluation) uses
`rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)` on the raw texts, takes the F-measure,
the best over an item's references, and reports the mean times 100. We do the same: Porter
stemming on, the library's default tokenizer (lower-cases, keeps ASCII letters and digits).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache


@cache
def _scorer():
    # Imported on first use: rouge_score pulls in nltk, which takes ~2 s to import.
    from absl import logging as absl_logging
    from rouge_score import rouge_scorer

    absl_logging.set_verbosity(absl_logging.WARNING)  # else "Using default tokenizer." per scorer
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _reference_list(reference: str | Sequence[str]) -> list[str]:
    references = [reference] if isinstance(reference, str) else list(reference)
    if not references or not all(isinstance(r, str) for r in references):
        raise ValueError("a reference must be a string or a non-empty sequence of strings")
    return references


def rouge_l(prediction: str, reference: str | Sequence[str]) -> float:
    """ROUGE-L F-measure (0-100) of `prediction` against `reference`, or the best over several
    references. Empty texts (after tokenisation) score 0."""
    scorer = _scorer()
    return 100.0 * max(
        scorer.score(target, prediction)["rougeL"].fmeasure for target in _reference_list(reference)
    )


def mean_rouge_l(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> float:
    """Mean ROUGE-L (0-100) over paired predictions and references (each a string or a list
    of strings). Unlike MiniLLM, which cuts both lists to the shorter, a length mismatch is an
    error: it means predictions and references are out of step."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: pass one "
            "reference (or list of references) per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score")
    return sum(rouge_l(p, r) for p, r in zip(predictions, references, strict=True)) / len(
        predictions
    )
