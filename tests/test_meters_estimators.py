"""The single estimators are proven against definitions: enumeration, known distributions, invariances."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchgym.meters.diversity import (
    cluster_stats,
    cosine_kernel,
    distinct_n,
    self_bleu,
    sentence_bleu,
    tokenize,
    vendi_embeddings,
    vendi_ngram,
    vendi_score,
)
from searchgym.meters.entropy import (
    jackknife_entropy,
    kl_k1,
    kl_k3,
    miller_madow_entropy,
    plugin_entropy,
    role_split_entropy,
)
from searchgym.meters.passk import k_ladder, pass_at_k, pass_at_k_curve
from searchgym.meters.search import query_breadth, query_redundancy
from searchgym.meters.stats import (
    bootstrap_ci,
    iqm,
    paired_bootstrap,
    probability_of_improvement,
    stratified_bootstrap_ci,
)

FAST = settings(max_examples=60, deadline=None)
labels = st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=12)
texts = st.lists(st.text(alphabet="abcd ", max_size=12), min_size=1, max_size=6)


# --- pass@k -------------------------------------------------------------------------------------------

@FAST
@given(st.data())
def test_pass_at_k_equals_exhaustive_enumeration(data):
    n = data.draw(st.integers(1, 8))
    c = data.draw(st.integers(0, n))
    k = data.draw(st.integers(1, n))
    correct = set(range(c))  # which samples are correct does not matter by symmetry
    subsets = list(combinations(range(n), k))
    exact = sum(bool(correct & set(s)) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_k_stable_for_large_n_and_rejects_k_above_n():
    assert pass_at_k(500, 3, 100) == pytest.approx(1 - math.comb(497, 100) / math.comb(500, 100), rel=1e-9)
    with pytest.raises(ValueError, match="k <= n"):
        pass_at_k(4, 1, 5)
    assert k_ladder(16) == [1, 2, 4, 8, 16]
    assert pass_at_k_curve([2, 0], n=4)[1] == pytest.approx(0.25)


# --- entropies ----------------------------------------------------------------------------------------

def test_miller_madow_reduces_bias_on_uniform_16_classes():
    rng = np.random.default_rng(0)
    true_h = math.log(16)
    draws = [rng.integers(0, 16, size=8).tolist() for _ in range(2000)]
    bias_plugin = np.mean([plugin_entropy(d) for d in draws]) - true_h
    bias_mm = np.mean([miller_madow_entropy(d) for d in draws]) - true_h
    assert bias_plugin < -0.2 * true_h  # meters.md: strongly biased low at n=8
    assert abs(bias_mm) < abs(bias_plugin)


@FAST
@given(labels, st.randoms(use_true_random=False))
def test_label_entropy_bounds_and_permutation_invariance(xs, random):
    k = len(set(xs))
    h, h_mm = plugin_entropy(xs), miller_madow_entropy(xs)
    assert -1e-12 <= h <= math.log(k) + 1e-12
    assert h_mm == pytest.approx(h + (k - 1) / (2 * len(xs)))
    shuffled = list(xs)
    random.shuffle(shuffled)
    assert plugin_entropy(shuffled) == pytest.approx(h)
    stats = cluster_stats(xs)
    assert stats["distinct"] == k and 1 / k - 1e-12 <= stats["max_share"] <= 1


@FAST
@given(labels, st.randoms(use_true_random=False))
def test_jackknife_entropy_is_the_leave_one_out_definition(xs, random):
    n = len(xs)
    loo = [plugin_entropy(xs[:i] + xs[i + 1:]) if n > 1 else 0.0 for i in range(n)]
    expected = n * plugin_entropy(xs) - (n - 1) / n * sum(loo)
    assert jackknife_entropy(xs) == pytest.approx(expected if len(set(xs)) > 1 else 0.0, abs=1e-9)
    shuffled = list(xs)
    random.shuffle(shuffled)
    assert jackknife_entropy(shuffled) == pytest.approx(jackknife_entropy(xs))
    assert cluster_stats(xs)["entropy_jk"] == jackknife_entropy(xs)


def test_jackknife_is_less_biased_than_miller_madow_at_n8():
    """docs/calibration.md: the report's strategy entropy at n = 8 samples, 5 equally likely strategies."""
    rng = np.random.default_rng(3)
    draws = [rng.integers(0, 5, size=8).tolist() for _ in range(3000)]
    truth = math.log(5)
    bias_jk = np.mean([jackknife_entropy(d) for d in draws]) - truth
    bias_mm = np.mean([miller_madow_entropy(d) for d in draws]) - truth
    assert bias_mm < -0.05 and abs(bias_jk) < 0.04 and abs(bias_jk) < abs(bias_mm) / 2


def test_token_entropy_matches_definition_and_is_stable():
    """The one token-entropy path (the rollout's `token_stats`) against H = -sum p log p."""
    import torch

    from searchgym.agent.rollout import token_stats

    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 7))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    tokens = torch.tensor([0, 1, 2, 3, 4])
    logprob, h = token_stats(torch.tensor(z), tokens, temperature=1.0)
    assert np.allclose(h.numpy(), -(p * np.log(p)).sum(axis=1), atol=1e-6)
    assert np.allclose(logprob.numpy(), np.log(p[np.arange(5), tokens.numpy()]), atol=1e-6)
    shifted = token_stats(torch.tensor(z) + 200.0, tokens, 1.0)[1]  # exp(200) overflows float32: logsumexp must not
    assert np.allclose(shifted.numpy(), h.numpy(), atol=1e-3)
    assert (token_stats(torch.tensor(z), tokens, 0.5)[1] < h).all()  # lower temperature, lower H
    split = role_split_entropy([1.0, 3.0, 0.5], ["query", "query", "post_tool"])
    assert split["query"] == 2.0 and split["post_tool"] == 0.5 and math.isnan(split["answer"])
    assert all(math.isnan(v) for v in role_split_entropy([1.0], ["query", "answer"]).values())  # misaligned


