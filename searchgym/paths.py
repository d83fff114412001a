"""Where searchgym keeps what it builds: one cache root for converted models, FAISS indexes and
generated question sets.

Standard library only, so any module can import it without pulling in torch or faiss.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DATA = Path(__file__).parent / "data"  # what the wheel ships
REFERENCE_PRIOR = PACKAGE_DATA / "searchgym-prior"  # the shipped prior (alias "searchgym-prior"; train.priors exports it)


def cache_root() -> Path:
    """``$SEARCHGYM_CACHE`` (``~`` expanded) when set and non-empty, else ``~/.cache/searchgym``.

    Under it: ``models/`` (searchgym.agent.models), ``indexes/`` (searchgym.corpus.index) and ``questions/``
    (searchgym.worlds.wikifactbook.questions)."""
    return Path(os.environ.get("SEARCHGYM_CACHE") or "~/.cache/searchgym").expanduser()
