"""Entropy meters: of token distributions, of sampled sequences, of discrete labels, and KL to a reference.

Token entropy detects the classic entropy collapse; label entropy (plug-in and Miller–Madow) is the
building block of every cluster meter (strategies, action signatures, answers, tool-call counts).
All functions are pure; empty inputs give NaN (scripted demonstrations carry no token data).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

import numpy as np

from searchgym.trajectory import TOKEN_ROLES


def mean_token_entropy(entropies: Sequence[float]) -> float:
    """Mean per-token entropy, NaN when there are no tokens.

    >>> mean_token_entropy([1.0, 2.0, 3.0])
    2.0
    >>> math.isnan(mean_token_entropy([]))
    True
    """
    return float(np.mean(entropies)) if len(entropies) else math.nan


def role_split_entropy(entropies: Sequence[float], roles: Sequence[str]) -> dict[str, float]:
    """Mean token entropy per role in ``TOKEN_ROLES`` (query / answer / post_tool / other).

    H_role = mean of H_t over tokens t with role_t = role; NaN for a role with no tokens, and NaN for
    every role when roles are missing or do not line up with the entropies.

    >>> role_split_entropy([1.0, 3.0, 0.5], ["query", "query", "answer"])
    {'query': 2.0, 'answer': 0.5, 'post_tool': nan, 'other': nan}
    """
    if len(roles) != len(entropies):
        return {role: math.nan for role in TOKEN_ROLES}
    e, r = np.asarray(entropies, dtype=np.float64), np.asarray(roles)
    return {role: mean_token_entropy(e[r == role]) for role in TOKEN_ROLES}


def sequence_entropy(logprobs: Sequence[Sequence[float]]) -> tuple[float, float]:
    """Monte-Carlo sequence entropy of n samples and its per-token version.

    H_seq = -(1/n) sum_i log pi(y_i|x) with log pi(y_i|x) = sum_t logp_{i,t};
    per token = -(sum_i sum_t logp_{i,t}) / (sum_i T_i). Samples without log-probs are left out.

    >>> sequence_entropy([[-1.0, -1.0], [-2.0]])
    (2.0, 1.3333333333333333)
    >>> sequence_entropy([[]])
    (nan, nan)
    """
    rows = [np.asarray(lp, dtype=np.float64) for lp in logprobs if len(lp)]
    if not rows:
        return math.nan, math.nan
    totals = np.array([r.sum() for r in rows])
    return float(-totals.mean()), float(-totals.sum() / sum(len(r) for r in rows))


def plugin_entropy(labels: Sequence[Hashable]) -> float:
    """Plug-in (maximum-likelihood) entropy of the empirical label distribution, in nats.

    H = -sum_c p_c log p_c with p_c = n_c / n. Biased low at small n.

    >>> round(plugin_entropy(["a", "b", "c", "d"]), 4)  # log 4
    1.3863
    >>> plugin_entropy(["a", "a"])
    0.0
    """
    n = len(labels)
    if n == 0:
        return math.nan
    p = np.array(list(Counter(labels).values()), dtype=np.float64) / n
    return float(-(p * np.log(p)).sum()) + 0.0  # + 0.0 turns -0.0 into 0.0


def miller_madow_entropy(labels: Sequence[Hashable]) -> float:
    """Miller–Madow bias-corrected entropy: H_MM = H_plugin + (K - 1) / (2n), K = distinct labels.

    >>> round(miller_madow_entropy(["a", "b", "c", "d"]), 4)  # log 4 + 3/8
    1.7613
    >>> miller_madow_entropy(["a", "a", "a"])
    0.0
    """
    n = len(labels)
    if n == 0:
        return math.nan
    return plugin_entropy(labels) + (len(set(labels)) - 1) / (2 * n)


def kl_k1(logp: Sequence[float], logq: Sequence[float]) -> np.ndarray:
    """Per-token k1 estimator of KL(p || q) on tokens sampled from p: k1 = log p - log q.

    Unbiased but can be negative per token.

    >>> kl_k1([-1.0, -2.0], [-1.5, -1.0]).tolist()
    [0.5, -1.0]
    """
    return np.asarray(logp, dtype=np.float64) - np.asarray(logq, dtype=np.float64)


def kl_k3(logp: Sequence[float], logq: Sequence[float]) -> np.ndarray:
    """Per-token k3 estimator of KL(p || q): k3 = q/p - 1 - log(q/p) (>= 0, unbiased, low variance).

    >>> kl_k3([-1.0], [-1.0]).tolist()
    [0.0]
    >>> round(float(kl_k3([0.0], [-1.0])[0]), 4)  # e^-1 - 1 + 1
    0.3679
    """
    log_ratio = np.asarray(logq, dtype=np.float64) - np.asarray(logp, dtype=np.float64)
    return np.exp(log_ratio) - 1.0 - log_ratio
