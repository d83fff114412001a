"""Base-vs-arm comparisons from the literature (Yue et al. 2025): coverage inclusion, new and lost questions,
the sampling-efficiency gap ΔSE, and the k at which the base's pass@k catches up with the arm's.

Every function takes each side's correct counts per question, ``{task_id: c}`` out of n samples, for one
run or for several seeds (a list of such dicts). With several runs per side a question's "solved" is the
share of that side's runs that solve it, which makes each meter the mean over all (arm run, base run)
pairs for the set shares (new, lost, both) and the pooled ratio for inclusion. CIs are percentile
bootstraps over questions (each resample keeps every run's value of a drawn question: paired).
Keys are namespaced ``coverage/…`` and ``passk/…``, ready for report.json or a meters table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from searchgym.meters.passk import crossing_k, k_ladder, pass_at_k_table, solvable_set_overlap

Counts = Mapping[str, int] | Sequence[Mapping[str, int]]


def _runs(counts: Counts) -> list[Mapping[str, int]]:
    runs = [counts] if isinstance(counts, Mapping) else list(counts)
    if not runs:
        raise ValueError("no runs: pass {task_id: correct count} for at least one run")
    return runs


def shared_questions(base: Counts, arm: Counts) -> list[str]:
    """The questions every run of both sides was evaluated on, sorted.

    >>> shared_questions({"q1": 1, "q2": 0}, [{"q2": 3, "q1": 0}, {"q2": 1}])
    ['q2']
    """
    keys = None
    for run in _runs(base) + _runs(arm):
        keys = set(run) if keys is None else keys & set(run)
    return sorted(keys or ())


def _matrix(counts: Counts, questions: list[str]) -> np.ndarray:
    """(runs, questions) array of correct counts."""
    return np.array([[run[q] for q in questions] for run in _runs(counts)], dtype=np.int64)


def _ci(draws: np.ndarray, alpha: float) -> tuple[float, float]:
    d = draws[np.isfinite(draws)]
    if d.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def coverage(base: Counts, arm: Counts, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Coverage of the arm's solvable set by the base's, at k_max = n (a question is solved when c >= 1).

    With s_q = share of the arm's runs that solve q and b_q = the base's (0 or 1 with one run each)::

        coverage/inclusion = sum_q s_q b_q / sum_q s_q     (|S_arm ∩ S_base| / |S_arm|; 1 = a subset)
        coverage/new       = mean_q s_q (1 - b_q)          (share of questions only the arm solves)
        coverage/lost      = mean_q (1 - s_q) b_q          (share only the base solves)

    each with ``_lo``/``_hi`` (bootstrap over questions), plus ``coverage/questions`` and the counts of a
    single pair from `solvable_set_overlap` averaged over run pairs (``coverage/only_arm``,
    ``coverage/only_base``, ``coverage/both``). Inclusion is NaN when the arm solves no question.

    >>> r = coverage({"q1": 2, "q2": 0, "q3": 1, "q4": 0}, {"q1": 1, "q2": 3, "q3": 0, "q4": 0}, n_boot=200)
    >>> r["coverage/inclusion"], r["coverage/new"], r["coverage/lost"], r["coverage/only_arm"]
    (0.5, 0.25, 0.25, 1.0)
    """
    questions = shared_questions(base, arm)
    nan = math.nan
    out = {f"coverage/{k}{s}": nan for k in ("inclusion", "new", "lost") for s in ("", "_lo", "_hi")}
    out["coverage/questions"] = float(len(questions))
    if not questions:
        return out
    b = (_matrix(base, questions) >= 1).mean(axis=0)
    s = (_matrix(arm, questions) >= 1).mean(axis=0)
    pairs = [solvable_set_overlap(a, bb) for a in _runs(arm) for bb in _runs(base)]
    out.update({f"coverage/{name}": float(np.mean([p[key] for p in pairs]))
                for name, key in (("only_arm", "only_a"), ("only_base", "only_b"), ("both", "both"))})
    idx = np.random.default_rng(seed).integers(0, len(questions), size=(n_boot, len(questions)))
    with np.errstate(invalid="ignore", divide="ignore"):
        incl_draws = (s * b)[idx].sum(axis=1) / s[idx].sum(axis=1)
    incl = float((s * b).sum() / s.sum()) if s.sum() > 0 else nan
    for name, point, draws in (("inclusion", incl, incl_draws),
                               ("new", float((s * (1 - b)).mean()), (s * (1 - b))[idx].mean(axis=1)),
                               ("lost", float(((1 - s) * b).mean()), ((1 - s) * b)[idx].mean(axis=1))):
        out[f"coverage/{name}"] = point
        out[f"coverage/{name}_lo"], out[f"coverage/{name}_hi"] = _ci(draws, alpha) if math.isfinite(point) else (nan, nan)
    return out


