"""Recovery: the scripted demonstrators' labels, the exact truths of a mixture of them, the mixture played as an
agent through the real env and metered by the report's code, the CI coverage of the truth over simulated
studies, and the comparison of candidate estimators x intervals that chose the report's rule (check 1 of
`searchgym.calibration`)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from searchgym.calibration.config import BIAS_AT_N, COVERAGE_TARGET, SHIFT_TOWARDS, StudySetup
from searchgym.meters.claim_rules import candidate_intervals, question_ci, seed_ci, two_level_ci
from searchgym.meters.count_estimators import (
    ESTIMATORS,
    entropy,
    entropy_from_counts,
    estimates_from_counts,
    expected_estimates,
    jackknife_from_counts,
)

REPORT_ESTIMATOR, REPORT_INTERVAL = "jackknife", "two-level bootstrap"  # `report.data.STRATEGY_KEY`'s rule

# ---- the env and every demonstrator's label ------------------------------------------------------------

def make_env(setup: StudySetup):
    import gymnasium

    import searchgym  # noqa: F401  (registers the env ids)

    return gymnasium.make(setup.env_id, disable_env_checker=True, **{**setup.env_kwargs, "split": setup.split})


def label_table(env, tasks, *, progress: bool = True) -> dict[str, dict[tuple[str, str], str]]:
    """Play every (strategy, query style) demonstrator once on every task; the classifier's label of each
    episode. Demonstrators and the env are deterministic, so this is each episode's label for good."""
    from tqdm.auto import tqdm

    from searchgym.envs.scripted_play import play

    world = env.unwrapped.taskset
    pairs = [(s, st) for s in world.strategies for st in world.query_styles]
    table: dict[str, dict[tuple[str, str], str]] = {}
    with tqdm(total=len(tasks) * len(pairs), desc="demonstrator labels", unit="episode",
              disable=not progress) as bar:
        for task in tasks:
            table[task.id] = {}
            for strategy, style in pairs:
                table[task.id][(strategy, style)] = play(env, world.demonstrator(strategy, style),
                                                         task_id=task.id).strategy or "other"
                bar.update()
    return table


def label_distribution(task, weights: dict[str, float], labels: dict[tuple[str, str], str],
                       styles: Sequence[str]) -> dict[str, float]:
    """P(label) on one task for a mixture: strategy by `task_distribution`, query style uniform, label by
    the classifier's verdict on that (strategy, style) episode.

    >>> from types import SimpleNamespace as T
    >>> labels = {("forward", "a"): "forward", ("forward", "b"): "forward", ("verify", "a"): "verify",
    ...           ("verify", "b"): "forward"}  # the verify script reads as forward in style b
    >>> label_distribution(T(strategies=("forward", "verify")), {"forward": 0.5, "verify": 0.5}, labels, "ab")
    {'forward': 0.75, 'verify': 0.25}
    """
    from searchgym.train.pretrain import task_distribution

    out: Counter = Counter()
    for strategy, w in task_distribution(weights, task.strategies).items():
        for style in styles:
            out[labels[(strategy, style)]] += w / len(styles)
    return {k: out[k] for k in sorted(out)}


