"""Calibration math: exact truths for positive controls, and the power of the study's claim rules.

Pure functions (numpy only) behind ``searchgym calibrate`` (`searchgym.calibration`) and the report's
minimum detectable difference:

- the exact entropy of a label distribution and the exact expectation of the plug-in and Miller–Madow
  estimators at n samples (what the meter should read on a policy whose label distribution is known);
- vectorised twins of the two claim rules, bit-for-bit on the same bootstrap draws as the report's code:
  the seed rule (IQM over seeds with a stratified bootstrap CI, `searchgym.report.data._seed_estimate`,
  a difference claimed when two CIs do not overlap) and the paired bootstrap over questions
  (`searchgym.meters.stats.paired_bootstrap`), so thousands of simulated studies cost seconds;
- the minimum detectable effect (MDE): the smallest true difference a rule detects in >= 80% of studies.

Nothing here is registered in ``searchgym.meters``: import it as ``searchgym.meters.calibration``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np

from searchgym.meters.passk import pass_at_k

POWER = 0.8  # an effect is "detectable" when the rule claims it in at least this share of studies
SEED_BOOT = 1000  # n_boot of the report's seed CI (report.data._seed_estimate)
PAIRED_BOOT = 2000  # n_boot of stats.paired_bootstrap's default


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


def expected_entropy_estimates(p: Mapping[str, float] | Sequence[float], n: int) -> tuple[float, float]:
    """Exact expectation of the plug-in and the Miller–Madow entropy of n labels drawn i.i.d. from p.

    Sums over every possible count vector with its multinomial probability (labels with p = 0 never
    occur, so only the support of p is enumerated). The gap to `entropy(p)` is the estimator's bias.

    >>> plugin, mm = expected_entropy_estimates([0.5, 0.5], 2)  # counts (2,0), (1,1), (0,2): 1/4, 1/2, 1/4
    >>> round(plugin, 6), round(mm, 6)  # 0.5 log 2; MM adds (K-1)/(2n) = 1/4 when both labels show
    (0.346574, 0.471574)
    >>> expected_entropy_estimates({"forward": 1.0}, 8)
    (0.0, 0.0)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    probs = np.asarray(list(p.values()) if isinstance(p, Mapping) else list(p), dtype=np.float64)
    probs = probs[probs > 0]
    if probs.size == 0:
        raise ValueError("p has no positive share")
    probs = probs / probs.sum()
    if probs.size == 1:
        return 0.0, 0.0
    counts = _compositions(n, probs.size)
    log_factorial = np.array([math.lgamma(i + 1.0) for i in range(n + 1)])
    log_pmf = log_factorial[n] - log_factorial[counts].sum(axis=1) + (counts * np.log(probs)).sum(axis=1)
    pmf = np.exp(log_pmf)
    plugin, mm = entropy_from_counts(counts)
    return float(pmf @ plugin), float(pmf @ mm)


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


def pass_at_k_table(n: int, k: int) -> np.ndarray:
    """pass@k for every possible number of correct samples c = 0..n (index by c).

    >>> pass_at_k_table(4, 2).round(3).tolist()
    [0.0, 0.5, 0.833, 1.0, 1.0]
    """
    return np.array([pass_at_k(n, c, k) for c in range(n + 1)])


# ---- 3. the claim rules, vectorised on the report's own bootstrap draws ------------------------------

@lru_cache(maxsize=32)
def seed_bootstrap_indices(seeds: int, n_boot: int = SEED_BOOT, seed: int = 0) -> np.ndarray:
    """The run indices `stats.stratified_bootstrap_ci` draws for a (seeds, 1) score matrix, shape
    (n_boot, seeds): the same generator calls in the same order, so the CIs below are the report's.

    >>> seed_bootstrap_indices(3, n_boot=2).shape
    (2, 3)
    """
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, seeds, size=(seeds, 1))[:, 0] for _ in range(n_boot)])


def _iqm_last(values: np.ndarray) -> np.ndarray:
    """Interquartile mean along the last axis (`stats.iqm` per row)."""
    cut = int(0.25 * values.shape[-1])
    if cut == 0:  # fewer than 4 seeds: the IQM is the mean (no sort needed)
        return values.mean(axis=-1)
    v = np.sort(values, axis=-1)
    return v[..., cut:v.shape[-1] - cut].mean(axis=-1)


