"""Power of the study's claim rules and the minimum detectable effect (check 2 of `searchgym.calibration`):
simulated studies as multinomial draws from each question's exact label distribution (strategy entropy) or
binomial draws from Beta-distributed success rates (pass@k).

Three rules are measured on the same simulated studies (`RULES`):

- ``report_rule``: the report's claim between two arms (`searchgym.report.rules.compare_arms`): the paired
  difference of per-question values, 95% CI by a two-level bootstrap (each arm's seeds, then questions
  shared by both arms) that must exclude 0 (`meters.claim_rules.paired_two_level_ci`). Its numbers are the
  un-suffixed keys (``mde``, ``false_positive``, ``mde_from_cis``) and, for `searchgym.calibration.run`,
  ``false_positive_seed_rule``;
- ``nonoverlap``: the report's fallback, two 95% CIs of the column that must not overlap (two-level CIs for
  strategy entropy, IQM over seeds for pass@k; the report's rule until 2026-12-07): ``mde_nonoverlap``,
  ``false_positive_nonoverlap``, ``mde_nonoverlap_from_cis``;
- ``paired``: the paired bootstrap over questions alone, seeds averaged first (`stats.paired_bootstrap`):
  ``mde_paired``, ``false_positive_paired``.
"""

from __future__ import annotations

import math
import random

import numpy as np

from searchgym.calibration.config import SHIFT_TOWARDS
from searchgym.calibration.mixtures import _label_matrix, sample_counts
from searchgym.meters.claim_rules import (
    nonoverlap,
    nonoverlap_mde_factor,
    paired_diff_ci,
    paired_rule_mde,
    paired_two_level_ci,
    question_ci,
    question_rule_mde,
    seed_ci,
    two_level_ci,
)
from searchgym.meters.count_estimators import entropy, jackknife_from_counts, pass_at_k_by_count


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
    """The report's seed rule (`report.data.seed_estimate`) on per-(seed, question) values (reps, seeds,
    questions): IQM over seed means with a stratified bootstrap when >= 2 seeds, else over questions."""
    _, lo, hi = seed_ci(values.mean(-1)) if values.shape[-2] >= 2 else question_ci(values[..., 0, :])
    return lo, hi


