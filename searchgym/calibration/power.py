"""Power of the study's claim rules and the minimum detectable effect (check 2 of `searchgym.calibration`):
simulated studies as multinomial draws from each question's exact label distribution (strategy entropy) or
binomial draws from Beta-distributed success rates (pass@k)."""

from __future__ import annotations

import math
import random

import numpy as np

from searchgym.calibration.config import SHIFT_TOWARDS
from searchgym.calibration.mixtures import _label_matrix, sample_counts
from searchgym.meters.calibration import (
    entropy,
    jackknife_from_counts,
    nonoverlap,
    nonoverlap_mde_factor,
    paired_diff_ci,
    pass_at_k_table,
    question_ci,
    question_rule_mde,
    seed_ci,
    two_level_ci,
)


def _questions(tasks, count: int, seed: int) -> list:
    """The first ``count`` tasks (as a study takes them); beyond the pool, more drawn from it again."""
    if count <= len(tasks):
        return list(tasks[:count])
    return list(tasks) + random.Random(f"questions:{seed}").choices(list(tasks), k=count - len(tasks))


def _shifted(base: dict[str, float], lam: float) -> dict[str, float]:
    """The mixture (1 - lam) base + lam e_{`SHIFT_TOWARDS`} (base normalised first).

    >>> _shifted({"forward": 1.0, "verify": 3.0}, 0.5)
    {'forward': 0.625, 'verify': 0.375}
    """
    total = sum(base.values())
    w = {s: (1 - lam) * v / total for s, v in base.items()}
    w[SHIFT_TOWARDS] = w.get(SHIFT_TOWARDS, 0.0) + lam
    return w


def shift_curve(tasks, base: dict[str, float], table, styles, points: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """True strategy entropy drop delta(lambda) = H(base) - H((1 - lambda) base + lambda e_forward) on a
    grid of lambda (labelled truth, mean over questions); returns (lambdas, deltas)."""
    lambdas = np.linspace(0.0, 1.0, points)
    h = []
    for lam in lambdas:
        probs, _ = _label_matrix(tasks, _shifted(base, lam), table, styles)
        h.append(float(np.mean([entropy(row) for row in probs])))
    h = np.array(h)
    return lambdas, h[0] - h


def _lambda_for(delta: float, lambdas: np.ndarray, deltas: np.ndarray) -> float | None:
    """The smallest lambda whose true drop reaches ``delta`` (linear between grid points)."""
    above = np.nonzero(deltas >= delta)[0]
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(lambdas[0])
    d0, d1 = deltas[i - 1], deltas[i]
    return float(lambdas[i - 1] + (lambdas[i] - lambdas[i - 1]) * (delta - d0) / max(d1 - d0, 1e-12))


def seed_rule_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The report's seed rule (`report.data._seed_estimate`) on per-(seed, question) values (reps, seeds,
    questions): IQM over seed means with a stratified bootstrap when >= 2 seeds, else over questions."""
    _, lo, hi = seed_ci(values.mean(-1)) if values.shape[-2] >= 2 else question_ci(values[..., 0, :])
    return lo, hi


def two_level_rule_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The report's strategy-entropy rule (`report.data.two_level_bootstrap_ci`) on (reps, seeds, questions)."""
    _, lo, hi = two_level_ci(values)
    return lo, hi


class _Rules:
    """Detection rates of both claim rules for one arm A against many candidate arms B: the report's CI rule
    of the column (``ci``: non-overlapping CIs) and the paired bootstrap over questions (seeds averaged)."""

    def __init__(self, a_values: np.ndarray, ci=seed_rule_ci):
        self.ci = ci
        self.a_values = a_values  # (reps, seeds, questions): the per-question meter of every seed
        self.a_per_q = a_values.mean(-2)  # (reps, questions): per-question meter, mean over seeds
        self.a_seed = a_values.mean(-1)  # (reps, seeds): the meter of each seed (mean over questions)
        self.lo_a, self.hi_a = ci(a_values)

    def power(self, b_values: np.ndarray) -> tuple[float, float]:
        lo_b, hi_b = self.ci(b_values)
        _, lo, hi = paired_diff_ci(self.a_per_q, b_values.mean(-2))
        return float(nonoverlap(self.lo_a, self.hi_a, lo_b, hi_b).mean()), float(((lo > 0) | (hi < 0)).mean())

    def mde_from_cis(self, b_values: np.ndarray) -> float:
        """Mean over studies of what the report states as the MDE (`report.rules.detectable_difference`):
        `question_rule_mde` with standard errors read off the two arms' 95% CIs."""
        lo_b, hi_b = self.ci(b_values)
        se_a, se_b = (self.hi_a - self.lo_a) / (2 * 1.959964), (hi_b - lo_b) / (2 * 1.959964)
        return float(np.mean([question_rule_mde(a, b) for a, b in zip(se_a, se_b, strict=True)]))


def _scan(power_at, max_delta: float, coarse: float = 0.05, fine: float = 0.01) -> tuple[float, float, list]:
    """MDE of both rules by scanning delta upwards: a coarse grid until each rule reaches the target power,
    then a fine grid inside the last coarse step. Returns (mde_seed_rule, mde_paired, coarse curve)."""
    curve = []
    found: list[float | None] = [None, None]
    delta = 0.0
    while delta <= max_delta + 1e-9 and None in found:
        p = power_at(delta)
        curve.append({"delta": round(delta, 4), "power_seed_rule": p[0], "power_paired": p[1]})
        for r in range(2):
            if found[r] is None and p[r] >= 0.8:
                found[r] = delta
        delta += coarse
    mdes = []
    for r in range(2):
        if found[r] is None:
            mdes.append(math.nan)
            continue
        lo = max(0.0, found[r] - coarse)
        grid = [lo + fine * i for i in range(1, round(coarse / fine))] if found[r] > 0 else []
        fine_power = [power_at(d)[r] for d in grid]
        mdes.append(min([d for d, p in zip(grid, fine_power) if p >= 0.8] + [found[r]]))
    return round(mdes[0], 4), round(mdes[1], 4), curve