def delta_se(base: Counts, arm: Counts, n: int, n_boot: int = 1000, alpha: float = 0.05,
             seed: int = 0) -> dict[str, float]:
    """Sampling-efficiency gap ΔSE = arm pass@1 − base pass@k_max (k_max = n), per question averaged over
    each side's runs, then over questions; with a paired bootstrap CI over questions. Negative: the base
    model, sampled n times, solves more than the arm does in one try.

    >>> delta_se({"q1": 4, "q2": 0}, {"q1": 2, "q2": 1}, n=4, n_boot=200)["coverage/delta_se"]  # 3/8 - 1/2
    -0.125
    """
    questions = shared_questions(base, arm)
    if not questions:
        return {"coverage/delta_se": math.nan, "coverage/delta_se_lo": math.nan, "coverage/delta_se_hi": math.nan}
    arm1 = pass_at_k_table(n, _matrix(arm, questions).ravel(), [1]).reshape(-1, len(questions)).mean(axis=0)
    basen = pass_at_k_table(n, _matrix(base, questions).ravel(), [n]).reshape(-1, len(questions)).mean(axis=0)
    diff = arm1 - basen
    idx = np.random.default_rng(seed).integers(0, len(questions), size=(n_boot, len(questions)))
    lo, hi = _ci(diff[idx].mean(axis=1), alpha)
    return {"coverage/delta_se": float(diff.mean()), "coverage/delta_se_lo": lo, "coverage/delta_se_hi": hi,
            "coverage/arm_pass@1": float(arm1.mean()), f"coverage/base_pass@{n}": float(basen.mean())}


def _crossings(base_curves: np.ndarray, arm_curves: np.ndarray, ks: list[int]) -> np.ndarray:
    """Row-wise `crossing_k` of (rows, K) curves: k, +inf (arm ahead at k=1, never caught) or NaN (not ahead)."""
    ahead = arm_curves[:, 0] > base_curves[:, 0]
    caught = base_curves >= arm_curves
    first = np.where(caught.any(axis=1), np.asarray(ks, dtype=np.float64)[caught.argmax(axis=1)], np.inf)
    return np.where(ahead, first, np.nan)


def crossing(base: Counts, arm: Counts, n: int, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """The base-vs-arm crossing of the mean pass@k curves on the ladder k = 1, 2, 4, ... n (`crossing_k`):
    ``passk/crossing_k`` (NaN: the arm is not ahead at k = 1, or the base never catches up, see
    ``passk/crossing_state``: 1 crossed, 0 arm ahead to k = n, -1 arm not ahead at k = 1), and
    ``passk/crossing_boot_share``: the share of bootstrap resamples of questions in which the curves cross
    (how robust the crossing is), with ``passk/crossing_k_lo``/``_hi`` over those resamples.

    >>> r = crossing({"q1": 4, "q2": 1}, {"q1": 4, "q2": 0}, n=4, n_boot=100)
    >>> r["passk/crossing_state"]  # the arm is behind at k = 1
    -1.0
    >>> crossing({"q1": 2, "q2": 1}, {"q1": 4, "q2": 0}, n=4, n_boot=100)["passk/crossing_k"]
    2.0
    """
    questions = shared_questions(base, arm)
    ks = k_ladder(n)
    out = {"passk/crossing_k": math.nan, "passk/crossing_state": math.nan, "passk/crossing_boot_share": math.nan,
           "passk/crossing_k_lo": math.nan, "passk/crossing_k_hi": math.nan}
    if not questions:
        return out
    q = len(questions)
    b = pass_at_k_table(n, _matrix(base, questions).ravel(), ks).reshape(-1, q, len(ks)).mean(axis=0)
    a = pass_at_k_table(n, _matrix(arm, questions).ravel(), ks).reshape(-1, q, len(ks)).mean(axis=0)
    mean_b, mean_a = b.mean(axis=0), a.mean(axis=0)
    k = crossing_k(dict(zip(ks, mean_b)), dict(zip(ks, mean_a)))
    ahead = mean_a[0] > mean_b[0]
    out["passk/crossing_k"] = float(k) if k is not None else math.nan
    out["passk/crossing_state"] = 1.0 if k is not None else (0.0 if ahead else -1.0)
    idx = np.random.default_rng(seed).integers(0, q, size=(n_boot, q))
    draws = _crossings(b[idx].mean(axis=1), a[idx].mean(axis=1), ks)
    crossed = draws[np.isfinite(draws)]
    out["passk/crossing_boot_share"] = float(crossed.size / n_boot)
    if crossed.size:
        out["passk/crossing_k_lo"], out["passk/crossing_k_hi"] = (float(x) for x in np.quantile(crossed, [0.025, 0.975]))
    return out


def compare_with_base(base: Counts, arm: Counts, n: int, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """Every base-vs-arm meter in one flat dict: `coverage`, `delta_se` and `crossing`.

    >>> sorted(compare_with_base({"q1": 1, "q2": 0}, {"q1": 2, "q2": 2}, n=2, n_boot=50))[:3]
    ['coverage/arm_pass@1', 'coverage/base_pass@2', 'coverage/both']
    """
    return (coverage(base, arm, n_boot=n_boot, seed=seed) | delta_se(base, arm, n, n_boot=n_boot, seed=seed)
            | crossing(base, arm, n, n_boot=n_boot, seed=seed))
