"""Calibration math, part 2: the study's claim rules, vectorised, and their minimum detectable effect.

Pure functions (numpy only) behind ``searchgym calibrate`` (`searchgym.calibration`) and the report's
minimum detectable difference (part 1, exact truths and estimators over counts: `searchgym.meters.count_estimators`):

- vectorised twins of the claim rules, bit-for-bit on the same bootstrap draws as the report's code: the
  seed rule (IQM over seeds with a stratified bootstrap CI, `searchgym.report.data.seed_estimate`), the
  two-level bootstrap over seeds and questions of the strategy-entropy column
  (`searchgym.report.data.two_level_bootstrap_ci`), the report's claim between two arms (the paired
  two-level bootstrap of their per-question difference, `searchgym.report.data.paired_two_level_bootstrap_ci`,
  claimed when its 95% CI excludes 0: `paired_two_level_ci`), the fallback where per-question values are
  missing (two CIs that must not overlap: `nonoverlap`), and the paired bootstrap over questions alone
  (`searchgym.meters.stats.paired_bootstrap`), so thousands of simulated studies cost seconds; and the
  other candidate intervals the calibration compared;
- the minimum detectable effect (MDE): the smallest true difference a rule detects in >= 80% of studies,
  and what the report states from one study (`paired_rule_mde`, `question_rule_mde`, `study_mde`).

Nothing here is registered in ``searchgym.meters``: import it as ``searchgym.meters.claim_rules``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

POWER = 0.8  # an effect is "detectable" when the rule claims it in at least this share of studies
SEED_BOOT = 1000  # n_boot of the report's seed CI (report.data.seed_estimate)
PAIRED_BOOT = 2000  # n_boot of stats.paired_bootstrap's default


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
    what `report.data.seed_estimate` reports for an arm with these seed-level meter values.

    >>> point, lo, hi = seed_ci(np.array([[0.60, 0.65, 0.70]]))
    >>> [round(float(x[0]), 6) for x in (point, lo, hi)]  # with 3 seeds the 95% CI is their range
    [0.65, 0.6, 0.7]
    """
    v = np.asarray(values, dtype=np.float64)
    idx = seed_bootstrap_indices(v.shape[-1], n_boot, seed)
    stats = _iqm_last(v[..., idx])  # (..., n_boot)
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2], axis=-1)
    return _iqm_last(v), lo, hi


