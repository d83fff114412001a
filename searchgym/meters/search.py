"""Search-behaviour meters: how many tool calls, how varied the queries, how much of the corpus is reached.

Reproductions of search agents trained with RL settle at one or two searches per question with templated
queries; these meters make that visible per question over its n samples. Queries are compared as sets
of tokens (Jaccard), documents by id, so the meters are deterministic and need no model.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from itertools import combinations

import numpy as np

from searchgym.meters.diversity import cluster_stats, tokenize


def jaccard(a: Collection[str], b: Collection[str]) -> float:
    """Jaccard similarity |a ∩ b| / |a ∪ b| of two sets; two empty sets are identical (1.0).

    >>> jaccard({"a", "b"}, {"b", "c"})
    0.3333333333333333
    >>> jaccard(set(), set())
    1.0
    """
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


def call_count_stats(counts: Sequence[int]) -> dict[str, float]:
    """Distribution of tool calls per episode over n samples: mean, and the cluster meters of the counts
    (distinct counts, plug-in / Miller–Madow entropy, share of the most common count).

    >>> call_count_stats([2, 2, 2, 3])["mode_share"]
    0.75
    """
    stats = cluster_stats(list(counts))
    return {"mean": float(np.mean(counts)) if len(counts) else math.nan, "distinct": stats["distinct"],
            "entropy": stats["entropy"], "entropy_mm": stats["entropy_mm"], "mode_share": stats["max_share"]}


def query_redundancy(queries: Sequence[str]) -> float:
    """Within one episode: mean pairwise Jaccard similarity of the queries' token sets
    (1 = the agent repeats itself). NaN with fewer than two queries.

    >>> query_redundancy(["acme founder", "acme founder", "paris mayor"])
    0.3333333333333333
    """
    if len(queries) < 2:
        return math.nan
    sets = [set(tokenize(q)) for q in queries]
    return float(np.mean([jaccard(a, b) for a, b in combinations(sets, 2)]))


def query_breadth(queries_per_sample: Sequence[Sequence[str]]) -> float:
    """Across the n samples of a question: mean pairwise Jaccard distance (1 - similarity) between the
    samples' query token sets (the union of each sample's queries). 0 = every sample searched the same.

    >>> query_breadth([["acme founder"], ["acme founder"]])
    0.0
    >>> query_breadth([["acme founder"], ["paris"], ["acme"]])  # distances 1, 0.5, 1
    0.8333333333333334
    """
    if len(queries_per_sample) < 2:
        return math.nan
    sets = [{tok for q in qs for tok in tokenize(q)} for qs in queries_per_sample]
    return float(np.mean([1.0 - jaccard(a, b) for a, b in combinations(sets, 2)]))


def unique_docs(docs_per_sample: Sequence[Sequence[str]]) -> int:
    """Distinct document ids over all n samples of a question.

    >>> unique_docs([["d1", "d2", "d1"], ["d2", "d3"]])
    3
    """
    return len({d for docs in docs_per_sample for d in docs})


def evidence_coverage(seen: Collection[str], evidence: Sequence[Sequence[str]]) -> float:
    """Gold-evidence coverage: max over gold chains of the fraction of the chain's documents seen
    (a question is solvable by reading any one chain). NaN when the task has no gold evidence.

    >>> evidence_coverage({"d1", "d9"}, [["d1", "d2"], ["d3"]])
    0.5
    """
    chains = [c for c in evidence if c]
    if not chains:
        return math.nan
    seen = set(seen)
    return max(sum(d in seen for d in chain) / len(chain) for chain in chains)
