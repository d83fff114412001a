"""The literature's measurements (issue #16) against brute-force or closed-form references: pass@k and pass^k
tables vs exact binomials and k-subset enumeration, the crossing k on constructed curves, coverage and ΔSE
vs set arithmetic, the entropy–reward fit recovering known a and b, template collapse on built batches, and
depth adaptivity vs a hand-ranked Spearman."""

from __future__ import annotations

import itertools
import math
import random
import time

import numpy as np
import pytest

from searchgym.meters import aggregate
from searchgym.meters.coverage import compare_with_base, coverage, crossing, delta_se
from searchgym.meters.literature import (
    cross_input_accuracy,
    depth_adaptivity,
    entropy_reward_points,
    fit_entropy_reward,
    question_retrieval_credit,
)
from searchgym.meters.passk import (
    crossing_k,
    k_ladder,
    pass_at_k,
    pass_at_k_curve,
    pass_at_k_table,
    pass_hat_k,
    pass_hat_k_table,
)
from searchgym.meters.stats import correlation
from searchgym.trajectory import Trajectory

# ---- pass@k and pass^k ------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 7, 8])
def test_pass_tables_equal_enumerating_every_k_subset(n):
    for c in range(n + 1):
        correct = [True] * c + [False] * (n - c)
        for k in range(1, n + 1):
            subsets = list(itertools.combinations(correct, k))
            at_least_one = sum(any(s) for s in subsets) / len(subsets)
            all_k = sum(all(s) for s in subsets) / len(subsets)
            assert pass_at_k_table(n, [c], [k])[0, 0] == pytest.approx(at_least_one, abs=1e-12)
            assert pass_hat_k_table(n, [c], [k])[0, 0] == pytest.approx(all_k, abs=1e-12)
            assert pass_hat_k(n, c, k) == pytest.approx(all_k, abs=1e-12)