def mixture_truth(tasks, weights: dict[str, float], table, styles: Sequence[str], n: int) -> dict:
    """Exact truths of a mixture on a question set: the true strategy entropy (mean over questions of the
    renormalised mixture's entropy), the same for the labels the classifier gives (label fidelity in), the
    expectations of the plug-in, Miller–Madow and jackknife meters (and every candidate estimator) at n,
    true shares and the expected label fidelity."""
    from searchgym.train.pretrain import task_distribution

    rows = []
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        if not dist:
            continue
        labelled = label_distribution(t, weights, table[t.id], styles)
        expected = expected_estimates(labelled, n)
        fidelity = sum(w / len(styles) for s, w in dist.items() for st in styles if table[t.id][(s, st)] == s)
        bias = {m: expected_estimates(labelled, m) for m in BIAS_AT_N}
        bias = {m: {k: v - entropy(dist) for k, v in e.items()} for m, e in bias.items()}
        rows.append((entropy(dist), entropy(labelled), expected["plug-in"], expected["MM"], dist, labelled, fidelity,
                     bias, expected))
    if not rows:
        raise ValueError(f"mixture {weights} has no valid strategy on any of the {len(tasks)} questions")
    shares: Counter = Counter()
    label_shares: Counter = Counter()
    for *_, dist, labelled, _, _, _ in rows:
        shares.update(dist)
        label_shares.update(labelled)
    q = len(rows)
    return {"true_entropy": float(np.mean([r[0] for r in rows])),
            "labelled_entropy": float(np.mean([r[1] for r in rows])),
            "expected_plugin": float(np.mean([r[2] for r in rows])),
            "expected_mm": float(np.mean([r[3] for r in rows])),
            "expected_jk": float(np.mean([r[8][REPORT_ESTIMATOR] for r in rows])),
            "expected_estimates": {k: float(np.mean([r[8][k] for r in rows])) for k in ESTIMATORS},
            "true_shares": {k: shares[k] / q for k in sorted(shares)},
            "expected_label_shares": {k: label_shares[k] / q for k in sorted(label_shares)},
            "expected_label_fidelity": float(np.mean([r[6] for r in rows])),
            "bias_mm_by_n": {str(m): float(np.mean([r[7][m]["MM"] for r in rows])) for m in BIAS_AT_N},
            "bias_jk_by_n": {str(m): float(np.mean([r[7][m][REPORT_ESTIMATOR] for r in rows])) for m in BIAS_AT_N},
            "questions_with_support": q}


# ---- recovery: mixtures played through the env and metered by the report's code ------------------

def play_mixture(env, tasks, weights: dict[str, float], samples: int, rng: random.Random) -> list:
    """The mixture as an agent: each episode draws its strategy from the question's renormalised mixture
    and its query style uniformly, and plays that demonstrator through the env."""
    from searchgym.envs.scripted_play import play
    from searchgym.train.pretrain import task_distribution

    world = env.unwrapped.taskset
    out = []
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        if not dist:
            continue
        for i in range(samples):
            strategy = rng.choices(list(dist), weights=list(dist.values()))[0]
            style = rng.choice(world.query_styles)
            out.append(play(env, world.demonstrator(strategy, style), task_id=t.id, sample=i))
    return out


