"""Recovery: the scripted demonstrators' labels, the exact truths of a mixture of them, the mixture played as an
agent through the real env and metered by the report's code, and the CI coverage of the truth over simulated
studies (check 1 of `searchgym.calibration`)."""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from collections.abc import Sequence

import numpy as np

from searchgym.calibration.config import BIAS_AT_N, SHIFT_TOWARDS, StudySetup
from searchgym.meters.calibration import (
    entropy,
    expected_entropy_estimates,
    question_ci,
    seed_ci,
)
from searchgym.meters.calibration import (
    entropy_from_counts as _entropy_from_counts,
)

# ---- the env and every demonstrator's label ------------------------------------------------------------

def make_env(setup: StudySetup):
    import gymnasium

    import searchgym  # noqa: F401  (registers the env ids)

    return gymnasium.make(setup.env_id, disable_env_checker=True, **{**setup.env_kwargs, "split": setup.split})


def label_table(env, tasks, *, progress: bool = True) -> dict[str, dict[tuple[str, str], str]]:
    """Play every (strategy, query style) demonstrator once on every task; the classifier's label of each
    episode. Demonstrators and the env are deterministic, so this is each episode's label for good."""
    from tqdm.auto import tqdm

    from searchgym.envs.episodes import play

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
    expectations of the plug-in and Miller–Madow meters at n, true shares and the expected label fidelity."""
    from searchgym.train.pretrain import task_distribution

    rows = []
    for t in tasks:
        dist = task_distribution(weights, t.strategies)
        if not dist:
            continue
        labelled = label_distribution(t, weights, table[t.id], styles)
        plugin, mm = expected_entropy_estimates(labelled, n)
        fidelity = sum(w / len(styles) for s, w in dist.items() for st in styles if table[t.id][(s, st)] == s)
        bias = {m: expected_entropy_estimates(labelled, m)[1] - entropy(dist) for m in BIAS_AT_N}
        rows.append((entropy(dist), entropy(labelled), plugin, mm, dist, labelled, fidelity, bias))
    if not rows:
        raise ValueError(f"mixture {weights} has no valid strategy on any of the {len(tasks)} questions")
    shares: Counter = Counter()
    label_shares: Counter = Counter()
    for *_, dist, labelled, _, _ in rows:
        shares.update(dist)
        label_shares.update(labelled)
    q = len(rows)
    return {"true_entropy": float(np.mean([r[0] for r in rows])),
            "labelled_entropy": float(np.mean([r[1] for r in rows])),
            "expected_plugin": float(np.mean([r[2] for r in rows])),
            "expected_mm": float(np.mean([r[3] for r in rows])),
            "true_shares": {k: shares[k] / q for k in sorted(shares)},
            "expected_label_shares": {k: label_shares[k] / q for k in sorted(label_shares)},
            "expected_label_fidelity": float(np.mean([r[6] for r in rows])),
            "bias_mm_by_n": {str(m): float(np.mean([r[7][m] for r in rows])) for m in BIAS_AT_N},
            "questions_with_support": q}


# ---- recovery: mixtures played through the env and metered by the report's code ------------------

def play_mixture(env, tasks, weights: dict[str, float], samples: int, rng: random.Random) -> list:
    """The mixture as an agent: each episode draws its strategy from the question's renormalised mixture
    and its query style uniformly, and plays that demonstrator through the env."""
    from searchgym.envs.episodes import play
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
    """One mixture at the study's sizes: played and metered per seed, with the report's seed CI, against
    the exact truth; coverage of the truth by that CI over ``coverage_reps`` simulated studies."""
    from searchgym.meters.aggregate import average, per_question
    from searchgym.report.data import _seed_estimate

    styles = env.unwrapped.taskset.query_styles
    truth = mixture_truth(tasks, weights, table, styles, samples)
    start = time.perf_counter()
    plugin, mm, per_q_mm, per_q_plugin, played = [], [], [], [], []
    for s in range(seeds):
        trajectories = play_mixture(env, tasks, weights, samples, random.Random(f"calibrate:{seed}:{name}:{s}"))
        meters, difficulty, _ = per_question(trajectories, samples=samples)
        avg = average(meters, difficulty, samples)
        plugin.append(avg["diversity/strategy_entropy"])
        mm.append(avg["diversity/strategy_entropy_mm"])
        per_q_mm.append([m["diversity/strategy_entropy_mm"] for m in meters.values()])
        per_q_plugin.append([m["diversity/strategy_entropy"] for m in meters.values()])
        played += trajectories
    est_mm = _seed_estimate(mm, np.mean(per_q_mm, axis=0).tolist())  # the report's estimate and CI
    est_plugin = _seed_estimate(plugin, np.mean(per_q_plugin, axis=0).tolist())
    counts = Counter(t.strategy or "other" for t in played)
    fidelity = sum(t.strategy == t.meta.get("demo_strategy") for t in played) / len(played)
    coverage, coverage_expected = simulated_coverage(
        tasks, weights, table, styles, samples, seeds, coverage_reps, [truth["true_entropy"], truth["expected_mm"]],
        seed) if coverage_reps else (math.nan, math.nan)
    return {"name": name, "weights": weights, **truth,
            "measured_plugin": est_plugin.value, "measured_mm": est_mm.value,
            "measured_mm_seeds": mm, "ci_mm": [est_mm.lo, est_mm.hi], "ci_method": est_mm.method,
            "error_mm": est_mm.value - truth["true_entropy"],
            "error_plugin": est_plugin.value - truth["true_entropy"],
            "bias_mm": truth["expected_mm"] - truth["true_entropy"],
            "bias_plugin": truth["expected_plugin"] - truth["true_entropy"],
            "ci_covers_truth": est_mm.lo <= truth["true_entropy"] <= est_mm.hi,
            "coverage": coverage, "coverage_of_expected_mm": coverage_expected, "label_fidelity": fidelity,
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
                       truths: Sequence[float], seed: int = 0) -> list[float]:
    """Share of simulated studies whose CI (the report's: over seeds, or over questions with one seed)
    contains each of ``truths``."""
    probs, _ = _label_matrix(tasks, weights, table, styles)
    rng = np.random.default_rng(seed)
    counts = sample_counts(probs, samples, rng.random((reps, seeds, probs.shape[0], samples)))
    _, mm = _entropy_from_counts(counts)  # (reps, seeds, questions)
    _, lo, hi = seed_ci(mm.mean(-1)) if seeds >= 2 else question_ci(mm[:, 0])
    return [float(((lo <= t) & (t <= hi)).mean()) for t in truths]
