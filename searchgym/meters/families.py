"""The per-question meter families: each function takes one task's n samples and returns one family of
namespaced keys (floats, NaN = not available). `searchgym.meters.table` names them row by row and
`aggregate.question_meters` merges them; the estimators they call live in the submodules of their kind.

>>> group = [example(reward=1.0, correct=True), example(sample=1, reward=0.0, correct=False)]
>>> reward_meters(group)["reward/success"], passk_meters(group)["passk/pass@2"]
(0.5, 1.0)
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from searchgym.meters.diversity import cluster_stats, distinct_n, self_bleu, vendi_ngram
from searchgym.meters.entropy import kl_k1, kl_k3, mean_token_entropy, role_split_entropy, sequence_entropy
from searchgym.meters.passk import k_ladder, pass_at_k, pass_hat_k
from searchgym.meters.reward import is_zero_variance, nanmean, reward_std
from searchgym.meters.search import (
    call_count_stats,
    evidence_coverage,
    query_breadth,
    query_redundancy,
    unique_docs,
)
from searchgym.trajectory import TOKEN_ROLES, Trajectory
from searchgym.util.text import normalize_answer

# Optional per-token log-probs of the reference policy for the sampled tokens, stored by the rollout code
# in Trajectory.meta; when present (and aligned with token_logprobs) the KL meters are computed.
REF_LOGPROBS_KEY = "ref_token_logprobs"

CALLS_FRAC = "search/calls_frac_"  # + k: share of episodes with exactly k tool calls
CLUSTERS = ("strategy", "signature", "answer")  # what the cluster meters group the n samples by


def example(sample: int = 0, **fields) -> Trajectory:
    """A trajectory for the doctests: one ``S A`` episode answering "x", with ``fields`` overriding.

    >>> example(answer="Paris").num_tool_calls
    2
    """
    base = dict(task_id="q", env_id="e", sample=sample, question="?", messages=[], signature="S A",
                calls=[{"name": "search", "valid": True}, {"name": "answer", "valid": True}], strategy="direct",
                queries=["q"], docs_retrieved=[], docs_opened=[], answer="x", reward=1.0, correct=True,
                gold_answers=["x"], evidence=[["d1"]], difficulty=1)
    return Trajectory(**(base | fields))


def normalise_answer(answer: str | None) -> str:
    """The cluster key of a final answer: the reward's normal form (`util.text.normalize_answer`: case,
    accents, punctuation, articles and spacing removed), so answers exact match scores alike are one cluster.

    >>> normalise_answer(" Paris! "), normalise_answer("the Lomé"), normalise_answer(None)
    ('paris', 'lome', '<no answer>')
    """
    if answer is None:
        return "<no answer>"
    return normalize_answer(answer) or "<empty>"


def trajectory_text(t: Trajectory) -> str:
    """What the agent generated: its assistant messages (content and tool calls), for the text meters.

    Falls back to the queries and answer when the record carries no assistant messages.
    """
    parts = []
    for m in t.messages:
        if m.get("role") != "assistant":
            continue
        if isinstance(m.get("content"), str):
            parts.append(m["content"])
        if m.get("tool_calls"):
            parts.append(json.dumps(m["tool_calls"], ensure_ascii=False, sort_keys=True))
    if not parts:
        parts = list(t.queries) + ([t.answer] if t.answer else [])
    return "\n".join(parts)


def reward_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """``reward/success`` (c/n), ``reward/mean``, ``reward/std`` within the group and ``reward/zero_var_frac``
    (1 when all n rewards are equal: GRPO gets no gradient from the group).

    >>> reward_meters([example(reward=1.0), example(reward=0.0, correct=False)])
    {'reward/success': 0.5, 'reward/mean': 0.5, 'reward/std': 0.5, 'reward/zero_var_frac': 0.0}
    """
    rewards = [t.reward for t in group]
    return {"reward/success": sum(bool(t.correct) for t in group) / len(group),
            "reward/mean": float(np.mean(rewards)), "reward/std": reward_std(rewards),
            "reward/zero_var_frac": float(is_zero_variance(rewards))}


def passk_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """Unbiased ``passk/pass@k`` and ``passk/pass^k`` (all k correct: reliability) on the k ladder of n.

    >>> passk_meters([example(correct=True), example(correct=False)])
    {'passk/pass@1': 0.5, 'passk/pass@2': 1.0, 'passk/pass^1': 0.5, 'passk/pass^2': 0.0}
    """
    n, c = len(group), sum(bool(t.correct) for t in group)
    out = {f"passk/pass@{k}": pass_at_k(n, c, k) for k in k_ladder(n)}
    return out | {f"passk/pass^{k}": pass_hat_k(n, c, k) for k in k_ladder(n)}


def cluster_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """``diversity/{cluster}_{distinct,entropy,entropy_mm,entropy_jk,max_share}`` over the samples clustered
    by strategy label, action signature and normalised answer; a world without strategy labels gets NaN, not
    one cluster. ``diversity/strategy_entropy_jk`` (jackknife) is the report's strategy entropy.

    >>> m = cluster_meters([example(answer="Paris"), example(answer="paris!", strategy="bridge")])
    >>> m["diversity/answer_distinct"], m["diversity/strategy_distinct"], m["diversity/signature_max_share"]
    (1.0, 2.0, 1.0)
    >>> round(m["diversity/strategy_entropy_jk"], 4)  # 2 log 2 - (1/2)(0 + 0)
    1.3863
    """
    strategies = [t.strategy for t in group]
    labels = {"signature": [t.signature for t in group], "answer": [normalise_answer(t.answer) for t in group]}
    if any(s is not None for s in strategies):
        labels["strategy"] = [s if s is not None else "<none>" for s in strategies]
    return {f"diversity/{name}_{stat}": value for name in CLUSTERS
            for stat, value in cluster_stats(labels.get(name, [])).items()}


def text_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """Surface diversity of the generated text (`trajectory_text`): distinct-1/2, self-BLEU, n-gram Vendi.

    >>> text_meters([example(queries=["a b"]), example(queries=["a b"])])["diversity/vendi"]
    1.0
    """
    texts = [trajectory_text(t) for t in group]
    return {"diversity/distinct_1": distinct_n(texts, 1), "diversity/distinct_2": distinct_n(texts, 2),
            "diversity/self_bleu": self_bleu(texts), "diversity/vendi": vendi_ngram(texts)}


def call_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """Tool calls per episode (``search/calls_{mean,distinct,entropy,entropy_mm,mode_share}``), the
    distribution itself (``search/calls_frac_k``) and the share of invalid calls.

    >>> m = call_meters([example(), example(calls=[{"name": "search", "valid": False}])])
    >>> m["search/calls_mean"], m["search/calls_frac_1"], m["search/calls_frac_2"], m["search/invalid_frac"]
    (1.5, 0.5, 0.5, 0.3333333333333333)
    """
    counts = [t.num_tool_calls for t in group]
    out = {f"search/calls_{stat}": value for stat, value in call_count_stats(counts).items()}
    for count in sorted(set(counts)):  # the distribution itself, not just its entropy
        out[f"{CALLS_FRAC}{count}"] = counts.count(count) / len(group)
    all_calls = [call for t in group for call in t.calls]
    out["search/invalid_frac"] = (sum(not call.get("valid", True) for call in all_calls) / len(all_calls)
                                  if all_calls else math.nan)
    return out


def retrieval_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """What the samples searched and read: query redundancy (within an episode) and breadth (across the n),
    distinct documents retrieved / opened, and the share of a gold evidence chain seen (per sample, pooled).

    >>> m = retrieval_meters([example(docs_retrieved=["d1", "d2"]), example(docs_retrieved=["d2"])])
    >>> m["search/unique_docs"], m["search/evidence_coverage"], m["search/evidence_coverage_pooled"]
    (2.0, 0.5, 1.0)
    """
    seen = [set(t.docs_retrieved) | set(t.docs_opened) for t in group]
    evidence = group[0].evidence
    return {"search/query_redundancy": nanmean([query_redundancy(t.queries) for t in group]),
            "search/query_breadth": query_breadth([t.queries for t in group]),
            "search/unique_docs": float(unique_docs([t.docs_retrieved for t in group])),
            "search/unique_opened": float(unique_docs([t.docs_opened for t in group])),
            "search/evidence_coverage": nanmean([evidence_coverage(s, evidence) for s in seen]),
            "search/evidence_coverage_pooled": evidence_coverage(set().union(*seen), evidence)}


def token_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """Token entropy pooled over the tokens of all n samples, split by role, and the sequence entropy;
    NaN for scripted demonstrations (no token data).

    >>> m = token_meters([example(token_entropies=[1.0, 2.0], token_roles=["query", "answer"])])
    >>> m["entropy/token"], m["entropy/token_answer"], m["entropy/sequence"]
    (1.5, 2.0, nan)
    """
    out = {"entropy/token": mean_token_entropy([e for t in group for e in t.token_entropies])}
    aligned = [t for t in group if len(t.token_roles) == len(t.token_entropies)]
    roles = role_split_entropy([e for t in aligned for e in t.token_entropies],
                               [r for t in aligned for r in t.token_roles])
    out |= {f"entropy/token_{role}": roles[role] for role in TOKEN_ROLES}
    out["entropy/sequence"], out["entropy/sequence_per_token"] = sequence_entropy(
        [t.token_logprobs for t in group])
    return out


def kl_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """``kl/k1`` and ``kl/k3`` per token against the reference policy's log-probs (``meta[REF_LOGPROBS_KEY]``,
    aligned with ``token_logprobs``); NaN without them.

    >>> kl_meters([example(token_logprobs=[-1.0], meta={REF_LOGPROBS_KEY: [-2.0]})])
    {'kl/k1': 1.0, 'kl/k3': 0.36787944117144233}
    """
    pairs = [(t.token_logprobs, t.meta.get(REF_LOGPROBS_KEY)) for t in group]
    pairs = [(p, q) for p, q in pairs if p and q is not None and len(q) == len(p)]
    if not pairs:
        return {"kl/k1": math.nan, "kl/k3": math.nan}
    return {name: float(np.mean(np.concatenate([f(p, q) for p, q in pairs])))
            for name, f in (("kl/k1", kl_k1), ("kl/k3", kl_k3))}
