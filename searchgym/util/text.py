"""The answer normal form: what rewards, meters and worlds compare answers in.

Normalisation follows the SQuAD convention extended for real names: NFKD, strip accents, casefold,
drop punctuation and the articles a/an/the, collapse whitespace. So "Lomé" == "lome" and
"The Ivory Coast" == "ivory coast".
"""

from __future__ import annotations

import re
import string
import unicodedata

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({c: " " for c in string.punctuation + "\u2013\u2014\u2018\u2019\u201c\u201d"})


def normalize_answer(text: str) -> str:
    """Canonical form used for matching.

    >>> normalize_answer("  The Lomé!  ")
    'lome'
    >>> normalize_answer("São-Tomé and Príncipe")
    'sao tome and principe'
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())