def recover_mixture(env, tasks, name: str, weights: dict[str, float], table, samples: int, seeds: int,
                    coverage_reps: int, seed: int = 0) -> dict:
    """One mixture at the study's sizes: played and metered per seed, summarised by the report's own code
    (`report.data.key_estimate` of the strategy-entropy column: jackknife, two-level bootstrap CI) against
    the exact truth; coverage of the truth by that CI over ``coverage_reps`` simulated studies. The
    ``*_mm`` keys are the previous rule's (Miller–Madow, IQM over seeds, stratified bootstrap), for
    comparison."""
    from searchgym.meters.aggregate import average, per_question
    from searchgym.report.data import STRATEGY_KEY, key_estimate, seed_estimate

    styles = env.unwrapped.taskset.query_styles
    truth = mixture_truth(tasks, weights, table, styles, samples)
    start = time.perf_counter()
    plugin, mm, per_q_mm, per_q_plugin, played, metered, per_qs = [], [], [], [], [], [], []
    for s in range(seeds):
        trajectories = play_mixture(env, tasks, weights, samples, random.Random(f"calibrate:{seed}:{name}:{s}"))
        meters, difficulty, _ = per_question(trajectories, samples=samples)
        avg = average(meters, difficulty, samples)
        metered.append(avg)
        per_qs.append(meters)
        plugin.append(avg["diversity/strategy_entropy"])
        mm.append(avg["diversity/strategy_entropy_mm"])
        per_q_mm.append([m["diversity/strategy_entropy_mm"] for m in meters.values()])
        per_q_plugin.append([m["diversity/strategy_entropy"] for m in meters.values()])
        played += trajectories
    est = key_estimate(metered, per_qs, set(per_qs[0]), STRATEGY_KEY)  # the report's column, as it shows it
    est_mm = seed_estimate(mm, np.mean(per_q_mm, axis=0).tolist())  # the previous rule
    est_plugin = seed_estimate(plugin, np.mean(per_q_plugin, axis=0).tolist())
    counts = Counter(t.strategy or "other" for t in played)
    fidelity = sum(t.strategy == t.meta.get("demo_strategy") for t in played) / len(played)
    coverage = coverage_expected = coverage_mm = coverage_expected_mm = math.nan
    if coverage_reps:
        coverage, coverage_expected = simulated_coverage(
            tasks, weights, table, styles, samples, seeds, coverage_reps,
            [truth["true_entropy"], truth["expected_jk"]], seed)
        coverage_mm, coverage_expected_mm = simulated_coverage(
            tasks, weights, table, styles, samples, seeds, coverage_reps,
            [truth["true_entropy"], truth["expected_mm"]], seed, rule="previous")
    return {"name": name, "weights": weights, **truth, "estimator": REPORT_ESTIMATOR,
            "measured": est.value, "ci": [est.lo, est.hi], "ci_method": est.method,
            "error": est.value - truth["true_entropy"], "bias": truth["expected_jk"] - truth["true_entropy"],
            "ci_covers_truth": est.lo <= truth["true_entropy"] <= est.hi,
            "coverage": coverage, "coverage_of_expected": coverage_expected,
            "measured_plugin": est_plugin.value, "measured_mm": est_mm.value,
            "measured_mm_seeds": mm, "ci_mm": [est_mm.lo, est_mm.hi], "ci_method_mm": est_mm.method,
            "error_mm": est_mm.value - truth["true_entropy"],
            "error_plugin": est_plugin.value - truth["true_entropy"],
            "bias_mm": truth["expected_mm"] - truth["true_entropy"],
            "bias_plugin": truth["expected_plugin"] - truth["true_entropy"],
            "coverage_mm": coverage_mm, "coverage_of_expected_mm": coverage_expected_mm, "label_fidelity": fidelity,
            "measured_shares": {k: counts[k] / len(played) for k in sorted(counts)},
            "episodes": len(played), "seconds": time.perf_counter() - start}


def _label_matrix(tasks, weights, table, styles) -> tuple[np.ndarray, list[str]]:
    """(questions, labels) matrix of label probabilities for a mixture, labels sorted with
    `SHIFT_TOWARDS` first; questions where the mixture has no valid strategy are left out."""
    dists = [label_distribution(t, weights, table[t.id], styles) for t in tasks]
    dists = [d for d in dists if d]
    labels = sorted({k for d in dists for k in d}, key=lambda k: (k != SHIFT_TOWARDS, k))
    return np.array([[d.get(k, 0.0) for k in labels] for d in dists]), labels


def sample_counts(probs: np.ndarray, n: int, uniforms: np.ndarray) -> np.ndarray:
    """Label counts of n draws per question from ``probs`` (questions, labels), by inverse CDF on given
    uniforms of shape (..., questions, n): the same uniforms under a shifted distribution give common
    random numbers, so power curves are smooth in delta. Returns (..., questions, labels).

    >>> sample_counts(np.array([[0.5, 0.5]]), 4, np.array([[0.1, 0.6, 0.7, 0.2]])).tolist()
    [[2, 2]]
    """
    cdf = np.cumsum(probs, axis=-1)[:, :-1]  # (questions, labels - 1)
    idx = (uniforms[..., None] >= cdf[:, None, :]).sum(-1)  # (..., questions, n)
    return np.stack([(idx == k).sum(-1) for k in range(probs.shape[-1])], axis=-1)