def entropy_power(tasks, base, table, styles, questions: int, samples: int, seeds: int, reps: int,
                  seed: int = 0) -> dict:
    """Power of the report's rule (jackknife per question, two-level bootstrap CIs that must not overlap) and
    of the paired bootstrap to detect a drop delta in strategy entropy, arm A = the base mixture, arm B = the
    base shifted towards `SHIFT_TOWARDS` until its true entropy is delta lower; both arms on the same
    ``questions`` held-out questions (as in a study) at n = ``samples``. ``mde_from_cis`` is what the report
    would state from one study's CIs (mean over studies), ``mde_from_seed_sd`` the seed-spread formula of
    the other columns' rule, for comparison."""
    qs = _questions(tasks, questions, seed)
    lambdas, deltas = shift_curve(qs, base, table, styles)
    rng = np.random.default_rng(seed)
    shape = (reps, seeds, len(qs), samples)
    u_a, u_b = rng.random(shape), rng.random(shape)  # arm B's draws are shared by every delta

    def arm(weights, uniforms) -> np.ndarray:
        probs, _ = _label_matrix(qs, weights, table, styles)
        return jackknife_from_counts(sample_counts(probs, samples, uniforms))  # (reps, seeds, questions)

    rules = _Rules(arm(base, u_a), two_level_rule_ci)

    def power_at(delta: float) -> tuple[float, float]:
        lam = _lambda_for(delta, lambdas, deltas)
        if lam is None:
            return math.nan, math.nan
        return rules.power(arm(_shifted(base, lam), u_b))

    mde, mde_paired, curve = _scan(power_at, float(deltas.max()))
    sd = from_cis = math.nan  # the seed-to-seed sd of both arms at the MDE, pooled; the report's own MDE
    lam = _lambda_for(mde, lambdas, deltas) if math.isfinite(mde) else None
    if lam is not None:
        b_values = arm(_shifted(base, lam), u_b)
        from_cis = rules.mde_from_cis(b_values)
        if seeds >= 2:
            sd = math.sqrt(float(np.mean([np.var(rules.a_seed, axis=-1, ddof=1),
                                          np.var(b_values.mean(-1), axis=-1, ddof=1)])))
    return {"questions": questions, "samples": samples, "seeds": seeds, "episodes_per_arm": questions * samples * seeds,
            "mde": mde, "mde_paired": mde_paired, "false_positive_seed_rule": curve[0]["power_seed_rule"],
            "false_positive_paired": curve[0]["power_paired"], "base_entropy": float(
                np.mean([entropy(r) for r in _label_matrix(qs, base, table, styles)[0]])),
            "seed_sd": sd, "mde_from_seed_sd": sd * nonoverlap_mde_factor(seeds, seeds) if seeds >= 2 else math.nan,
            "mde_from_cis": from_cis, "curve": curve}


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def passk_power(questions: int, samples: int, seeds: int, reps: int, k: int, rate: float, concentration: float,
                seed: int = 0) -> dict:
    """Power of both rules for a rise delta in pass@k (k <= n = ``samples``). Per-question success
    probabilities p ~ Beta(c r, c (1 - r)) (``rate`` r, ``concentration`` c), fixed within a study; arm B
    raises every question's p on the logit scale by theta, chosen so the mean true pass@k
    (1 - (1 - p)^k, averaged over questions) rises by delta. Correct counts are binomial at n."""
    rng = np.random.default_rng(seed)
    a, b = concentration * rate, concentration * (1 - rate)
    p = np.clip(rng.beta(a, b, size=(reps, questions)), 1e-6, 1 - 1e-6)
    logit = np.log(p) - np.log1p(-p)
    table = pass_at_k_table(samples, k)
    u_a, u_b = rng.random((reps, seeds, questions, samples)), rng.random((reps, seeds, questions, samples))

    def arm(probs, u) -> np.ndarray:
        c = (u < probs[:, None, :, None]).sum(-1)  # (reps, seeds, questions) correct counts
        return table[c]

    def true_passk(probs) -> float:
        return float((1 - (1 - probs) ** k).mean())

    base_true = true_passk(p)
    thetas = np.linspace(0.0, 8.0, 321)
    deltas = np.array([true_passk(_expit(logit + th)) - base_true for th in thetas])
    rules = _Rules(arm(p, u_a))  # pass@k columns keep the seed rule

    def power_at(delta: float) -> tuple[float, float]:
        theta = _lambda_for(delta, thetas, deltas)
        if theta is None:
            return math.nan, math.nan
        return rules.power(arm(_expit(logit + theta), u_b))

    mde, mde_paired, curve = _scan(power_at, float(deltas.max()))
    return {"k": k, "questions": questions, "samples": samples, "seeds": seeds, "base_rate": rate,
            "concentration": concentration, "base_true": base_true, "mde": mde, "mde_paired": mde_paired,
            "false_positive_seed_rule": curve[0]["power_seed_rule"], "false_positive_paired": curve[0]["power_paired"],
            "curve": curve}
