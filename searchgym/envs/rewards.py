"""Verifiable answer rewards: normalised exact match and token F1 against gold answers.

Both compare in the answer normal form (`searchgym.util.text.normalize_answer`: SQuAD's, extended for real
names, so "Lomé" == "lome" and "The Ivory Coast" == "ivory coast").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from searchgym.util.text import normalize_answer


def exact_match(prediction: str, golds: Iterable[str]) -> float:
    """1.0 if the normalised prediction equals any normalised gold answer, else 0.0.

    >>> exact_match("lome", ["Lomé", "Lome, Togo"])
    1.0
    >>> exact_match("Accra", ["Lomé"])
    0.0
    """
    p = normalize_answer(prediction)
    return float(bool(p) and any(p == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Iterable[str]) -> float:
    """Best token-level F1 between the normalised prediction and any gold answer.

    >>> token_f1("west african cfa franc", ["CFA franc"])
    0.6666666666666666
    >>> token_f1("", ["x"])
    0.0
    """
    p = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        g = normalize_answer(gold).split()
        common = sum((Counter(p) & Counter(g)).values())
        if common:
            precision, recall = common / len(p), common / len(g)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


SCORERS = {"em": exact_match, "f1": token_f1}