def simulated_coverage(tasks, weights, table, styles, samples: int, seeds: int, reps: int,
                       truths: Sequence[float], seed: int = 0, rule: str = "report") -> list[float]:
    """Share of simulated studies whose CI contains each of ``truths``: the report's rule (jackknife per
    question, two-level bootstrap over seeds and questions) or, with ``rule="previous"``, the rule it
    replaced (Miller–Madow, IQM over seeds with a stratified bootstrap; one seed: bootstrap over questions)."""
    probs, _ = _label_matrix(tasks, weights, table, styles)
    rng = np.random.default_rng(seed)
    counts = sample_counts(probs, samples, rng.random((reps, seeds, probs.shape[0], samples)))
    if rule == "report":
        _, lo, hi = two_level_ci(jackknife_from_counts(counts))
    elif rule == "previous":
        _, mm = entropy_from_counts(counts)  # (reps, seeds, questions)
        _, lo, hi = seed_ci(mm.mean(-1)) if seeds >= 2 else question_ci(mm[:, 0])
    else:
        raise ValueError(f"rule must be 'report' or 'previous', got {rule!r}")
    return [float(((lo <= t) & (t <= hi)).mean()) for t in truths]


def compare_estimators(tasks, mixtures: dict[str, dict[str, float]], table, styles, samples: int,
                       seeds: Sequence[int], reps: int, seed: int = 0) -> list[dict]:
    """Coverage of the true strategy entropy and mean width of every candidate estimator
    (`meters.count_estimators.estimates_from_counts`) x interval (`meters.claim_rules.candidate_intervals`) for
    every mixture, over ``reps`` simulated studies at n = ``samples`` and each seed count in ``seeds``: the
    measurement behind the report's rule. One row per (seeds, estimator, interval, mixture), with the
    estimator's exact bias there."""
    rows = []
    for name, weights in mixtures.items():
        probs, _ = _label_matrix(tasks, weights, table, styles)
        truth = float(np.mean([entropy(row) for row in probs]))
        expected = [expected_estimates(row, samples) for row in probs]
        for s in seeds:
            rng = np.random.default_rng(seed)
            counts = sample_counts(probs, samples, rng.random((reps, s, probs.shape[0], samples)))
            for estimator, values in estimates_from_counts(counts).items():
                bias = float(np.mean([e[estimator] for e in expected])) - truth
                for interval, (_, lo, hi) in candidate_intervals(values).items():
                    rows.append({"mixture": name, "seeds": s, "estimator": estimator, "interval": interval,
                                 "true_entropy": truth, "bias": bias,
                                 "coverage": float(((lo <= truth) & (truth <= hi)).mean()),
                                 "width": float((hi - lo).mean())})
    return rows


def best_combinations(rows: list[dict], target: float = COVERAGE_TARGET) -> dict[int, dict]:
    """Per seed count, the narrowest (mean width over mixtures) estimator x interval whose coverage reaches
    ``target`` for every mixture, or, where none does, the one with the highest minimum coverage (``ok``
    says which).

    >>> rows = [{"seeds": 3, "estimator": e, "interval": "i", "mixture": m, "coverage": c, "width": w}
    ...         for e, c, w in (("a", 0.95, 0.2), ("b", 0.91, 0.1), ("c", 0.5, 0.05)) for m in ("x", "y")]
    >>> best_combinations(rows)[3]
    {'estimator': 'b', 'interval': 'i', 'min_coverage': 0.91, 'mean_width': 0.1, 'ok': True}
    """
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["seeds"], r["estimator"], r["interval"]), []).append(r)
    best: dict[int, dict] = {}
    for (s, estimator, interval), group in groups.items():
        cand = {"estimator": estimator, "interval": interval, "min_coverage": min(r["coverage"] for r in group),
                "mean_width": float(np.mean([r["width"] for r in group]))}
        cand["ok"] = cand["min_coverage"] >= target
        now = best.get(s)
        rank = (not cand["ok"], cand["mean_width"] if cand["ok"] else -cand["min_coverage"])
        if now is None or rank < (not now["ok"], now["mean_width"] if now["ok"] else -now["min_coverage"]):
            best[s] = cand
    return dict(sorted(best.items(), reverse=True))
