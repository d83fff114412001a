"""Single-run measurements from the literature, beside searchgym's own meters (docs/meters.md):

- the entropy–reward law R = −a·exp(H) + b over a run's probes (Cui et al. 2025), with its predicted
  ceiling b − a and a held-out-tail check;
- template collapse (RAGEN-2): can a trajectory's own question be retrieved from its text among the
  batch's questions? Accuracy against chance 1/B, beside within-input entropy;
- depth adaptivity: rank correlation of tool calls per episode with question hops, CI over questions.

Pure functions over numbers and strings; `searchgym.meters.aggregate` wires the last two into every
meter run, the report fits the first on each run's ``metrics.jsonl``.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from searchgym.meters.stats import bootstrap_correlation

# (entropy key, reward key) pairs a run's metrics rows may carry, in order of preference: the live probes'
# held-out success (what Cui et al. fit: accuracy against policy entropy), their mean reward, then what
# the GRPO trainer logs on its own rollouts (for runs without probes).
ENTROPY_REWARD_KEYS = (("entropy/token", "reward/success"), ("entropy/token", "reward/mean"),
                       ("train/entropy", "train/reward"))

# ---- 1. the entropy–reward law ----------------------------------------------------------------------


def _linear_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least squares y = slope·x + intercept; NaNs with fewer than 2 distinct x."""
    if x.size < 2 or np.ptp(x) <= 1e-12 * max(1.0, float(np.abs(x).max())):
        return math.nan, math.nan
    xc = x - x.mean()
    slope = float((xc * (y - y.mean())).sum() / (xc * xc).sum())
    return slope, float(y.mean() - slope * x.mean())


def fit_entropy_reward(entropy: Sequence[float], reward: Sequence[float]) -> dict[str, float]:
    """Fit R = −a·exp(H) + b (Cui et al. 2025) by least squares in x = exp(H), where it is linear:
    slope = Cov(x, R) / Var(x), a = −slope, b = mean(R) + a·mean(x). Points in the order given
    (chronological: checkpoints or probes of one run); non-finite pairs are dropped.

    Returns ``fit/entropy_reward_a``, ``_b``, ``_ceiling`` (b − a: the reward predicted at H = 0, i.e. once
    entropy is spent), ``_r2`` (1 − SS_res/SS_tot over all points), ``_points``, and the held-out-tail
    check: fitted on the first half (⌊m/2⌋ points) only, ``_tail_mae`` is the mean absolute error on the
    second half and ``_tail_mae_flat`` that of predicting the first half's mean reward (the law is worth
    something where tail_mae < tail_mae_flat). NaN where there are too few points (2 to fit, 4 for the tail).

    >>> h = [2.0, 1.5, 1.0, 0.7, 0.5, 0.3]
    >>> fit = fit_entropy_reward(h, [-0.05 * math.exp(x) + 0.9 for x in h])
    >>> round(fit["fit/entropy_reward_a"], 6), round(fit["fit/entropy_reward_ceiling"], 6), fit["fit/entropy_reward_r2"]
    (0.05, 0.85, 1.0)
    """
    h, r = np.asarray(entropy, dtype=np.float64), np.asarray(reward, dtype=np.float64)
    keep = np.isfinite(h) & np.isfinite(r)
    h, r = h[keep], r[keep]
    x = np.exp(h)
    slope, intercept = _linear_fit(x, r)
    a, b = -slope, intercept
    nan = math.nan
    r2 = nan
    if math.isfinite(a):
        ss_tot = float(((r - r.mean()) ** 2).sum())
        ss_res = float(((r - (b - a * x)) ** 2).sum())
        r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else nan
    half = x.size // 2
    tail, flat = nan, nan
    if half >= 2:
        s1, i1 = _linear_fit(x[:half], r[:half])
        if math.isfinite(s1):
            tail = float(np.abs(r[half:] - (s1 * x[half:] + i1)).mean())
            flat = float(np.abs(r[half:] - r[:half].mean()).mean())
    return {"fit/entropy_reward_a": a, "fit/entropy_reward_b": b, "fit/entropy_reward_ceiling": b - a,
            "fit/entropy_reward_r2": r2, "fit/entropy_reward_points": float(x.size),
            "fit/entropy_reward_tail_mae": tail, "fit/entropy_reward_tail_mae_flat": flat}


def entropy_reward_points(rows: Sequence[Mapping]) -> tuple[list[float], list[float], tuple[str, str] | None]:
    """(entropy, reward, (entropy key, reward key)) from a run's ``metrics.jsonl`` rows, in file order: the
    first pair of `ENTROPY_REWARD_KEYS` that some row carries with both values finite (a live probe row
    has ``entropy/token`` and ``reward/success``; GRPO's own rows ``train/entropy`` and ``train/reward``).

    >>> rows = [{"step": 1, "train/loss": 2.0}, {"step": 2, "entropy/token": 1.0, "reward/success": 0.1},
    ...         {"step": 3, "entropy/token": 0.5, "reward/success": 0.3, "reward/mean": 0.2}]
    >>> entropy_reward_points(rows)
    ([1.0, 0.5], [0.1, 0.3], ('entropy/token', 'reward/success'))
    """
    def finite(v) -> bool:
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    for hk, rk in ENTROPY_REWARD_KEYS:
        pts = [(float(row[hk]), float(row[rk])) for row in rows if finite(row.get(hk)) and finite(row.get(rk))]
        if pts:
            return [p[0] for p in pts], [p[1] for p in pts], (hk, rk)
    return [], [], None


