"""pass@k: the chance that at least one of k samples is correct, estimated without bias from n >= k.

pass@k curves tell coverage from sharpening: an RL-trained agent wins at k=1 while the base model can
catch up at large k. We use Chen et al.'s unbiased estimator, never 1 - (1 - c/n)^k (biased low), and
report the solvable-set overlap of two models (which questions each solves at all).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).

    Computed in product form, 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms huge binomials.

    >>> pass_at_k(4, 1, 1)
    0.25
    >>> pass_at_k(4, 1, 2)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    0.5
    >>> pass_at_k(10, 8, 3)  # fewer than k wrong samples: some correct one is always drawn
    1.0
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n (got n={n}, k={k}); draw at least k samples per "
                         "question or lower k")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples c={c} must lie in [0, n={n}]")
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def k_ladder(n: int) -> list[int]:
    """The k at which a pass@k curve is reported: 1, 2, 4, ... up to n, and n itself.

    >>> k_ladder(8)
    [1, 2, 4, 8]
    >>> k_ladder(6)
    [1, 2, 4, 6]
    """
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def _check_table(n: int, counts: Sequence[int] | np.ndarray, ks: Sequence[int] | None) -> tuple[np.ndarray, list[int]]:
    c = np.asarray(counts, dtype=np.int64).reshape(-1)
    ks = list(ks) if ks is not None else k_ladder(n)
    if any(not 1 <= k <= n for k in ks):
        raise ValueError(f"pass@k needs 1 <= k <= n (got n={n}, k={sorted(ks)}); draw at least k samples per "
                         "question or lower k")
    if c.size and (c.min() < 0 or c.max() > n):
        raise ValueError(f"correct counts must lie in [0, n={n}] (got {int(c.min())}..{int(c.max())})")
    return c, ks


def pass_at_k_table(n: int, counts: Sequence[int] | np.ndarray, ks: Sequence[int] | None = None) -> np.ndarray:
    """pass@k of every question at every k at once: a (questions, len(ks)) array, ks defaulting to `k_ladder`.

    Vectorised product form: for each k, P[c] = prod_{i=n-c+1}^{n} (1 - k/i) is one reversed cumulative
    product over i = n, n-1, ..., 1 (a factor with i <= k is 0: fewer than k wrong samples), and
    pass@k = 1 - P[c]. Every factor lies in [0, 1], so nothing overflows at n = 256 or 1024; a product
    that underflows is below 1e-308 and pass@k is 1.0 in double precision anyway. O(n) per k.

    >>> pass_at_k_table(4, [0, 1, 4]).tolist()
    [[0.0, 0.0, 0.0], [0.25, 0.5, 1.0], [1.0, 1.0, 1.0]]
    """
    c, ks = _check_table(n, counts, ks)
    i = np.arange(n, 0, -1, dtype=np.float64)  # n, n-1, ..., 1
    out = np.empty((c.size, len(ks)))
    for j, k in enumerate(ks):
        prod = np.concatenate([[1.0], np.cumprod(np.clip(1.0 - k / i, 0.0, None))])
        out[:, j] = 1.0 - prod[c]
    return out


def pass_hat_k(n: int, c: int, k: int) -> float:
    """pass^k: the chance that all k of k samples drawn without replacement are correct, C(c, k) / C(n, k).

    Unbiased for p^k (p = the question's success rate); the reliability counterpart of pass@k (τ-bench,
    verifiers). Product form prod_{i=0}^{k-1} (c - i) / (n - i): every factor is at most 1.

    >>> pass_hat_k(4, 2, 1), pass_hat_k(4, 2, 2), pass_hat_k(4, 1, 2)  # C(2,2)/C(4,2) = 1/6
    (0.5, 0.16666666666666666, 0.0)
    """
    if not 1 <= k <= n:
        raise ValueError(f"pass^k needs 1 <= k <= n (got n={n}, k={k})")
    if not 0 <= c <= n:
        raise ValueError(f"the number of correct samples c={c} must lie in [0, n={n}]")
    return math.prod((c - i) / (n - i) for i in range(k)) if c >= k else 0.0


def pass_hat_k_table(n: int, counts: Sequence[int] | np.ndarray, ks: Sequence[int] | None = None) -> np.ndarray:
    """pass^k = C(c, k) / C(n, k) of every question at every k: a (questions, len(ks)) array.

    For each k one (n + 1, k) matrix of factors (c - i) / (n - i), clipped at 0 (c < k gives 0), is
    multiplied along i; each factor is in [0, 1], so n = 256 neither overflows nor loses digits.

    >>> pass_hat_k_table(4, [1, 2, 4]).round(4).tolist()
    [[0.25, 0.0, 0.0], [0.5, 0.1667, 0.0], [1.0, 1.0, 1.0]]
    """
    c, ks = _check_table(n, counts, ks)
    cs = np.arange(n + 1, dtype=np.float64)[:, None]
    out = np.empty((c.size, len(ks)))
    for j, k in enumerate(ks):
        i = np.arange(k, dtype=np.float64)[None, :]
        out[:, j] = np.prod(np.clip((cs - i) / (n - i), 0.0, None), axis=1)[c]
    return out


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean over questions of pass@k, each question having n samples and ``correct_counts[q]`` correct.

    >>> pass_at_k_curve([0, 1, 4], n=4)  # (0 + 1/4 + 1)/3 at k=1; (0 + 1/2 + 1)/3 at k=2 ...
    {1: 0.4166666666666667, 2: 0.5, 4: 0.6666666666666666}
    """
    return _curve(pass_at_k_table, "pass@k", correct_counts, n, ks)


