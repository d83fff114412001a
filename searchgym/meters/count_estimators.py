"""Calibration math, part 1: exact truths for positive controls, and the estimators over count arrays.

Pure functions (numpy only) behind ``searchgym calibrate`` (`searchgym.calibration`); the claim rules' twins
and the minimum detectable effect are part 2, `searchgym.meters.claim_rules`:

- the exact entropy of a label distribution and the exact expectation of every candidate estimator at n
  samples (plug-in, Miller–Madow, jackknife, Chao–Shen, Grassberger: what the meter should read on a
  policy whose label distribution is known);
- the estimators vectorised over count arrays of any leading shape (what thousands of simulated studies
  need), and the pass@k table.

Nothing here is registered in ``searchgym.meters``: import it as ``searchgym.meters.count_estimators``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from searchgym.meters.passk import pass_at_k

# ---- 1. exact truths ---------------------------------------------------------------------------------

def entropy(p: Mapping[str, float] | Sequence[float]) -> float:
    """Shannon entropy in nats of a distribution (a dict of shares or a list; zeros contribute 0).

    >>> round(entropy([0.5, 0.5]), 6), entropy({"forward": 1.0})
    (0.693147, 0.0)
    """
    values = np.asarray(list(p.values()) if isinstance(p, Mapping) else list(p), dtype=np.float64)
    values = values[values > 0]
    return float(-(values * np.log(values)).sum()) + 0.0 if values.size else 0.0  # + 0.0: no -0.0


@lru_cache(maxsize=64)
def _compositions(n: int, k: int) -> np.ndarray:
    """Every vector of k non-negative counts summing to n, shape (C(n+k-1, k-1), k)."""
    rows = []
    for bars in itertools.combinations(range(n + k - 1), k - 1):
        edges = (-1, *bars, n + k - 1)
        rows.append([edges[i + 1] - edges[i] - 1 for i in range(k)])
    return np.array(rows, dtype=np.int64)


def expected_estimates(p: Mapping[str, float] | Sequence[float], n: int) -> dict[str, float]:
    """Exact expectation of every estimator of `estimates_from_counts` on n labels drawn i.i.d. from p.

    Sums over every possible count vector with its multinomial probability (labels with p = 0 never
    occur, so only the support of p is enumerated). The gap to `entropy(p)` is the estimator's bias.

    >>> e = expected_estimates([0.5, 0.5], 2)  # counts (2,0), (1,1), (0,2) with probabilities 1/4, 1/2, 1/4
    >>> {k: round(v, 6) for k, v in e.items()}  # plug-in 0.5 log 2; MM adds (K-1)/(2n) = 1/4 when both show
    {'plug-in': 0.346574, 'MM': 0.471574, 'jackknife': 0.693147, 'Chao-Shen': 0.792168, 'Grassberger': 0.981755}
    >>> expected_estimates({"forward": 1.0}, 8)["jackknife"]
    0.0
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    probs = np.asarray(list(p.values()) if isinstance(p, Mapping) else list(p), dtype=np.float64)
    probs = probs[probs > 0]
    if probs.size == 0:
        raise ValueError("p has no positive share")
    probs = probs / probs.sum()
    if probs.size == 1:
        return dict.fromkeys(ESTIMATORS, 0.0)
    counts = _compositions(n, probs.size)
    log_factorial = np.array([math.lgamma(i + 1.0) for i in range(n + 1)])
    log_pmf = log_factorial[n] - log_factorial[counts].sum(axis=1) + (counts * np.log(probs)).sum(axis=1)
    pmf = np.exp(log_pmf)
    return {name: float(pmf @ values) for name, values in estimates_from_counts(counts).items()}


def expected_entropy_estimates(p: Mapping[str, float] | Sequence[float], n: int) -> tuple[float, float]:
    """Exact expectation of the plug-in and the Miller–Madow entropy of n labels drawn i.i.d. from p
    (`expected_estimates`, those two).

    >>> plugin, mm = expected_entropy_estimates([0.5, 0.5], 2)
    >>> round(plugin, 6), round(mm, 6)
    (0.346574, 0.471574)
    >>> expected_entropy_estimates({"forward": 1.0}, 8)
    (0.0, 0.0)
    """
    e = expected_estimates(p, n)
    return e["plug-in"], e["MM"]


# ---- 2. estimators over count arrays (vectorised `cluster_stats`) -------------------------------------

def entropy_from_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plug-in and Miller–Madow entropy of label counts along the last axis, for any leading shape:
    H = -sum (c/n) log(c/n), H_MM = H + (K - 1) / (2n) with K the labels seen. Same numbers as
    `searchgym.meters.diversity.cluster_stats` on the labels themselves.

    >>> plugin, mm = entropy_from_counts(np.array([[3, 1, 0], [4, 0, 0]]))
    >>> plugin.round(6).tolist(), mm.round(6).tolist()  # cluster_stats(["a", "a", "a", "b"]): 0.562335, 0.687335
    ([0.562335, 0.0], [0.687335, 0.0])
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    share = np.divide(c, n, out=np.zeros_like(c), where=n > 0)
    logs = np.log(share, out=np.zeros_like(share), where=share > 0)
    plugin = -(share * logs).sum(axis=-1) + 0.0  # + 0.0 turns -0.0 into 0.0
    seen = (c > 0).sum(axis=-1)
    mm = plugin + (seen - 1).clip(min=0) / (2 * n[..., 0].clip(min=1))
    return plugin, mm


