"""Confidence intervals for meters: bootstrap over questions, and rliable-style aggregates over seeds.

A meter averaged over questions gets a percentile bootstrap CI by resampling questions (each keeps all
of its n samples); two models on the same questions share each resample (paired), which makes their
difference far tighter than two separate CIs. Across training seeds we follow rliable: interquartile
mean, stratified bootstrap CIs (runs resampled within each task) and the probability of improvement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def _finite(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def bootstrap_ci(values: Sequence[float], n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of per-question values and its percentile bootstrap (1 - alpha) CI; NaNs are left out.

    >>> m, lo, hi = bootstrap_ci([0.0, 1.0] * 50)
    >>> m, lo < 0.5 < hi
    (0.5, True)
    """
    v = _finite(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(v.mean()), float(lo), float(hi)


def paired_bootstrap(a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], n_boot: int = 2000,
                     alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Paired bootstrap over questions of two models: ``a[q]`` / ``b[q]`` hold all samples' values for
    question q (one value per question is fine too). Each resample draws question ids with replacement
    and uses the same draw for both models; a question's value is the mean of its samples.

    Returns mean and CI of each model and of the difference b - a. Questions where either value is
    not finite are left out.

    >>> r = paired_bootstrap({"q1": [0, 1], "q2": [0, 0]}, {"q1": [1, 1], "q2": [1, 0]})
    >>> r["mean_a"], r["mean_b"], r["diff"]
    (0.25, 0.75, 0.5)
    """
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"paired bootstrap needs the same questions in both inputs; only in the first: "
                         f"{only_a[:5]}, only in the second: {only_b[:5]}. Evaluate both on the same task set")
    qs = sorted(a)
    va = np.array([np.mean(a[q]) if len(a[q]) else math.nan for q in qs], dtype=np.float64)
    vb = np.array([np.mean(b[q]) if len(b[q]) else math.nan for q in qs], dtype=np.float64)
    keep = np.isfinite(va) & np.isfinite(vb)
    va, vb = va[keep], vb[keep]
    if va.size == 0:
        nan = math.nan
        return {"mean_a": nan, "lo_a": nan, "hi_a": nan, "mean_b": nan, "lo_b": nan, "hi_b": nan,
                "diff": nan, "lo_diff": nan, "hi_diff": nan, "questions": 0}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, va.size, size=(n_boot, va.size))
    ma, mb = va[idx].mean(axis=1), vb[idx].mean(axis=1)
    q = [alpha / 2, 1 - alpha / 2]
    (lo_a, hi_a), (lo_b, hi_b), (lo_d, hi_d) = (np.quantile(x, q) for x in (ma, mb, mb - ma))
    return {"mean_a": float(va.mean()), "lo_a": float(lo_a), "hi_a": float(hi_a),
            "mean_b": float(vb.mean()), "lo_b": float(lo_b), "hi_b": float(hi_b),
            "diff": float(vb.mean() - va.mean()), "lo_diff": float(lo_d), "hi_diff": float(hi_d),
            "questions": int(va.size)}


def iqm(scores: np.ndarray | Sequence[float]) -> float:
    """Interquartile mean: the mean of the middle 50% of all scores (int(n/4) cut from each end).

    >>> iqm([0, 1, 2, 3, 4, 5, 6, 100])  # mean of 2, 3, 4, 5
    3.5
    """
    v = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    cut = int(0.25 * v.size)
    return float(v[cut:v.size - cut].mean()) if v.size else math.nan


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Callable[[np.ndarray], float] = iqm,
                            n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Point estimate and stratified percentile bootstrap CI of ``statistic`` over a (runs, tasks) score
    matrix: each resample draws runs with replacement independently within every task (rliable).

    >>> point, lo, hi = stratified_bootstrap_ci(np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]), n_boot=200)
    >>> round(point, 3), lo <= point <= hi
    (0.35, True)
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"scores must be a non-empty (runs, tasks) matrix, got shape {s.shape}")
    runs, tasks = s.shape
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    cols = np.arange(tasks)
    for i in range(n_boot):
        stats[i] = statistic(s[rng.integers(0, runs, size=(runs, tasks)), cols])
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(statistic(s)), float(lo), float(hi)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): for each task, the chance a run of X beats a run of Y (ties count half; Mann–Whitney U
    over all run pairs), averaged over tasks. x: (runs_x, tasks), y: (runs_y, tasks).

    >>> probability_of_improvement(np.array([[2.0], [3.0]]), np.array([[1.0], [3.0]]))
    0.625
    """
    x, y = np.atleast_2d(np.asarray(x, dtype=np.float64)), np.atleast_2d(np.asarray(y, dtype=np.float64))
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must score the same tasks (columns): {x.shape[1]} vs {y.shape[1]}")
    diff = x[:, None, :] - y[None, :, :]  # (runs_x, runs_y, tasks)
    per_task = ((diff > 0) + 0.5 * (diff == 0)).mean(axis=(0, 1))
    return float(per_task.mean())


def average_ranks(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..m along the last axis, ties sharing their average rank (what Spearman's rho needs):
    rank_i = #{j : x_j < x_i} + (#{j : x_j = x_i} + 1) / 2.

    >>> average_ranks([10.0, 20.0, 20.0, 5.0]).tolist()
    [2.0, 3.5, 3.5, 1.0]
    """
    x = np.asarray(values, dtype=np.float64)
    less = (x[..., None, :] < x[..., :, None]).sum(axis=-1)
    equal = (x[..., None, :] == x[..., :, None]).sum(axis=-1)
    return less + (equal + 1) / 2.0


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair of two (rows, m) arrays; NaN for a row where either side is constant."""
    xc, yc = x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(axis=-1) * (yc * yc).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(axis=-1) / den
    return np.where(den > 1e-12, r, np.nan)


def correlation(x: Sequence[float], y: Sequence[float], method: str = "spearman") -> float:
    """Pearson r, or Spearman's rho (Pearson r of the average ranks), over the pairs where both are finite;
    NaN with fewer than 3 pairs or a constant side.

    >>> correlation([1, 2, 3, 4], [1, 4, 9, 16]), round(correlation([1, 2, 3, 4], [1, 4, 9, 16], "pearson"), 4)
    (1.0, 0.9844)
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    if xs.size < 3:
        return math.nan
    if method == "spearman":
        xs, ys = average_ranks(xs), average_ranks(ys)
    elif method != "pearson":
        raise ValueError(f"method must be 'spearman' or 'pearson', got {method!r}")
    return float(_rowwise_pearson(xs[None], ys[None])[0])


def bootstrap_correlation(x: Sequence[float], y: Sequence[float], method: str = "spearman", n_boot: int = 1000,
                          alpha: float = 0.05, seed: int = 0) -> tuple[float, float, float]:
    """Correlation of paired values and its percentile bootstrap (1 - alpha) CI, resampling the pairs (for
    per-question values: a bootstrap over questions). Resamples where one side is constant are left out.

    >>> r, lo, hi = bootstrap_correlation(range(30), [v + (v % 3) for v in range(30)], n_boot=300)
    >>> round(r, 3), 0.9 < lo <= r <= hi <= 1.0
    (0.996, True)
    """
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    point = correlation(xs, ys, method)
    if not math.isfinite(point):
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, xs.size, size=(n_boot, xs.size))
    chunk = max(1, 4_000_000 // (xs.size * xs.size))  # the rank matrices stay ~32 MB whatever the size
    stats = []
    for start in range(0, n_boot, chunk):
        bx, by = xs[idx[start:start + chunk]], ys[idx[start:start + chunk]]
        if method == "spearman":
            bx, by = average_ranks(bx), average_ranks(by)
        stats.append(_rowwise_pearson(bx, by))
    s = np.concatenate(stats)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return point, math.nan, math.nan
    lo, hi = np.quantile(s, [alpha / 2, 1 - alpha / 2])
    return point, float(lo), float(hi)


# ---- paths along training: a value at matched distance, and a slope ----------------------------------

def interpolate_at(x, y, kappa: float):
    """The value of a path y(x) at x = κ, linear between the points around its first crossing of κ (KL need
    not grow monotonically); a path that never reaches κ gives its last value (no extrapolation). Along the
    last axis, so a batch of bootstrap paths is one call.

    >>> float(interpolate_at([0.0, 0.25, 0.75], [1.0, 0.75, 0.25], 0.5))
    0.5
    >>> float(interpolate_at([0.0, 0.2, 0.1, 0.4], [1.0, 0.0, 0.5, 0.5], 0.1))  # the first crossing counts
    0.5
    >>> float(interpolate_at([0.0, 0.1], [1.0, 0.8], 0.5))  # short of κ: the path's end
    0.8
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    reached = x >= kappa
    j = np.argmax(reached, axis=-1)[..., None]
    i = np.maximum(j - 1, 0)  # j = 0 (already at κ): i = j, the point itself
    x0, x1 = np.take_along_axis(x, i, -1)[..., 0], np.take_along_axis(x, j, -1)[..., 0]
    y0, y1 = np.take_along_axis(y, i, -1)[..., 0], np.take_along_axis(y, j, -1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(x1 > x0, (kappa - x0) / (x1 - x0), 1.0)
    return np.where(reached.any(axis=-1), y0 + t * (y1 - y0), y[..., -1])


def weighted_slope(xs: list[np.ndarray], ys: list[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """Least-squares slope dy/dx over the points of several paths at once: ``xs``/``ys`` hold one (B, R_s)
    array per path, ``weights`` (B, S) how often each path was drawn -> (B,).

    >>> float(weighted_slope([np.array([[0.0, 1.0]]), np.array([[0.0, 2.0]])],
    ...                      [np.array([[1.0, 0.0]]), np.array([[1.0, -1.0]])], np.ones((1, 2)))[0])
    -1.0
    """
    sw = sx = sy = sxx = sxy = 0.0
    for s, (x, y) in enumerate(zip(xs, ys)):
        ok = np.isfinite(x) & np.isfinite(y)
        w = weights[:, s:s + 1] * ok
        x, y = np.where(ok, x, 0.0), np.where(ok, y, 0.0)
        sw, sx, sy = sw + w.sum(-1), sx + (w * x).sum(-1), sy + (w * y).sum(-1)
        sxx, sxy = sxx + (w * x * x).sum(-1), sxy + (w * x * y).sum(-1)
    den = sw * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, (sw * sxy - sx * sy) / den, np.nan)


def total_variation(p: Mapping[str, float], q: Mapping[str, float]) -> float:
    """Total-variation distance between two share tables, half their L1 distance (0 = the same mix, 1 =
    disjoint); a label missing from one counts as 0 there.

    >>> total_variation({"forward": 0.5, "snippet": 0.5}, {"forward": 0.75, "other": 0.25})
    0.5
    >>> total_variation({"a": 1.0}, {"b": 1.0})
    1.0
    """
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))