def test_kl_estimators_recover_true_kl_on_samples_from_p():
    p, q = np.array([0.6, 0.3, 0.1]), np.array([0.2, 0.5, 0.3])
    true_kl = float((p * np.log(p / q)).sum())
    tokens = np.random.default_rng(2).choice(3, size=40000, p=p)
    logp, logq = np.log(p[tokens]), np.log(q[tokens])
    assert kl_k1(logp, logq).mean() == pytest.approx(true_kl, abs=0.02)
    assert kl_k3(logp, logq).mean() == pytest.approx(true_kl, abs=0.02)
    assert (kl_k3(logp, logq) >= 0).all()


# --- text diversity -----------------------------------------------------------------------------------

def test_vendi_identical_is_one_and_orthogonal_is_n():
    assert vendi_ngram(["search acme founder"] * 5) == pytest.approx(1.0)
    assert vendi_ngram(["alpha", "beta", "gamma", "delta"]) == pytest.approx(4.0)
    assert vendi_embeddings(np.eye(6) * 3.0) == pytest.approx(6.0)
    # two pairs of duplicates: effectively 2 items
    assert vendi_score(cosine_kernel(np.array([[1.0, 0], [1, 0], [0, 1], [0, 1]]))) == pytest.approx(2.0)


@FAST
@given(texts, st.randoms(use_true_random=False))
def test_text_meter_bounds_and_permutation_invariance(xs, random):
    n = len(xs)
    v = vendi_ngram(xs)
    assert 1 - 1e-9 <= v <= n + 1e-9
    shuffled = list(xs)
    random.shuffle(shuffled)
    assert vendi_ngram(shuffled) == pytest.approx(v)
    for order in (1, 2):
        d = distinct_n(xs, order)
        assert math.isnan(d) or 0 < d <= 1
    if n >= 2:
        assert 0 <= self_bleu(xs) <= 1 + 1e-12
        assert self_bleu(shuffled) == pytest.approx(self_bleu(xs))


@FAST
@given(st.lists(st.text(alphabet="ab ", max_size=14), min_size=2, max_size=5))
def test_fast_self_bleu_equals_reference_sentence_bleu(xs):
    toks = [tokenize(t) for t in xs]
    reference = np.mean([sentence_bleu(toks[i], toks[:i] + toks[i + 1:]) for i in range(len(toks))])
    assert self_bleu(xs) == pytest.approx(reference, abs=1e-12)


def test_self_bleu_and_distinct_n_extremes():
    assert self_bleu(["a b c d e"] * 3) == pytest.approx(1.0)
    assert self_bleu(["a b c", "d e f"]) == 0.0
    assert distinct_n(["a b c", "d e f"], 1) == 1.0
    assert distinct_n(["a a a a"], 1) == 0.25


def test_query_meters():
    assert query_redundancy(["a b", "a b"]) == 1.0
    assert math.isnan(query_redundancy(["a b"]))
    assert query_breadth([["a"], ["b"], ["c"]]) == 1.0
    assert query_breadth([["a b", "c"], ["c b a"]]) == 0.0


# --- statistics ---------------------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_true_mean():
    rng = np.random.default_rng(3)
    covered = 0
    for rep in range(200):
        _, lo, hi = bootstrap_ci(rng.normal(0.3, 1.0, size=60), n_boot=400, seed=rep)
        covered += lo <= 0.3 <= hi
    assert 0.88 <= covered / 200 <= 0.99  # nominal 95%


def test_paired_bootstrap_uses_the_same_resample_for_both_models():
    rng = np.random.default_rng(4)
    a = {f"q{i}": list(rng.random(4)) for i in range(40)}
    b = {q: [v + 0.1 for v in vs] for q, vs in a.items()}  # every question exactly 0.1 better
    r = paired_bootstrap(a, b, n_boot=500)
    assert r["lo_diff"] == pytest.approx(0.1) and r["hi_diff"] == pytest.approx(0.1)
    assert r["lo_a"] < r["mean_a"] < r["hi_a"] and r["hi_a"] - r["lo_a"] > 0.05
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap(a, {"other": [1.0]})


def test_iqm_stratified_bootstrap_and_probability_of_improvement():
    assert iqm([1, 2, 3, 4]) == 2.5
    assert iqm([0, 0, 5, 5, 5, 5, 1e9, -1e9]) == 3.75  # outliers trimmed
    point, lo, hi = stratified_bootstrap_ci(np.full((3, 4), 0.7), n_boot=100)
    assert point == lo == hi == pytest.approx(0.7)
    x, y = np.array([[3.0, 4.0], [5.0, 6.0]]), np.array([[1.0, 2.0], [0.0, 1.0], [2.0, 3.0]])
    assert probability_of_improvement(x, y) == 1.0
    assert probability_of_improvement(x, x) == 0.5
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    assert probability_of_improvement(u, v) + probability_of_improvement(v, u) == pytest.approx(1.0)
