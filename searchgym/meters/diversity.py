"""Diversity of a group of n samples: how many distinct behaviours, and how evenly they are used.

Cluster meters count discrete labels (strategy, action signature, final answer); surface meters compare
texts (distinct-n, self-BLEU) and the Vendi score gives the effective number of distinct samples from a
similarity kernel. Everything is computed at a fixed n: these meters grow with n, so compare equal n.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from functools import lru_cache

import numpy as np

from searchgym.meters.entropy import jackknife_entropy, miller_madow_entropy, plugin_entropy

_TOKEN = re.compile(r"\w+|[^\w\s]")
EMPTY_TOKEN = "<empty>"  # stands in for an empty text so two empty samples count as identical


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens: deterministic and model-independent.

    >>> tokenize("Who founded Acme, Inc.?")
    ['who', 'founded', 'acme', ',', 'inc', '.', '?']
    """
    return list(_tokens(text))


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    # cached: every text meter of a question re-tokenizes the same n samples
    return tuple(_TOKEN.findall(text.lower()))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """All contiguous n-grams.

    >>> ngrams(["a", "b", "c"], 2)
    [('a', 'b'), ('b', 'c')]
    """
    return list(zip(*(tokens[i:] for i in range(n)))) if n >= 1 else []


def cluster_stats(labels: Sequence[Hashable]) -> dict[str, float]:
    """Cluster meters of n labels: K distinct, plug-in, Miller–Madow and jackknife entropy, max share s_max.

    p_c = n_c / n; H = -sum p_c log p_c; H_MM = H + (K-1)/(2n); H_J (`jackknife_entropy`); s_max = max_c p_c.

    >>> {k: round(v, 4) for k, v in cluster_stats(["S A", "S A", "S O A", "S A"]).items()}
    {'distinct': 2.0, 'entropy': 0.5623, 'entropy_mm': 0.6873, 'entropy_jk': 0.8172, 'max_share': 0.75}
    """
    if not labels:
        return {"distinct": math.nan, "entropy": math.nan, "entropy_mm": math.nan, "entropy_jk": math.nan,
                "max_share": math.nan}
    counts = Counter(labels)
    return {"distinct": float(len(counts)), "entropy": plugin_entropy(labels),
            "entropy_mm": miller_madow_entropy(labels), "entropy_jk": jackknife_entropy(labels),
            "max_share": max(counts.values()) / len(labels)}


