"""pass@k: the chance that at least one of k samples is correct, estimated without bias from n >= k.

pass@k curves tell coverage from sharpening: an RL-trained agent wins at k=1 while the base model can
catch up at large k. We use Chen et al.'s unbiased estimator, never 1 - (1 - c/n)^k (biased low), and
report the solvable-set overlap of two models (which questions each solves at all).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


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


def pass_at_k_curve(correct_counts: Sequence[int], n: int, ks: Sequence[int] | None = None) -> dict[int, float]:
    """Mean over questions of pass@k, each question having n samples and ``correct_counts[q]`` correct.

    >>> pass_at_k_curve([0, 1, 4], n=4)  # (0 + 1/4 + 1)/3 at k=1; (0 + 1/2 + 1)/3 at k=2 ...
    {1: 0.4166666666666667, 2: 0.5, 4: 0.6666666666666666}
    """
    if not correct_counts:
        raise ValueError("pass@k curve of zero questions; pass at least one question")
    ks = list(ks) if ks is not None else k_ladder(n)
    return {k: sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts) for k in ks}


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