def seed_ci(values: np.ndarray, n_boot: int = SEED_BOOT, alpha: float = 0.05,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM over seeds and its stratified-bootstrap CI for every row of ``values`` (shape (..., seeds)):
    what `report.data._seed_estimate` reports for an arm with these seed-level meter values.

    >>> point, lo, hi = seed_ci(np.array([[0.60, 0.65, 0.70]]))
    >>> [round(float(x[0]), 6) for x in (point, lo, hi)]  # with 3 seeds the 95% CI is their range
    [0.65, 0.6, 0.7]
    """
    v = np.asarray(values, dtype=np.float64)
    idx = seed_bootstrap_indices(v.shape[-1], n_boot, seed)
    stats = _iqm_last(v[..., idx])  # (..., n_boot)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2], axis=-1)
    return _iqm_last(v), lo, hi


def nonoverlap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """The report's claim (`searchgym.report.rules.compare`): True where the two CIs do not overlap.

    >>> nonoverlap(np.array([0.0, 0.0]), np.array([1.0, 1.0]), np.array([1.5, 0.5]), np.array([2.0, 2.0])).tolist()
    [True, False]
    """
    return (lo_a > hi_b) | (hi_a < lo_b)


@lru_cache(maxsize=32)
def _paired_counts(questions: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap weights (n_boot, questions): how often each question is drawn, over ``questions``; the
    draws of `stats.paired_bootstrap` and `stats.bootstrap_ci` (one generator call of that shape)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, questions, size=(n_boot, questions))
    counts = np.zeros((n_boot, questions))
    np.add.at(counts, (np.arange(n_boot)[:, None], idx), 1.0)
    return counts / questions


def paired_diff_ci(a: np.ndarray, b: np.ndarray, n_boot: int = PAIRED_BOOT, alpha: float = 0.05,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean difference b - a over questions and its paired-bootstrap CI, for every row of ``a`` and ``b``
    (shape (..., questions), one value per question): `stats.paired_bootstrap`'s ``diff``, ``lo_diff``,
    ``hi_diff``, on the same question draws (its default seed), for many studies at once.

    >>> d, lo, hi = paired_diff_ci(np.array([[0.0, 0.1, 0.2, 0.1]]), np.array([[0.5, 0.6, 0.7, 0.6]]))
    >>> round(float(d[0]), 6), round(float(lo[0]), 6), round(float(hi[0]), 6)
    (0.5, 0.5, 0.5)
    """
    d = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    weights = _paired_counts(d.shape[-1], n_boot, seed)  # (n_boot, questions), rows sum to 1
    means = d @ weights.T  # (..., n_boot)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=-1)
    return d.mean(axis=-1), lo, hi


def question_ci(values: np.ndarray, n_boot: int = SEED_BOOT, alpha: float = 0.05,
                seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over questions and its bootstrap CI for every row of ``values`` (shape (..., questions)):
    `stats.bootstrap_ci` with the report's one-seed settings (n_boot 1000), on the same draws.

    >>> m, lo, hi = question_ci(np.array([[0.0, 1.0] * 50]))
    >>> float(m[0]), bool(lo[0] < 0.5 < hi[0])
    (0.5, True)
    """
    v = np.asarray(values, dtype=np.float64)
    means = v @ _paired_counts(v.shape[-1], n_boot, seed).T
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=-1)
    return v.mean(axis=-1), lo, hi


# ---- 4. minimum detectable effect --------------------------------------------------------------------

def mde_from_power(deltas: Sequence[float], power: Sequence[float], target: float = POWER) -> float:
    """The smallest delta whose detection rate reaches ``target`` (deltas ascending); NaN if none does.

    >>> mde_from_power([0.0, 0.05, 0.1, 0.15], [0.06, 0.5, 0.82, 0.99])
    0.1
    >>> import math; math.isnan(mde_from_power([0.0, 0.1], [0.05, 0.4]))
    True
    """
    for delta, p in zip(deltas, power, strict=True):
        if p >= target:
            return float(delta)
    return math.nan


@lru_cache(maxsize=32)
def nonoverlap_mde_factor(seeds_a: int, seeds_b: int, target: float = POWER, reps: int = 4000,
                          seed: int = 0) -> float:
    """MDE of the seed rule in units of the seed-to-seed standard deviation sigma, for seed-level values
    ~ Normal(mu, sigma^2): the smallest shift mu_a - mu_b that makes the two CIs of `seed_ci` miss each
    other in ``target`` of studies. The CI moves with a shift, so the rule detects a drop of d exactly
    when d > hi_b0 - lo_a (b0: arm b before the shift); the factor is that quantity's ``target`` quantile
    over ``reps`` simulated studies. With 3 seeds per arm the CI is the seeds' range, the false-positive
    rate is 2 / C(6, 3) = 0.10 and the factor is about 2.6.

    >>> 2.3 < nonoverlap_mde_factor(3, 3) < 2.8
    True
    """
    if seeds_a < 2 or seeds_b < 2:
        raise ValueError("the seed rule needs >= 2 seeds per arm (one seed falls back to questions)")
    rng = np.random.default_rng(seed)
    _, lo_a, _ = seed_ci(rng.standard_normal((reps, seeds_a)))
    _, _, hi_b = seed_ci(rng.standard_normal((reps, seeds_b)))
    return float(np.quantile(hi_b - lo_a, target))


def question_rule_mde(se_a: float, se_b: float, target: float = POWER, alpha: float = 0.05) -> float:
    """MDE of the one-seed rule (two bootstrap CIs over questions must not overlap) from each arm's standard
    error: non-overlap needs diff > z (se_a + se_b) with z = z_(1-alpha/2), and diff ~ Normal(delta,
    se_a^2 + se_b^2), so delta = z (se_a + se_b) + z_target sqrt(se_a^2 + se_b^2).

    >>> round(question_rule_mde(1.0, 1.0), 2)  # 3.92 + 0.84 * 1.41
    5.11
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    return z(1 - alpha / 2) * (se_a + se_b) + z(target) * math.hypot(se_a, se_b)


def study_mde(seed_values: Sequence[Sequence[float]], seeds_a: int, seeds_b: int) -> float:
    """MDE of the seed rule for one comparison of a study as run: the seed-to-seed standard deviation
    pooled over the study's arms (``seed_values``: one list of seed-level meter values per arm; arms with
    fewer than 2 finite values are skipped) times `nonoverlap_mde_factor`. NaN when nothing can be pooled.

    >>> round(study_mde([[0.60, 0.64, 0.62], [0.70, 0.66, 0.68]], 3, 3), 2)  # pooled sd 0.02
    0.05
    """
    ss = df = 0.0
    for values in seed_values:
        v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
        if v.size >= 2:
            ss += float(((v - v.mean()) ** 2).sum())
            df += v.size - 1
    if not df or min(seeds_a, seeds_b) < 2:
        return math.nan
    return math.sqrt(ss / df) * nonoverlap_mde_factor(seeds_a, seeds_b)