def pass_hat_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean over questions of pass^k (all k samples correct) at k = 1, 2, 4, ... n.

    >>> pass_hat_k_curve([0, 2, 4], n=4)
    {1: 0.5, 2: 0.3888888888888889, 4: 0.3333333333333333}
    """
    return _curve(pass_hat_k_table, "pass^k", correct_counts, n, ks)


def _curve(table, name: str, correct_counts: Sequence[int], n: int, ks: Sequence[int] | None) -> dict[int, float]:
    """The question mean of ``table(n, correct_counts, ks)`` at each k (the ladder of n by default)."""
    if not len(correct_counts):
        raise ValueError(f"{name} curve of zero questions; pass at least one question")
    ks = list(ks) if ks is not None else k_ladder(n)
    means = table(n, correct_counts, ks).mean(axis=0)
    return {k: float(m) for k, m in zip(ks, means)}


def crossing_k(base: Mapping[int, float], arm: Mapping[int, float]) -> int | None:
    """The smallest k at which the base's pass@k catches up with the arm's (base >= arm), given that the arm
    is ahead at the smallest k of both curves (usually k = 1); None when the arm is not ahead there or the
    base never catches up within the ks both curves share (Yue et al. 2025: RL wins at k = 1, the base
    model at large k).

    >>> crossing_k({1: 0.2, 2: 0.35, 4: 0.6, 8: 0.8}, {1: 0.4, 2: 0.5, 4: 0.55, 8: 0.6})
    4
    >>> crossing_k({1: 0.5, 2: 0.6}, {1: 0.4, 2: 0.7}) is None  # the arm is not ahead at k = 1
    True
    """
    ks = sorted(base.keys() & arm.keys())
    if not ks or not arm[ks[0]] > base[ks[0]]:
        return None
    return next((k for k in ks if base[k] >= arm[k]), None)


def solvable_set_overlap(correct_a: Mapping[str, int], correct_b: Mapping[str, int]) -> dict[str, int]:
    """Compare S_A = {x : c_x >= 1} with S_B over the questions both were evaluated on.

    Returns |S_A \\ S_B|, |S_B \\ S_A|, |S_A ∩ S_B| and the number of shared questions.

    >>> solvable_set_overlap({"q1": 2, "q2": 0, "q3": 1}, {"q1": 1, "q2": 3, "q3": 0})
    {'only_a': 1, 'only_b': 1, 'both': 1, 'questions': 3}
    """
    shared = correct_a.keys() & correct_b.keys()
    solved_a = {q for q in shared if correct_a[q] >= 1}
    solved_b = {q for q in shared if correct_b[q] >= 1}
    return {"only_a": len(solved_a - solved_b), "only_b": len(solved_b - solved_a),
            "both": len(solved_a & solved_b), "questions": len(shared)}