@pytest.mark.parametrize("n", [256, 1024])
def test_pass_tables_at_large_n_match_exact_binomials_and_stay_fast(n):
    counts = np.arange(n + 1)
    start = time.perf_counter()
    at, hat = pass_at_k_table(n, counts), pass_hat_k_table(n, counts)
    assert time.perf_counter() - start < 5.0  # vectorised: well under a second on a busy 2-core CPU
    ks = k_ladder(n)
    assert np.isfinite(at).all() and np.isfinite(hat).all()
    assert ((at >= 0) & (at <= 1) & (hat >= 0) & (hat <= 1)).all()
    for c in (0, 1, 3, n // 7, n // 2, n - 5, n):
        for j, k in enumerate(ks):
            exact_at = 1 - math.comb(n - c, k) / math.comb(n, k)  # big-int division: correctly rounded
            exact_hat = math.comb(c, k) / math.comb(n, k)
            assert at[c, j] == pytest.approx(exact_at, rel=1e-12, abs=1e-15)
            assert hat[c, j] == pytest.approx(exact_hat, rel=1e-10, abs=1e-300)
            if n == 256:
                assert at[c, j] == pytest.approx(pass_at_k(n, c, k), abs=1e-13)
    # monotone: pass@k rises with k and c, pass^k falls with k and rises with c
    assert (np.diff(at, axis=1) >= -1e-15).all() and (np.diff(hat, axis=1) <= 1e-15).all()
    assert (np.diff(at, axis=0) >= -1e-15).all() and (np.diff(hat, axis=0) >= -1e-15).all()


def test_pass_tables_reject_impossible_inputs_and_the_curve_keeps_its_values():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k_table(4, [1], [8])
    with pytest.raises(ValueError, match="counts must lie"):
        pass_hat_k_table(4, [5])
    rng = random.Random(0)
    counts = [rng.randrange(0, 17) for _ in range(40)]
    curve = pass_at_k_curve(counts, n=16)
    for k, v in curve.items():
        assert v == pytest.approx(sum(pass_at_k(16, c, k) for c in counts) / len(counts), abs=1e-14)


def test_crossing_k_on_constructed_curves():
    ks = [1, 2, 4, 8, 16]
    base = dict(zip(ks, [0.10, 0.19, 0.34, 0.56, 0.80]))
    arm = dict(zip(ks, [0.40, 0.45, 0.50, 0.55, 0.60]))
    assert crossing_k(base, arm) == 8  # 0.56 >= 0.55 first at k = 8
    assert crossing_k(base, {k: v + 0.3 for k, v in arm.items()}) is None  # arm ahead everywhere
    assert crossing_k(arm, base) is None  # the "arm" is behind at k = 1: no crossing to speak of
    tie = dict(zip(ks, [0.10, 0.45, 0.5, 0.6, 0.9]))
    assert crossing_k(tie, arm) == 2  # equality counts as caught up


def test_crossing_from_counts_matches_the_curves_and_is_robust_when_clear():
    n = 16
    # the arm solves half the questions every time; the base solves every question 3 times in 16
    base = {f"q{i}": 3 for i in range(40)}
    arm = {f"q{i}": (16 if i % 2 == 0 else 0) for i in range(40)}
    expected = crossing_k(pass_at_k_curve(list(base.values()), n), pass_at_k_curve(list(arm.values()), n))
    r = crossing(base, arm, n, n_boot=300)
    assert r["passk/crossing_k"] == expected == 4 and r["passk/crossing_state"] == 1.0
    assert r["passk/crossing_boot_share"] > 0.95 and r["passk/crossing_k_lo"] <= 4 <= r["passk/crossing_k_hi"]
    # several seeds per side: the curves are averaged over runs first
    r2 = crossing([base, base], [arm, arm], n, n_boot=100)
    assert r2["passk/crossing_k"] == 4
    never = crossing({q: 0 for q in base}, arm, n, n_boot=50)
    assert math.isnan(never["passk/crossing_k"]) and never["passk/crossing_state"] == 0.0


# ---- coverage and ΔSE -------------------------------------------------------------------------------


def test_coverage_equals_set_arithmetic_and_its_ci_brackets_it():
    rng = random.Random(1)
    qs = [f"q{i}" for i in range(60)]
    base = {q: rng.choice([0, 0, 1, 3]) for q in qs}
    arm = {q: rng.choice([0, 2, 5]) for q in qs}
    s_base, s_arm = {q for q in qs if base[q]}, {q for q in qs if arm[q]}
    r = coverage(base, arm, n_boot=500)
    assert r["coverage/inclusion"] == pytest.approx(len(s_arm & s_base) / len(s_arm))
    assert r["coverage/new"] == pytest.approx(len(s_arm - s_base) / len(qs))
    assert r["coverage/lost"] == pytest.approx(len(s_base - s_arm) / len(qs))
    assert (r["coverage/only_arm"], r["coverage/only_base"], r["coverage/both"]) == (
        len(s_arm - s_base), len(s_base - s_arm), len(s_arm & s_base))
    for key in ("inclusion", "new", "lost"):
        assert r[f"coverage/{key}_lo"] <= r[f"coverage/{key}"] <= r[f"coverage/{key}_hi"]
    # a subset: inclusion is exactly 1 and nothing is new
    sub = coverage({q: 1 for q in qs}, arm, n_boot=100)
    assert sub["coverage/inclusion"] == 1.0 and sub["coverage/new"] == 0.0 == sub["coverage/new_hi"]
    # an arm that solves nothing has no inclusion to report
    assert math.isnan(coverage(base, {q: 0 for q in qs}, n_boot=50)["coverage/inclusion"])


def test_coverage_over_seeds_is_the_mean_over_run_pairs():
    qs = ["a", "b", "c", "d"]
    arms = [{"a": 1, "b": 1, "c": 0, "d": 0}, {"a": 1, "b": 0, "c": 1, "d": 0}]
    bases = [{"a": 1, "b": 0, "c": 0, "d": 1}, {"a": 0, "b": 1, "c": 0, "d": 1}, {"a": 1, "b": 1, "c": 1, "d": 0}]
    r = coverage(bases, arms, n_boot=50)
    pairs = [(a, b) for a in arms for b in bases]
    new = np.mean([sum(a[q] >= 1 and b[q] == 0 for q in qs) / len(qs) for a, b in pairs])
    lost = np.mean([sum(a[q] == 0 and b[q] >= 1 for q in qs) / len(qs) for a, b in pairs])
    both = sum(sum(a[q] >= 1 and b[q] >= 1 for q in qs) for a, b in pairs)
    solved = sum(sum(a[q] >= 1 for q in qs) for a, _ in pairs)
    assert r["coverage/new"] == pytest.approx(new) and r["coverage/lost"] == pytest.approx(lost)
    assert r["coverage/inclusion"] == pytest.approx(both / solved)


def test_delta_se_is_arm_pass1_minus_base_pass_at_n():
    n = 8
    base = {"a": 0, "b": 1, "c": 8, "d": 2}
    arm = {"a": 4, "b": 8, "c": 0, "d": 6}
    r = delta_se(base, arm, n, n_boot=300)
    expected = np.mean([arm[q] / n for q in base]) - np.mean([float(base[q] > 0) for q in base])
    assert r["coverage/delta_se"] == pytest.approx(expected)
    assert r["coverage/delta_se_lo"] <= expected <= r["coverage/delta_se_hi"]
    keys = compare_with_base(base, arm, n, n_boot=50)
    assert {"coverage/inclusion", "coverage/delta_se", "passk/crossing_k"} <= set(keys)


# ---- the entropy–reward law -------------------------------------------------------------------------


def test_fit_recovers_known_a_and_b_and_predicts_the_tail():
    rng = np.random.default_rng(0)
    a, b = 0.08, 0.95
    h = np.linspace(2.2, 0.2, 40)  # entropy falling over training
    r = -a * np.exp(h) + b + rng.normal(0, 0.005, h.size)
    fit = fit_entropy_reward(h, r)
    assert fit["fit/entropy_reward_a"] == pytest.approx(a, rel=0.05)
    assert fit["fit/entropy_reward_b"] == pytest.approx(b, abs=0.01)
    assert fit["fit/entropy_reward_ceiling"] == pytest.approx(b - a, abs=0.01)
    assert fit["fit/entropy_reward_r2"] > 0.98 and fit["fit/entropy_reward_points"] == 40
    assert fit["fit/entropy_reward_tail_mae"] < 0.02 < fit["fit/entropy_reward_tail_mae_flat"]
    # numpy's own least squares in x = exp(H) gives the same line
    slope, intercept = np.polyfit(np.exp(h), r, 1)
    assert fit["fit/entropy_reward_a"] == pytest.approx(-slope) and fit["fit/entropy_reward_b"] == pytest.approx(intercept)


def test_fit_degenerate_inputs_give_nan_not_errors():
    assert math.isnan(fit_entropy_reward([1.0], [0.5])["fit/entropy_reward_a"])
    flat = fit_entropy_reward([1.0, 1.0, 1.0], [0.1, 0.2, 0.3])
    assert math.isnan(flat["fit/entropy_reward_a"]) and math.isnan(flat["fit/entropy_reward_r2"])
    three = fit_entropy_reward([1.0, 0.5, float("nan"), 0.2], [0.1, 0.3, 0.9, 0.4])
    assert three["fit/entropy_reward_points"] == 3 and math.isnan(three["fit/entropy_reward_tail_mae"])


def test_entropy_reward_points_prefer_probes_then_trainer_rows():
    grpo = [{"step": i, "train/entropy": 1.0 - 0.1 * i, "train/reward": 0.1 * i} for i in range(5)]
    h, r, keys = entropy_reward_points(grpo)
    assert keys == ("train/entropy", "train/reward") and len(h) == 5
    probes = grpo + [{"step": 9, "probe": True, "entropy/token": 0.4, "reward/success": 0.5, "reward/mean": 0.4}]
    assert entropy_reward_points(probes) == ([0.4], [0.5], ("entropy/token", "reward/success"))
    assert entropy_reward_points([{"step": 1, "train/loss": 1.0, "entropy/token": None}]) == ([], [], None)


# ---- template collapse ------------------------------------------------------------------------------

QUESTIONS = {f"q{i}": f"who founded the company {name}?" for i, name in
             enumerate(["acme", "borealis", "cygnus", "draco", "eridani"])}


def _brute_credit(text: str, own: str) -> float:
    """Cosine of tf-idf vectors over the question vocabulary, written out term by term."""
    def toks(s):
        import re
        return re.findall(r"\w+", s.lower())
    docs = {q: toks(t) for q, t in QUESTIONS.items()}
    vocab = sorted({w for d in docs.values() for w in d})
    df = {w: sum(w in d for d in docs.values()) for w in vocab}
    idf = {w: math.log((1 + len(docs)) / (1 + df[w])) + 1 for w in vocab}
    tv = {w: toks(text).count(w) * idf[w] for w in vocab}
    scores = {}
    for q, d in docs.items():
        qv = {w: d.count(w) * idf[w] for w in vocab}
        nq, nt = math.sqrt(sum(v * v for v in qv.values())), math.sqrt(sum(v * v for v in tv.values()))
        scores[q] = sum(qv[w] * tv[w] for w in vocab) / (nq * nt) if nt else 0.0
    best = [q for q, s in scores.items() if math.isclose(s, max(scores.values()), rel_tol=1e-9, abs_tol=1e-12)]
    return (own in best) / len(best)


def test_question_retrieval_matches_a_brute_force_cosine():
    rng = random.Random(2)
    words = [w for t in QUESTIONS.values() for w in t.replace("?", "").split()] + ["search", "open", "answer"]
    texts = [" ".join(rng.choices(words, k=rng.randrange(0, 8))) for _ in range(60)]
    own = [rng.choice(list(QUESTIONS)) for _ in texts]
    got = question_retrieval_credit(texts, own, QUESTIONS)
    assert got == pytest.approx([_brute_credit(t, q) for t, q in zip(texts, own)])


def test_template_collapse_is_chance_while_specific_trajectories_are_identified():
    own = [q for q in QUESTIONS for _ in range(4)]
    specific = [f'search {{"query": "{QUESTIONS[q].split()[-1][:-1]} founder"}}' for q in own]
    template = ['search {"query": "who founded the company"} answer unknown'] * len(own)
    s = cross_input_accuracy(specific, own, QUESTIONS)
    t = cross_input_accuracy(template, own, QUESTIONS)
    assert s["diversity/cross_input"] == 1.0 and s["diversity/cross_input_lift"] == 1.0
    assert t["diversity/cross_input"] == pytest.approx(1 / 5) == t["diversity/cross_input_chance"]
    assert t["diversity/cross_input_lift"] == pytest.approx(0.0, abs=1e-12)


def _traj(q: int, i: int, text: str, calls: int, hops: int) -> Trajectory:
    return Trajectory(task_id=f"q{q}", env_id="e", sample=i, question=QUESTIONS[f"q{q}"],
                      messages=[{"role": "assistant", "content": text}],
                      calls=[{"name": "search", "arguments": {}, "valid": True}] * calls,
                      signature=" ".join(["S"] * calls), strategy=None, queries=[], docs_retrieved=[],
                      docs_opened=[], answer=None, reward=0.0, correct=False, gold_answers=["x"], evidence=[],
                      difficulty=hops)


def test_aggregate_reports_pass_hat_k_cross_input_and_depth_adaptivity():
    names = [t.split()[-1][:-1] for t in QUESTIONS.values()]
    trajs = [_traj(q, i, f"search {names[q]}", calls=q + 1 + i % 2, hops=1 + q) for q in range(5) for i in range(4)]
    m = aggregate(trajs)
    assert m["passk/pass^1"] == 0.0 and "passk/pass^4" in m
    assert m["diversity/cross_input"] == 1.0 and m["diversity/cross_input_chance"] == pytest.approx(0.2)
    assert m["search/depth_adaptivity"] == pytest.approx(1.0)  # calls grow with hops, question by question
    collapsed = aggregate([_traj(q, i, "search the company", calls=2, hops=1 + q) for q in range(5) for i in range(4)])
    assert collapsed["diversity/cross_input_lift"] == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(collapsed["search/depth_adaptivity"])  # the same number of calls everywhere


# ---- depth adaptivity -------------------------------------------------------------------------------


def _spearman_by_hand(x, y):
    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for t in range(i, j + 1):
                r[order[t]] = (i + j) / 2 + 1
            i = j + 1
        return r
    rx, ry = ranks(x), ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def test_depth_adaptivity_is_spearman_with_a_bootstrap_ci():
    rng = random.Random(3)
    hops = [rng.randint(1, 4) for _ in range(50)]
    calls = [h * 1.5 + rng.gauss(0, 1.2) for h in hops]
    r = depth_adaptivity(calls, hops, n_boot=400)
    assert r["search/depth_adaptivity"] == pytest.approx(_spearman_by_hand(calls, hops))
    assert 0 < r["search/depth_adaptivity_lo"] <= r["search/depth_adaptivity"] <= r["search/depth_adaptivity_hi"] <= 1
    noise = depth_adaptivity([rng.random() for _ in hops], hops, n_boot=400)
    assert noise["search/depth_adaptivity_lo"] < 0 < noise["search/depth_adaptivity_hi"]
    assert correlation([1, 2, 3], [3, 5, 4], "pearson") == pytest.approx(float(np.corrcoef([1, 2, 3], [3, 5, 4])[0, 1]))