def _plugin_last(c: np.ndarray) -> np.ndarray:
    n = c.sum(axis=-1, keepdims=True)
    share = np.divide(c, n, out=np.zeros_like(c), where=n > 0)
    return -(share * np.log(share, out=np.zeros_like(share), where=share > 0)).sum(axis=-1) + 0.0


def jackknife_from_counts(counts: np.ndarray) -> np.ndarray:
    """Jackknife entropy of label counts along the last axis, for any leading shape: the count-array twin of
    `searchgym.meters.entropy.jackknife_entropy` (the report's strategy entropy), H_J = n H - ((n - 1) / n)
    sum_c n_c H(counts - e_c). A row with one label seen is 0.

    >>> jackknife_from_counts(np.array([[2, 2, 0], [3, 0, 0], [1, 0, 0]])).round(4).tolist()
    [0.863, 0.0, 0.0]
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1)
    left_out = np.zeros_like(n)
    for k in range(c.shape[-1]):  # dropping one sample of label k, which it holds c_k times
        drop = np.zeros(c.shape[-1])
        drop[k] = 1.0
        left_out += c[..., k] * _plugin_last(np.where(c[..., k:k + 1] > 0, c - drop, c))
    jk = n * _plugin_last(c) - np.divide(n - 1, n, out=np.zeros_like(n), where=n > 0) * left_out
    return np.where((c > 0).sum(axis=-1) <= 1, 0.0, jk) + 0.0


@lru_cache(maxsize=8)
def _grassberger_g(n: int) -> np.ndarray:
    """G(c) = psi(c) + (-1)^c (psi((c + 1) / 2) - psi(c / 2)) / 2 for c = 0..n (G(0) = 0), with psi at
    integers and half-integers in closed form (no scipy)."""
    euler = 0.5772156649015329

    def psi_half(k: int) -> float:  # psi(k / 2)
        if k % 2 == 0:
            return -euler + sum(1.0 / j for j in range(1, k // 2))
        return -euler - 2 * math.log(2) + sum(2.0 / (2 * j - 1) for j in range(1, (k + 1) // 2))

    return np.array([0.0] + [psi_half(2 * c) + 0.5 * (-1) ** c * (psi_half(c + 1) - psi_half(c))
                             for c in range(1, n + 1)])


def estimates_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Every candidate estimator the calibration compared, on label counts along the last axis (any leading
    shape): plug-in, Miller–Madow (MM), jackknife, Chao–Shen (coverage-adjusted Horvitz–Thompson, with
    f1 = n - 1 when every sample is a singleton) and Grassberger (2003: log n - (1/n) sum_c n_c G(n_c)).
    A row with one label seen is 0 for all of them.

    >>> e = estimates_from_counts(np.array([[3, 1, 0]]))
    >>> {k: round(float(v[0]), 4) for k, v in e.items()}
    {'plug-in': 0.5623, 'MM': 0.6873, 'jackknife': 0.8172, 'Chao-Shen': 0.8923, 'Grassberger': 1.1567}
    """
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    plugin, mm = entropy_from_counts(counts)
    singletons = (c == 1).sum(axis=-1, keepdims=True)
    singletons = np.where(singletons == n, n - 1, singletons)
    coverage = 1 - np.divide(singletons, n, out=np.zeros_like(n), where=n > 0)
    pa = coverage * np.divide(c, n, out=np.zeros_like(c), where=n > 0)
    safe = np.where(pa > 0, pa, 0.5)
    chao_shen = -np.where(pa > 0, safe * np.log(safe) / (1 - (1 - safe) ** n), 0.0).sum(axis=-1)
    g = _grassberger_g(int(c.max()) if c.size else 0)
    grassberger = (np.log(np.where(n > 0, n, 1.0)) - (c * g[np.asarray(counts, dtype=np.int64)]).sum(
        axis=-1, keepdims=True) / np.where(n > 0, n, 1.0))[..., 0]
    one = (c > 0).sum(axis=-1) <= 1
    return {"plug-in": plugin, "MM": mm, "jackknife": jackknife_from_counts(c),
            "Chao-Shen": np.where(one, 0.0, chao_shen) + 0.0, "Grassberger": np.where(one, 0.0, grassberger) + 0.0}


ESTIMATORS = ("plug-in", "MM", "jackknife", "Chao-Shen", "Grassberger")  # the keys of `estimates_from_counts`


def pass_at_k_by_count(n: int, k: int) -> np.ndarray:
    """pass@k for every possible number of correct samples c = 0..n (index by c).

    >>> pass_at_k_by_count(4, 2).round(3).tolist()
    [0.0, 0.5, 0.833, 1.0, 1.0]
    """
    return np.array([pass_at_k(n, c, k) for c in range(n + 1)])
