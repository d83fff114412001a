"""Retrieval controls: retrievers that isolate what search contributes (``retriever="random"`` / ``"oracle"``).

Both have the search API every index has (``search(queries, k)``, ``len``, ``corpus``, the same `Hit`s and
snippets), so `SearchTools`, `SearchEnv` and the GRPO adapter take them like the dense, BM25 and hybrid
indexes. What they return depends on the episode (the task, for the oracle; the seed, for random draws),
which an index shared by many concurrent episodes cannot hold. So each also has ``for_episode(task, seed)``:
`SearchTools.begin` asks for a per-episode view and searches that, and every pooled episode (a GRPO group,
a batched rollout) gets its own.

* `RandomIndex`: k distinct documents drawn uniformly from the corpus, whatever the query. The n-th search
  of an episode is seeded by (seed, task id, n): the same seed, task and calls give the same documents, in
  any order of episodes, and a second search draws afresh.
* `OracleIndex`: the task's first gold evidence chain (in reading order, ids not in the corpus skipped),
  then the base index's ranking of the query for the rest of the k hits. The first chain is one sufficient
  set of evidence (`Task.evidence`: any one chain answers the question); all chains would fill the k slots
  with redundant alternatives of the same facts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np

from searchgym.corpus.documents import Corpus
from searchgym.corpus.index import Hit, HitMaker, check_search
from searchgym.tasks import Task


def stable_hash(text: str) -> int:
    """A 63-bit hash of ``text`` that is the same in every process (``hash`` is salted per process).

    >>> stable_hash("syn-s0-00042") == stable_hash("syn-s0-00042"), stable_hash("a") != stable_hash("b")
    (True, True)
    """
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") >> 1


class EpisodeSearch:
    """One episode's view of a control index: ``search(queries, k)`` calls ``fn(queries, k, n)`` with n the
    number of searches this view has made so far (what a random draw is keyed by)."""

    def __init__(self, corpus: Corpus, fn: Callable[[list[str], int, int], list[list[Hit]]]):
        self.corpus, self._fn, self.searches = corpus, fn, 0

    def __len__(self) -> int:
        return len(self.corpus)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        hits = self._fn(queries, k, self.searches)
        self.searches += 1
        return hits


class RandomIndex:
    """Uniformly random documents, whatever the query (a retriever that knows nothing).

    >>> from searchgym.corpus.documents import Document
    >>> corpus = Corpus([Document(f"d{i}", f"T{i}", f"text {i}") for i in range(50)])
    >>> index = RandomIndex(corpus)
    >>> [len(hits) for hits in index.search(["q", "other q"], 3)]
    [3, 3]
    >>> a = [h.doc_id for h in index.search(["q"], 5, key=(1, 2))[0]]
    >>> a == [h.doc_id for h in index.search(["anything"], 5, key=(1, 2))[0]], len(set(a))
    (True, 5)
    """

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._hit = HitMaker(corpus)
        self.seconds, self.from_cache = 0.0, True  # nothing to build (what index builders report)

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return f"RandomIndex({self.corpus.name!r}, docs={len(self)})"

    def search(self, queries: Sequence[str], k: int, *, key: Sequence[int] = (0,)) -> list[list[Hit]]:
        """k distinct documents per query, in random order, drawn by an RNG seeded by (*key, i) for the
        i-th query of the batch (score 0.0: no ranking)."""
        queries, k = check_search(queries, k, len(self.corpus))
        out = []
        for i in range(len(queries)):
            rng = np.random.default_rng([*(int(x) & (2**63 - 1) for x in key), i])
            out.append([self._hit(int(row), 0.0) for row in rng.choice(len(self.corpus), k, replace=False)])
        return out

    def for_episode(self, task: Task, seed: int = 0) -> EpisodeSearch:
        """The view `SearchTools` searches during one episode on ``task``: its n-th search is keyed by
        (seed, task id, n)."""
        task_key = stable_hash(task.id)
        return EpisodeSearch(self.corpus, lambda queries, k, n: self.search(queries, k, key=(seed, task_key, n)))


class OracleIndex:
    """Gold evidence first, then ``base``'s ranking (a retriever that always finds what the task needs).

    ``search(queries, k, gold=ids)`` puts ``gold`` (those in the corpus, deduplicated, at most k) first and
    fills the other slots with ``base``'s top hits that are not gold. A gold hit's score is above every
    base hit's, so scores stay in rank order.
    """

    def __init__(self, base):
        self.base = base
        self.corpus: Corpus = base.corpus
        self._hit = HitMaker(self.corpus)
        self.seconds = getattr(base, "seconds", 0.0)
        self.from_cache = getattr(base, "from_cache", False)

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return f"OracleIndex(base={self.base!r})"

    def search(self, queries: Sequence[str], k: int, *, gold: Sequence[str] = ()) -> list[list[Hit]]:
        queries, k = check_search(queries, k, len(self.corpus))
        if not queries:
            return []
        first = [d for d in dict.fromkeys(gold) if d in self.corpus][:k]
        # Enough base hits that k - len(first) remain after the gold ones are taken out.
        ranked = self.base.search(queries, min(k + len(first), len(self.corpus)))
        out = []
        for hits in ranked:
            rest = [h for h in hits if h.doc_id not in first][: k - len(first)]
            top = max((h.score for h in rest), default=0.0)
            out.append([self._hit(self.corpus.position(d), top + len(first) - i) for i, d in enumerate(first)]
                       + rest)
        return out

    def for_episode(self, task: Task, seed: int = 0) -> EpisodeSearch:
        """The view `SearchTools` searches during one episode on ``task`` (``seed`` unused: no randomness)."""
        gold = task.evidence[0] if task.evidence else ()
        return EpisodeSearch(self.corpus, lambda queries, k, n: self.search(queries, k, gold=gold))