# ---- 2. template collapse: is a trajectory's question identifiable from it? ------------------------

def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def question_retrieval_credit(texts: Sequence[str], own: Sequence[str], questions: Mapping[str, str]) -> np.ndarray:
    """Per trajectory, the chance of retrieving its own question among ``questions`` ({id: text}, the batch)
    from its text by TF-IDF: score(t, q) = Σ_w tf_t(w)·idf(w)·v_q(w), v_q the L2-normalised tf-idf
    vector of question q, idf(w) = ln((1 + B)/(1 + df(w))) + 1 over the B questions (the trajectory's own
    norm is the same for every q, so this ranks like the cosine). Credit = 1/|argmax set| when its own
    question is among the best-scoring ones, else 0: a tie is broken at random, so a text sharing no word
    with any question scores chance, 1/B.

    >>> qs = {"a": "who founded acme", "b": "where is the river tessa"}
    >>> question_retrieval_credit(["search acme founder", "search tessa", "answer yes"], ["a", "a", "b"], qs).tolist()
    [1.0, 0.0, 0.5]
    """
    ids = list(questions)
    if not ids:
        raise ValueError("no questions to retrieve from")
    q_tokens = [Counter(_tokens(questions[q])) for q in ids]
    vocab = sorted({w for c in q_tokens for w in c})
    col = {w: j for j, w in enumerate(vocab)}
    df = np.zeros(len(vocab))
    for c in q_tokens:
        for w in c:
            df[col[w]] += 1
    idf = np.log((1 + len(ids)) / (1 + df)) + 1.0
    qmat = np.zeros((len(ids), len(vocab)))
    for i, c in enumerate(q_tokens):
        for w, m in c.items():
            qmat[i, col[w]] = m * idf[col[w]]
    norms = np.linalg.norm(qmat, axis=1, keepdims=True)
    qmat = np.divide(qmat, norms, out=np.zeros_like(qmat), where=norms > 0)
    row = {q: i for i, q in enumerate(ids)}
    credit = np.empty(len(texts))
    for t, (text, q) in enumerate(zip(texts, own)):
        vec = np.zeros(len(vocab))
        for w, m in Counter(_tokens(text)).items():
            if w in col:
                vec[col[w]] += m * idf[col[w]]
        scores = qmat @ vec
        best = np.isclose(scores, scores.max(), rtol=1e-9, atol=1e-12)
        credit[t] = best[row[q]] / best.sum()
    return credit


def cross_input_accuracy(texts: Sequence[str], own: Sequence[str], questions: Mapping[str, str]) -> dict[str, float]:
    """Template-collapse score of a batch: ``diversity/cross_input`` = mean `question_retrieval_credit`
    (accuracy of retrieving the right question from a trajectory), ``diversity/cross_input_chance`` = 1/B,
    ``diversity/cross_input_lift`` = (accuracy − chance)/(1 − chance): 1 when every trajectory identifies
    its question, 0 when trajectories look alike across inputs (template collapse), whatever their
    diversity within one input. NaN with fewer than 2 questions.

    >>> r = cross_input_accuracy(["acme", "tessa", "acme"], ["a", "b", "b"], {"a": "acme?", "b": "tessa?"})
    >>> round(r["diversity/cross_input"], 4), r["diversity/cross_input_chance"], round(r["diversity/cross_input_lift"], 4)
    (0.6667, 0.5, 0.3333)
    """
    if len(questions) < 2 or not len(texts):
        return {"diversity/cross_input": math.nan, "diversity/cross_input_chance": math.nan,
                "diversity/cross_input_lift": math.nan}
    acc = float(question_retrieval_credit(texts, own, questions).mean())
    chance = 1.0 / len(questions)
    return {"diversity/cross_input": acc, "diversity/cross_input_chance": chance,
            "diversity/cross_input_lift": (acc - chance) / (1.0 - chance)}


# ---- 3. depth adaptivity ----------------------------------------------------------------------------

def depth_adaptivity(calls: Sequence[float], hops: Sequence[float], n_boot: int = 1000,
                     seed: int = 0) -> dict[str, float]:
    """Does search depth follow question depth? Spearman's rho between tool calls per episode and question
    hops (``difficulty``), with a percentile bootstrap CI resampling the pairs. Pass one pair per question
    (its n episodes' mean calls, its hops) for a bootstrap over questions. rho > 0: harder questions get
    more calls; ≈ 0: one search budget for every question. NaN when all hops (or calls) are equal.

    >>> r = depth_adaptivity([1.0, 1.5, 2.0, 3.5, 4.0, 4.5], [1, 1, 2, 2, 3, 4], n_boot=200)
    >>> round(r["search/depth_adaptivity"], 3), r["search/depth_adaptivity_lo"] > 0.5
    (0.971, True)
    """
    rho, lo, hi = bootstrap_correlation(calls, hops, "spearman", n_boot=n_boot, seed=seed)
    return {"search/depth_adaptivity": rho, "search/depth_adaptivity_lo": lo, "search/depth_adaptivity_hi": hi}