def two_level_rule_ci(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The report's strategy-entropy rule (`report.data.two_level_bootstrap_ci`) on (reps, seeds, questions)."""
    _, lo, hi = two_level_ci(values)
    return lo, hi


RULES = ("report_rule", "nonoverlap", "paired")  # see the module docstring
REPORT_RULE = ("paired difference of per-question values (each arm: mean over its seeds), 95% two-level "
               "bootstrap CI (seeds within each arm, then questions shared by both arms) excludes 0")


def _excludes_zero(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo > 0) | (hi < 0)


class _Rules:
    """Detection rates of the three claim rules (`RULES`) for one arm A against many candidate arms B, on the
    same simulated studies: the report's paired two-level rule, the non-overlap of the column's CIs
    (``ci``: the CI rule of the column) and the paired bootstrap over questions alone (seeds averaged)."""

    def __init__(self, a_values: np.ndarray, ci=seed_rule_ci):
        self.ci = ci
        self.a_values = a_values  # (reps, seeds, questions): the per-question meter of every seed
        self.a_per_q = a_values.mean(-2)  # (reps, questions): per-question meter, mean over seeds
        self.a_seed = a_values.mean(-1)  # (reps, seeds): the meter of each seed (mean over questions)
        self.lo_a, self.hi_a = ci(a_values)

    def claims(self, b_values: np.ndarray) -> dict[str, np.ndarray]:
        """Per study, whether each rule claims a difference between A and B."""
        lo_b, hi_b = self.ci(b_values)
        _, lo, hi = paired_two_level_ci(self.a_values, b_values)
        _, qlo, qhi = paired_diff_ci(self.a_per_q, b_values.mean(-2))
        return {"report_rule": _excludes_zero(lo, hi), "nonoverlap": nonoverlap(self.lo_a, self.hi_a, lo_b, hi_b),
                "paired": _excludes_zero(qlo, qhi)}

    def power(self, b_values: np.ndarray) -> tuple[float, ...]:
        """Detection rate of every rule, in the order of `RULES`."""
        claims = self.claims(b_values)
        return tuple(float(claims[r].mean()) for r in RULES)

    def mde_from_cis(self, b_values: np.ndarray) -> float:
        """Mean over studies of what the report states as the MDE of the non-overlap rule
        (`report.rules.detectable_difference`'s fallback): `question_rule_mde` with standard errors read off
        the two arms' 95% CIs."""
        lo_b, hi_b = self.ci(b_values)
        se_a, se_b = (self.hi_a - self.lo_a) / (2 * 1.959964), (hi_b - lo_b) / (2 * 1.959964)
        return float(np.mean([question_rule_mde(a, b) for a, b in zip(se_a, se_b, strict=True)]))

    def mde_from_paired_ci(self, b_values: np.ndarray) -> float:
        """Mean over studies of what the report states as the MDE of its paired rule
        (`report.rules.detectable_difference`): `paired_rule_mde` of the standard error read off the paired
        95% CI."""
        _, lo, hi = paired_two_level_ci(self.a_values, b_values)
        return float(np.mean(paired_rule_mde((hi - lo) / (2 * 1.959964))))


def _scan(power_at, max_delta: float, coarse: float = 0.05, fine: float = 0.01) -> tuple[dict[str, float], list]:
    """MDE of every rule (`RULES`) by scanning delta upwards: a coarse grid until each rule reaches the
    target power, then a fine grid inside the last coarse step. Returns ({rule: mde}, coarse curve); the
    curve's point at delta = 0 holds the false-positive rates."""
    cache: dict[float, tuple[float, ...]] = {}

    def at(delta: float) -> tuple[float, ...]:
        key = round(delta, 9)
        if key not in cache:
            cache[key] = power_at(delta)
        return cache[key]

    curve = []
    found: dict[str, float | None] = dict.fromkeys(RULES)
    delta = 0.0
    while delta <= max_delta + 1e-9 and None in found.values():
        p = at(delta)
        curve.append({"delta": round(delta, 4), **{f"power_{r}": p[i] for i, r in enumerate(RULES)}})
        for i, r in enumerate(RULES):
            if found[r] is None and p[i] >= 0.8:
                found[r] = delta
        delta += coarse
    mdes = {}
    for i, r in enumerate(RULES):
        if found[r] is None:
            mdes[r] = math.nan
            continue
        lo = max(0.0, found[r] - coarse)
        grid = [lo + fine * j for j in range(1, round(coarse / fine))] if found[r] > 0 else []
        mdes[r] = round(min([d for d in grid if at(d)[i] >= 0.8] + [found[r]]), 4)
    return mdes, curve


def _rule_keys(mdes: dict[str, float], curve: list) -> dict:
    """The MDE and false-positive keys of every rule (module docstring)."""
    fp = {r: curve[0][f"power_{r}"] for r in RULES}
    return {"rule": REPORT_RULE, "mde": mdes["report_rule"], "false_positive": fp["report_rule"],
            "false_positive_seed_rule": fp["report_rule"],  # the key run.py pairs with "mde": the report's rule
            "mde_nonoverlap": mdes["nonoverlap"], "false_positive_nonoverlap": fp["nonoverlap"],
            "mde_paired": mdes["paired"], "false_positive_paired": fp["paired"]}


def entropy_power(tasks, base, table, styles, questions: int, samples: int, seeds: int, reps: int,
                  seed: int = 0) -> dict:
    """Power of the report's rule (jackknife per question; the paired difference of the two arms'
    per-question values, two-level bootstrap CI that must exclude 0), of its fallback (two-level bootstrap
    CIs that must not overlap) and of the paired bootstrap over questions alone, to detect a drop delta in
    strategy entropy: arm A = the base mixture, arm B = the base shifted towards `SHIFT_TOWARDS` until its
    true entropy is delta lower; both arms on the same ``questions`` held-out questions (as in a study) at
    n = ``samples``. Keys: `RULES` in the module docstring; ``mde_from_cis`` / ``mde_nonoverlap_from_cis``
    are what the report would state from one study (mean over studies at that rule's MDE),
    ``mde_from_seed_sd`` the seed-spread formula of the other columns' fallback, for comparison."""
    qs = _questions(tasks, questions, seed)
    lambdas, deltas = shift_curve(qs, base, table, styles)
    rng = np.random.default_rng(seed)
    shape = (reps, seeds, len(qs), samples)
    u_a, u_b = rng.random(shape), rng.random(shape)  # arm B's draws are shared by every delta

    def arm(weights, uniforms) -> np.ndarray:
        probs, _ = _label_matrix(qs, weights, table, styles)
        return jackknife_from_counts(sample_counts(probs, samples, uniforms))  # (reps, seeds, questions)

    rules = _Rules(arm(base, u_a), two_level_rule_ci)

    def b_at(delta: float) -> np.ndarray | None:
        lam = _lambda_for(delta, lambdas, deltas) if math.isfinite(delta) else None
        return None if lam is None else arm(_shifted(base, lam), u_b)

    def power_at(delta: float) -> tuple[float, ...]:
        b_values = b_at(delta)
        return (math.nan,) * len(RULES) if b_values is None else rules.power(b_values)

    mdes, curve = _scan(power_at, float(deltas.max()))
    out = _rule_keys(mdes, curve)
    b_values = b_at(mdes["report_rule"])
    out["mde_from_cis"] = rules.mde_from_paired_ci(b_values) if b_values is not None else math.nan
    sd = from_cis = math.nan  # the seed-to-seed sd of both arms at the non-overlap MDE, pooled; its statement
    b_values = b_at(mdes["nonoverlap"])
    if b_values is not None:
        from_cis = rules.mde_from_cis(b_values)
        if seeds >= 2:
            sd = math.sqrt(float(np.mean([np.var(rules.a_seed, axis=-1, ddof=1),
                                          np.var(b_values.mean(-1), axis=-1, ddof=1)])))
    return {"questions": questions, "samples": samples, "seeds": seeds, "episodes_per_arm": questions * samples * seeds,
            **out, "mde_nonoverlap_from_cis": from_cis, "base_entropy": float(
                np.mean([entropy(r) for r in _label_matrix(qs, base, table, styles)[0]])),
            "seed_sd": sd, "mde_from_seed_sd": sd * nonoverlap_mde_factor(seeds, seeds) if seeds >= 2 else math.nan,
            "curve": curve}


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def passk_power(questions: int, samples: int, seeds: int, reps: int, k: int, rate: float, concentration: float,
                seed: int = 0) -> dict:
    """Power of the three rules (`RULES`; the fallback here: IQM over seeds, stratified-bootstrap CIs that
    must not overlap) for a rise delta in pass@k (k <= n = ``samples``). Per-question success
    probabilities p ~ Beta(c r, c (1 - r)) (``rate`` r, ``concentration`` c), fixed within a study; arm B
    raises every question's p on the logit scale by theta, chosen so the mean true pass@k
    (1 - (1 - p)^k, averaged over questions) rises by delta. Correct counts are binomial at n."""
    rng = np.random.default_rng(seed)
    a, b = concentration * rate, concentration * (1 - rate)
    p = np.clip(rng.beta(a, b, size=(reps, questions)), 1e-6, 1 - 1e-6)
    logit = np.log(p) - np.log1p(-p)
    table = pass_at_k_by_count(samples, k)
    u_a, u_b = rng.random((reps, seeds, questions, samples)), rng.random((reps, seeds, questions, samples))

    def arm(probs, u) -> np.ndarray:
        c = (u < probs[:, None, :, None]).sum(-1)  # (reps, seeds, questions) correct counts
        return table[c]

    def true_passk(probs) -> float:
        return float((1 - (1 - probs) ** k).mean())

    base_true = true_passk(p)
    thetas = np.linspace(0.0, 8.0, 321)
    deltas = np.array([true_passk(_expit(logit + th)) - base_true for th in thetas])
    rules = _Rules(arm(p, u_a))  # the fallback of pass@k columns: the seed rule

    def b_at(delta: float) -> np.ndarray | None:
        theta = _lambda_for(delta, thetas, deltas) if math.isfinite(delta) else None
        return None if theta is None else arm(_expit(logit + theta), u_b)

    def power_at(delta: float) -> tuple[float, ...]:
        b_values = b_at(delta)
        return (math.nan,) * len(RULES) if b_values is None else rules.power(b_values)

    mdes, curve = _scan(power_at, float(deltas.max()))
    b_values = b_at(mdes["report_rule"])
    return {"k": k, "questions": questions, "samples": samples, "seeds": seeds, "base_rate": rate,
            "concentration": concentration, "base_true": base_true, **_rule_keys(mdes, curve),
            "mde_from_cis": rules.mde_from_paired_ci(b_values) if b_values is not None else math.nan,
            "curve": curve}