@lru_cache(maxsize=32)
def two_level_weights(seeds: int, questions: int, n_boot: int = SEED_BOOT,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The draws of `searchgym.report.data.two_level_bootstrap_ci` for a (seeds, questions) matrix, as
    weights: (n_boot, seeds) and (n_boot, questions), how often each seed / question is drawn over the number
    drawn (the same generator calls in the same order, so the CIs below are the report's).

    >>> ws, wq = two_level_weights(3, 4, n_boot=2)
    >>> ws.shape, wq.shape, ws.sum(axis=1).tolist(), wq.sum(axis=1).tolist()
    ((2, 3), (2, 4), [1.0, 1.0], [1.0, 1.0])
    """
    rng = np.random.default_rng(seed)
    weights = []
    for size in (seeds, questions):
        idx = rng.integers(0, size, size=(n_boot, size))
        w = np.zeros((n_boot, size))
        np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
        weights.append(w / size)
    return weights[0], weights[1]


def _quantiles(stats: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2], axis=-1)
    return lo, hi


def two_level_ci(values: np.ndarray, n_boot: int = SEED_BOOT, alpha: float = 0.05, seed: int = 0,
                 stats: bool = False):
    """Mean over seeds and questions and its two-level bootstrap CI (seeds drawn with replacement, then
    questions, shared by the seeds drawn) for every (seeds, questions) matrix in ``values`` (shape
    (..., seeds, questions)): `searchgym.report.data.two_level_bootstrap_ci`, the report's strategy-entropy
    CI, on the same draws. With ``stats`` also the bootstrap statistics (..., n_boot).

    >>> point, lo, hi = two_level_ci(np.array([[[0.6, 0.7, 0.8], [0.6, 0.7, 0.8]]]))
    >>> round(float(point[0]), 6), bool(0.6 <= lo[0] < 0.7 < hi[0] <= 0.8)
    (0.7, True)
    """
    v = np.asarray(values, dtype=np.float64)
    ws, wq = two_level_weights(v.shape[-2], v.shape[-1], n_boot, seed)
    boot = np.einsum("...sb,bs->...b", v @ wq.T, ws)  # (..., n_boot): each seed's question mean, weighted
    lo, hi = _quantiles(boot, alpha)
    out = (v.mean(axis=(-1, -2)), lo, hi)
    return (*out, boot) if stats else out


def _t975(df: np.ndarray | int) -> np.ndarray:
    """The 97.5% quantile of Student's t with df degrees of freedom (a table to 9, then the Cornish–Fisher
    expansion, within 0.001 there).

    >>> _t975(2).round(3).tolist(), _t975(29).round(3).tolist()
    (4.303, 2.045)
    """
    table = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}
    d = np.asarray(df, dtype=np.float64)
    z = 1.959964
    approx = z + (z ** 3 + z) / (4 * d) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * d ** 2)
    return np.where(d < 10, np.vectorize(lambda x: table.get(int(x), math.nan))(d), approx)


def _bias_corrected(stats: np.ndarray, point: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Bias-corrected (BC) percentile interval of bootstrap statistics (Efron): the percentiles shifted by
    z0 = Phi^-1(share of statistics below the point estimate)."""
    from statistics import NormalDist

    norm = NormalDist()
    below = np.clip((stats < point[..., None]).mean(axis=-1), 1 / stats.shape[-1], 1 - 1 / stats.shape[-1])
    z0 = np.vectorize(norm.inv_cdf)(below)
    levels = [np.vectorize(norm.cdf)(2 * z0 + norm.inv_cdf(q)) for q in (alpha / 2, 1 - alpha / 2)]
    ordered = np.sort(stats, axis=-1)
    pos = [np.clip(np.rint(lv * (stats.shape[-1] - 1)).astype(int), 0, stats.shape[-1] - 1) for lv in levels]
    return (np.take_along_axis(ordered, pos[0][..., None], -1)[..., 0],
            np.take_along_axis(ordered, pos[1][..., None], -1)[..., 0])


def candidate_intervals(values: np.ndarray, alpha: float = 0.05) -> dict[str, tuple[np.ndarray, ...]]:
    """Every 95% interval the calibration compared, for per-question estimates ``values`` of shape
    (..., seeds, questions): name -> (point, lo, hi). Seed intervals need >= 2 seeds and are left out
    otherwise.

    - "seed bootstrap": IQM over seed means, stratified bootstrap (the previous report rule, `seed_ci`);
    - "t over seeds": seed means, mean +- t_(S-1) sd / sqrt(S);
    - "pooled seed spread": mean +- 1.96 sqrt(sum_q s_q^2 / S) / Q with s_q the seed-to-seed sd of question
      q (the right variance for a fixed policy on fixed questions; blind to effects shared by a seed's
      questions);
    - "question bootstrap", "t over questions": seeds averaged per question, then over questions;
    - "two-level bootstrap": seeds, then questions (`two_level_ci`, the report's rule), and its
      bias-corrected percentile version "two-level bootstrap BC".

    >>> v = np.random.default_rng(0).normal(0.7, 0.1, size=(1, 3, 30))
    >>> len(candidate_intervals(v)), list(candidate_intervals(v[:, :1]))  # one seed: no seed intervals
    (7, ['question bootstrap', 't over questions', 'two-level bootstrap', 'two-level bootstrap BC'])
    """
    v = np.asarray(values, dtype=np.float64)
    seeds, questions = v.shape[-2:]
    out = {}
    if seeds >= 2:
        seed_means = v.mean(axis=-1)
        out["seed bootstrap"] = seed_ci(seed_means, alpha=alpha)
        m, half = seed_means.mean(axis=-1), _t975(seeds - 1) * seed_means.std(axis=-1, ddof=1) / math.sqrt(seeds)
        out["t over seeds"] = (m, m - half, m + half)
        m = v.mean(axis=(-1, -2))
        half = 1.959964 * np.sqrt(v.var(axis=-2, ddof=1).sum(axis=-1) / seeds) / questions
        out["pooled seed spread"] = (m, m - half, m + half)
    per_q = v.mean(axis=-2)
    out["question bootstrap"] = question_ci(per_q, alpha=alpha)
    m, half = per_q.mean(axis=-1), _t975(questions - 1) * per_q.std(axis=-1, ddof=1) / math.sqrt(questions)
    out["t over questions"] = (m, m - half, m + half)
    point, lo, hi, boot = two_level_ci(v, alpha=alpha, stats=True)
    out["two-level bootstrap"] = (point, lo, hi)
    out["two-level bootstrap BC"] = (point, *_bias_corrected(boot, point, alpha))
    return out


def nonoverlap(lo_a: np.ndarray, hi_a: np.ndarray, lo_b: np.ndarray, hi_b: np.ndarray) -> np.ndarray:
    """The report's fallback claim (`searchgym.report.rules.compare`): True where the two CIs do not overlap.

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


@lru_cache(maxsize=32)
def paired_two_level_weights(seeds_a: int, seeds_b: int, questions: int, n_boot: int = PAIRED_BOOT,
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The draws of `searchgym.report.data.paired_two_level_bootstrap_ci` as weights: (n_boot, seeds_a),
    (n_boot, seeds_b) and (n_boot, questions), how often each seed of arm a, each seed of arm b and each
    question is drawn over the number drawn (the same generator calls in the same order).

    >>> wa, wb, wq = paired_two_level_weights(3, 2, 4, n_boot=5)
    >>> wa.shape, wb.shape, wq.shape, float(wa.sum()), float(wq.sum())
    ((5, 3), (5, 2), (5, 4), 5.0, 5.0)
    """
    rng = np.random.default_rng(seed)
    weights = []
    for size in (seeds_a, seeds_b, questions):
        idx = rng.integers(0, size, size=(n_boot, size))
        w = np.zeros((n_boot, size))
        np.add.at(w, (np.arange(n_boot)[:, None], idx), 1.0)
        weights.append(w / size)
    return weights[0], weights[1], weights[2]


def paired_two_level_ci(a: np.ndarray, b: np.ndarray, n_boot: int = PAIRED_BOOT, alpha: float = 0.05,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The report's claim rule between two arms, for many studies at once: ``a`` (..., seeds_a, questions)
    and ``b`` (..., seeds_b, questions) per-(seed, question) values on the same questions; returns the
    difference a - b of the per-question means over seeds, averaged over questions, and its paired two-level
    bootstrap CI (a's seeds, b's seeds, then questions shared by both arms): the twin of
    `searchgym.report.data.paired_two_level_bootstrap_ci` (no NaN here), on the same draws. A difference
    is claimed where the CI excludes 0: ``(lo > 0) | (hi < 0)``.

    >>> d, lo, hi = paired_two_level_ci(np.array([[[0.9, 0.5, 0.2, 0.7]] * 3]), np.array([[[0.8, 0.4, 0.1, 0.6]] * 3]))
    >>> [round(float(x[0]), 6) for x in (d, lo, hi)]
    [0.1, 0.1, 0.1]
    """
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    wa, wb, wq = paired_two_level_weights(va.shape[-2], vb.shape[-2], va.shape[-1], n_boot, seed)
    boot = (np.einsum("...sb,bs->...b", va @ wq.T, wa)  # (..., n_boot): a's drawn seeds on the drawn questions
            - np.einsum("...sb,bs->...b", vb @ wq.T, wb))
    lo, hi = _quantiles(boot, alpha)
    return va.mean(axis=(-1, -2)) - vb.mean(axis=(-1, -2)), lo, hi


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


def paired_rule_mde(se: float | np.ndarray, target: float = POWER, alpha: float = 0.05) -> float | np.ndarray:
    """MDE of the paired rule (the 95% CI of the paired difference must exclude 0) from the difference's
    standard error: the CI excludes 0 once |diff| > z_(1-alpha/2) se, and diff ~ Normal(delta, se^2), so
    delta = (z_(1-alpha/2) + z_target) se (2.80 se at 80% power). The report reads se off the paired CI
    (half its width / 1.96).

    >>> round(paired_rule_mde(1.0), 3)
    2.802
    """
    from statistics import NormalDist

    z = NormalDist().inv_cdf
    return (z(1 - alpha / 2) + z(target)) * se


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
