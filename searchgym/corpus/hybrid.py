"""Hybrid search: BM25 (`searchgym.corpus.lexical`) and dense (`searchgym.corpus.index`) hits fused by
reciprocal rank fusion.

Each query asks both indexes for their top ``max(k, depth)`` documents; a document's fused score is
``sum(1 / (rrf_k + rank))`` over the lists it appears in (rank 1 = best), and the top k fused documents
are returned as `Hit`s whose ``score`` is that fused score. RRF needs no score calibration between
BM25 and cosine: only ranks matter (Cormack, Clarke and Büttcher, SIGIR 2009; ``rrf_k=60`` is theirs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from searchgym.corpus.documents import Corpus
from searchgym.corpus.index import Hit, check_search

DEFAULT_RRF_K = 60
DEFAULT_DEPTH = 50


def reciprocal_rank_fusion(rankings: Sequence[Sequence[str]], k: int = DEFAULT_RRF_K) -> list[tuple[str, float]]:
    """Fuse ranked lists of ids: ``score(d) = sum over lists of 1 / (k + rank of d)``, best first.

    Ties keep the order in which ids first appear (the first list, then the next).

    >>> [(d, round(s, 5)) for d, s in reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]])]
    [('a', 0.03252), ('c', 0.03227), ('b', 0.01613), ('d', 0.01587)]
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"rrf_k must be an integer >= 0, got {k!r}")
    fused: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc_id in enumerate(ranking, start=1):
            fused[doc_id] = fused.get(doc_id, 0.0) + 1.0 / (k + rank)
    return sorted(fused.items(), key=lambda item: -item[1])  # stable: ties in first-appearance order


class HybridIndex:
    """A dense index and a lexical index over the same corpus, searched together and fused by RRF.

    Has `SearchIndex`'s search API: ``search(queries, k)``, ``len``, ``corpus``. Any two objects with
    ``search(queries, k) -> list[list[Hit]]`` over the same corpus work (the dense list comes first
    when fused scores tie).
    """

    def __init__(self, dense, lexical, *, rrf_k: int = DEFAULT_RRF_K, depth: int = DEFAULT_DEPTH):
        if dense.corpus.hash != lexical.corpus.hash:
            raise ValueError("the dense and lexical indexes of a hybrid index must cover the same corpus")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an integer >= 1 (hits taken from each index), got {depth!r}")
        reciprocal_rank_fusion([], rrf_k)  # validates rrf_k
        self.dense, self.lexical, self.rrf_k, self.depth = dense, lexical, rrf_k, depth
        self.corpus: Corpus = dense.corpus
        self.seconds = getattr(dense, "seconds", 0.0) + getattr(lexical, "seconds", 0.0)
        self.from_cache = bool(getattr(dense, "from_cache", False) and getattr(lexical, "from_cache", False))

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return f"HybridIndex(dense={self.dense!r}, lexical={self.lexical!r}, rrf_k={self.rrf_k}, depth={self.depth})"

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k fused hits per query, best first; one batched call to each index."""
        queries, k = check_search(queries, k, len(self.corpus))
        if not queries:
            return []
        depth = min(max(k, self.depth), len(self.corpus))
        dense_hits = self.dense.search(queries, depth)
        lexical_hits = self.lexical.search(queries, depth)
        out = []
        for dense, lexical in zip(dense_hits, lexical_hits):
            by_id = {h.doc_id: h for h in (*lexical, *dense)}
            fused = reciprocal_rank_fusion([[h.doc_id for h in dense], [h.doc_id for h in lexical]], self.rrf_k)
            out.append([Hit(d, s, by_id[d].title, by_id[d].snippet) for d, s in fused[:k]])
        return out


def build_hybrid_index(corpus: Corpus, embedder="minilm", index="flat", *, rrf_k: int = DEFAULT_RRF_K,
                       depth: int = DEFAULT_DEPTH, cache_dir: str | os.PathLike | None = None,
                       progress: bool = True, rebuild: bool = False) -> HybridIndex:
    """Build or load both cached indexes (``cache_dir``, when given, is the root holding ``indexes/``
    and ``lexical/``; default `searchgym.paths.cache_root`) and fuse them."""
    from searchgym.corpus.index import build_index
    from searchgym.corpus.lexical import build_lexical_index

    root = None if cache_dir is None else os.fspath(cache_dir)
    dense = build_index(corpus, embedder, index, progress=progress, rebuild=rebuild,
                        **({} if root is None else {"cache_dir": os.path.join(root, "indexes")}))
    lexical = build_lexical_index(corpus, progress=progress, rebuild=rebuild,
                                  **({} if root is None else {"cache_dir": os.path.join(root, "lexical")}))
    return HybridIndex(dense, lexical, rrf_k=rrf_k, depth=depth)