def distinct_n(texts: Sequence[str], n: int) -> float:
    """distinct-n over a group: unique n-grams / total n-grams, pooled over all texts (NaN if none).

    >>> distinct_n(["the cat sat", "the cat ran"], 1)  # 4 unique of 6
    0.6666666666666666
    >>> distinct_n(["the cat sat", "the cat sat"], 2)
    0.5
    """
    grams = [g for t in texts for g in ngrams(tokenize(t), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def sentence_bleu(hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int = 4) -> float:
    """BLEU of one tokenized hypothesis against references (uniform weights over orders 1..max_n).

    BLEU = BP * exp(mean_n log p_n); p_n = clipped matching n-grams / hypothesis n-grams, with add-one
    smoothing for n >= 2 (Lin & Och 2004) so short texts do not score 0; BP = min(1, exp(1 - r/h)) with
    r the reference length closest to the hypothesis length h.

    >>> sentence_bleu("a b c d".split(), ["a b c d".split()])
    1.0
    >>> sentence_bleu("x y".split(), ["a b".split()])
    0.0
    """
    if not hypothesis or not references:
        return 0.0
    matches = []
    for n in range(1, max_n + 1):
        hyp, best = Counter(ngrams(hypothesis, n)), Counter()
        for ref in references:
            best |= Counter(ngrams(ref, n))  # clip each n-gram by its max count in any reference
        matches.append((sum((hyp & best).values()), sum(hyp.values())))
    return _bleu(matches, len(hypothesis), [len(ref) for ref in references])


def _bleu(matches: Sequence[tuple[int, int]], h: int, ref_lens: Sequence[int]) -> float:
    """BLEU from (clipped matches, total) per order, the hypothesis length and the reference lengths."""
    if h == 0 or matches[0][0] == 0:
        return 0.0
    log_p = math.log(matches[0][0] / matches[0][1])
    log_p += sum(math.log((m + 1) / (t + 1)) for m, t in matches[1:])
    r = min(ref_lens, key=lambda length: (abs(length - h), length))
    bp = 1.0 if h >= r else math.exp(1 - r / h)
    return bp * math.exp(log_p / len(matches))


def self_bleu(texts: Sequence[str], max_n: int = 4) -> float:
    """Mean BLEU of each sample against the other n-1 (high = repetitive). NaN for fewer than 2 texts.

    Same value as averaging ``sentence_bleu`` over samples, in O(total n-grams): per n-gram we keep its
    two largest counts, so the clip "max count in any other sample" is a lookup.

    >>> self_bleu(["find the founder of acme", "find the founder of acme"])
    1.0
    """
    if len(texts) < 2:
        return math.nan
    toks = [tokenize(t) for t in texts]
    lens = [len(t) for t in toks]
    matches: list[list[tuple[int, int]]] = [[] for _ in toks]
    for n in range(1, max_n + 1):
        counts = [Counter(ngrams(t, n)) for t in toks]
        top: dict[tuple, list[int]] = {}  # n-gram -> [largest count, its sample, second largest count]
        for i, bag in enumerate(counts):
            for g, c in bag.items():
                best = top.setdefault(g, [0, -1, 0])
                if c > best[0]:
                    best[:] = [c, i, best[0]]
                elif c > best[2]:
                    best[2] = c
        for i, bag in enumerate(counts):
            clipped = sum(min(c, top[g][2] if top[g][1] == i else top[g][0]) for g, c in bag.items())
            matches[i].append((clipped, sum(bag.values())))
    return float(np.mean([_bleu(matches[i], lens[i], lens[:i] + lens[i + 1:]) for i in range(len(toks))]))


def ngram_count_vectors(texts: Sequence[str], max_n: int = 2) -> np.ndarray:
    """Rows of n-gram counts (orders 1..max_n) over a shared vocabulary; an empty text gets EMPTY_TOKEN.

    >>> ngram_count_vectors(["a b", "b"], max_n=1).tolist()
    [[1.0, 1.0], [0.0, 1.0]]
    """
    bags = []
    for text in texts:
        tokens = tokenize(text) or [EMPTY_TOKEN]
        bags.append(Counter(g for n in range(1, max_n + 1) for g in ngrams(tokens, n)))
    vocab = {g: i for i, g in enumerate(sorted({g for bag in bags for g in bag}))}
    vectors = np.zeros((len(texts), len(vocab)))
    for row, bag in enumerate(bags):
        for g, count in bag.items():
            vectors[row, vocab[g]] = count
    return vectors


def cosine_kernel(vectors: np.ndarray) -> np.ndarray:
    """K_ij = cos(v_i, v_j); works for n-gram counts and for sentence embeddings alike.

    >>> cosine_kernel(np.array([[1.0, 0.0], [1.0, 1.0]])).round(3).tolist()
    [[1.0, 0.707], [0.707, 1.0]]
    """
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError("cosine kernel of a zero vector is undefined; give every item at least one feature")
    u = v / norms
    return u @ u.T


def vendi_score(kernel: np.ndarray) -> float:
    """Vendi score of a similarity kernel with unit diagonal: exp(-sum_i lambda_i log lambda_i),
    lambda = eigenvalues of K/n. The effective number of distinct items, in [1, n].

    >>> round(vendi_score(np.ones((3, 3))), 6)  # three identical items
    1.0
    >>> round(vendi_score(np.eye(3)), 6)  # three orthogonal items
    3.0
    """
    k = np.asarray(kernel, dtype=np.float64)
    n = k.shape[0]
    if n == 0:
        return math.nan
    lam = np.linalg.eigvalsh(k / n)
    lam = lam[lam > 1e-12]  # PSD up to round-off; 0 log 0 = 0
    return float(np.exp(-(lam * np.log(lam)).sum()))


def vendi_ngram(texts: Sequence[str], max_n: int = 2) -> float:
    """Vendi score of texts on the cosine kernel of their n-gram counts (orders 1..max_n).

    >>> round(vendi_ngram(["search acme", "open doc 7", "answer paris"]), 6)
    3.0
    """
    if not texts:
        return math.nan
    return vendi_score(cosine_kernel(ngram_count_vectors(texts, max_n)))


def vendi_embeddings(embeddings: np.ndarray) -> float:
    """Vendi score on the cosine kernel of embeddings (e.g. MiniLM sentence vectors), one row per sample.

    >>> round(vendi_embeddings(np.array([[1.0, 0.0], [2.0, 0.0]])), 6)
    1.0
    """
    return vendi_score(cosine_kernel(embeddings))
