"""Every meter over a list of trajectories: per question at a fixed n, then averaged over questions.

Trajectories are grouped by ``task_id``; each group must hold the same number n of samples (or the first
``samples`` of each are used), because most meters grow with n. The result is one flat dict of
namespaced keys ("diversity/strategy_entropy_mm", "search/calls_mean", "passk/pass@4" ...), ready for a
table, a JSON file or a training logger. Token meters are NaN for trajectories without token data.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

from searchgym.meters.diversity import cluster_stats, distinct_n, self_bleu, vendi_ngram
from searchgym.meters.entropy import kl_k1, kl_k3, mean_token_entropy, role_split_entropy, sequence_entropy
from searchgym.meters.literature import cross_input_accuracy, depth_adaptivity, question_retrieval_credit
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

# Optional per-token log-probs of the reference policy for the sampled tokens, stored by the rollout code
# in Trajectory.meta; when present (and aligned with token_logprobs) the KL meters are computed.
REF_LOGPROBS_KEY = "ref_token_logprobs"

CALLS_FRAC = "search/calls_frac_"  # + k: share of episodes with exactly k tool calls

# Meters that get a bootstrap CI in reports (the headline numbers).
MAIN_KEYS = ("reward/success", "passk/pass@1", "diversity/strategy_entropy_mm", "diversity/signature_entropy_mm",
             "diversity/answer_distinct", "diversity/vendi", "search/calls_mean", "search/query_breadth",
             "search/unique_docs", "entropy/token")


def group_by_task(trajectories: Iterable[Trajectory], samples: int | None = None) -> tuple[dict[str, list], int]:
    """Group trajectories by task (each group ordered by ``sample``) and fix n.

    With ``samples`` the first ``samples`` of each task are kept and a task with fewer is an error;
    without it every task must already have the same n.

    >>> t = lambda q, i: Trajectory(q, "e", i, "?", [], [], "A", None, [], [], [], "x", 1.0, True, [], [], 1)
    >>> groups, n = group_by_task([t("q1", 1), t("q1", 0), t("q2", 0), t("q2", 1), t("q2", 2)], samples=2)
    >>> n, [x.sample for x in groups["q2"]]
    (2, [0, 1])
    """
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajectories:
        groups[t.task_id].append(t)
    if not groups:
        raise ValueError("no trajectories to meter; check that the input file is not empty")
    for g in groups.values():
        g.sort(key=lambda t: t.sample)
    sizes = {q: len(g) for q, g in groups.items()}
    if samples is not None:
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        short = sorted(q for q, size in sizes.items() if size < samples)
        if short:
            raise ValueError(f"{len(short)} task(s) have fewer than {samples} samples (e.g. {short[:5]}, "
                             f"smallest has {min(sizes.values())}); pass --samples {min(sizes.values())} "
                             "or sample more")
        return {q: g[:samples] for q, g in groups.items()}, samples
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        raise ValueError(f"tasks have different numbers of samples {distinct}; meters must be computed at a "
                         f"fixed n: pass --samples {distinct[0]} to use the first {distinct[0]} of each")
    return dict(groups), distinct[0]


def _normalise_answer(answer: str | None) -> str:
    """The cluster key of a final answer: case, punctuation and spacing do not make answers distinct."""
    if answer is None:
        return "<no answer>"
    return " ".join(re.findall(r"\w+", answer.lower())) or "<empty>"


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


def question_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """All per-question meters of one task's n samples (flat namespaced dict of floats, NaN = n/a)."""
    n = len(group)
    out: dict[str, float] = {}

    # 1. Reward and pass@k.
    rewards = [t.reward for t in group]
    c = sum(bool(t.correct) for t in group)
    out["reward/success"] = c / n
    out["reward/mean"] = float(np.mean(rewards))
    out["reward/std"] = reward_std(rewards)
    out["reward/zero_var_frac"] = float(is_zero_variance(rewards))
    for k in k_ladder(n):
        out[f"passk/pass@{k}"] = pass_at_k(n, c, k)
    for k in k_ladder(n):  # all k correct: the reliability side of the same samples
        out[f"passk/pass^{k}"] = pass_hat_k(n, c, k)

    # 2. Cluster meters: strategy label, action signature, final answer.
    strategies = [t.strategy for t in group]
    labels = {"signature": [t.signature for t in group], "answer": [_normalise_answer(t.answer) for t in group]}
    if any(s is not None for s in strategies):  # a world without strategy labels gets NaN, not one cluster
        labels["strategy"] = [s if s is not None else "<none>" for s in strategies]
    for name in ("strategy", "signature", "answer"):
        stats = cluster_stats(labels.get(name, []))
        for stat, value in stats.items():
            out[f"diversity/{name}_{stat}"] = value

    # 3. Surface diversity of the generated text.
    texts = [trajectory_text(t) for t in group]
    out["diversity/distinct_1"] = distinct_n(texts, 1)
    out["diversity/distinct_2"] = distinct_n(texts, 2)
    out["diversity/self_bleu"] = self_bleu(texts)
    out["diversity/vendi"] = vendi_ngram(texts)

    # 4. Search behaviour.
    calls = call_count_stats([t.num_tool_calls for t in group])
    for stat, value in calls.items():
        out[f"search/calls_{stat}"] = value
    for count in sorted({t.num_tool_calls for t in group}):  # the distribution itself, not just its entropy
        out[f"{CALLS_FRAC}{count}"] = sum(t.num_tool_calls == count for t in group) / n
    all_calls = [call for t in group for call in t.calls]
    out["search/invalid_frac"] = (sum(not call.get("valid", True) for call in all_calls) / len(all_calls)
                                  if all_calls else math.nan)
    out["search/query_redundancy"] = nanmean([query_redundancy(t.queries) for t in group])
    out["search/query_breadth"] = query_breadth([t.queries for t in group])
    out["search/unique_docs"] = float(unique_docs([t.docs_retrieved for t in group]))
    out["search/unique_opened"] = float(unique_docs([t.docs_opened for t in group]))
    seen = [set(t.docs_retrieved) | set(t.docs_opened) for t in group]
    evidence = group[0].evidence
    out["search/evidence_coverage"] = nanmean([evidence_coverage(s, evidence) for s in seen])
    out["search/evidence_coverage_pooled"] = evidence_coverage(set().union(*seen), evidence)

    # 5. Token meters: pooled over the tokens of all n samples; NaN for scripted demonstrations.
    entropies = [e for t in group for e in t.token_entropies]
    out["entropy/token"] = mean_token_entropy(entropies)
    aligned = [t for t in group if len(t.token_roles) == len(t.token_entropies)]
    roles = role_split_entropy([e for t in aligned for e in t.token_entropies],
                               [r for t in aligned for r in t.token_roles])
    for role in TOKEN_ROLES:
        out[f"entropy/token_{role}"] = roles[role]
    out["entropy/sequence"], out["entropy/sequence_per_token"] = sequence_entropy([t.token_logprobs for t in group])
    pairs = [(t.token_logprobs, t.meta.get(REF_LOGPROBS_KEY)) for t in group]
    pairs = [(p, q) for p, q in pairs if p and q is not None and len(q) == len(p)]
    out["kl/k1"] = float(np.mean(np.concatenate([kl_k1(p, q) for p, q in pairs]))) if pairs else math.nan
    out["kl/k3"] = float(np.mean(np.concatenate([kl_k3(p, q) for p, q in pairs]))) if pairs else math.nan
    return out


def cross_input_meters(groups: dict[str, list[Trajectory]]) -> dict[str, dict[str, float]]:
    """Template collapse per question: the share of its n trajectories whose text retrieves its own question
    among all the batch's questions (`question_retrieval_credit`), with the chance level 1/B and the lift
    over chance; averaged over questions these are `cross_input_accuracy` of the whole batch (equal n)."""
    questions = {q: g[0].question for q, g in groups.items()}
    if len(questions) < 2:
        return {q: cross_input_accuracy([], [], questions) for q in groups}
    chance = 1.0 / len(questions)
    out = {}
    for q, g in groups.items():
        acc = float(question_retrieval_credit([trajectory_text(t) for t in g], [q] * len(g), questions).mean())
        out[q] = {"diversity/cross_input": acc, "diversity/cross_input_chance": chance,
                  "diversity/cross_input_lift": (acc - chance) / (1.0 - chance)}
    return out


def per_question(trajectories: Iterable[Trajectory], samples: int | None = None
                 ) -> tuple[dict[str, dict[str, float]], dict[str, int], int]:
    """Per-question meters: ({task_id: meters}, {task_id: difficulty}, n)."""
    groups, n = group_by_task(trajectories, samples)
    cross = cross_input_meters(groups)
    meters = {q: question_meters(g) | cross[q] for q, g in sorted(groups.items())}
    return meters, {q: int(g[0].difficulty) for q, g in groups.items()}, n


def average(meters: dict[str, dict[str, float]], difficulty: dict[str, int], n: int) -> dict[str, float]:
    """Average per-question meters over questions, plus reward meters stratified by difficulty and the
    depth adaptivity of search (``search/depth_adaptivity``: Spearman's rho of per-question mean tool calls
    against hops, with ``_lo``/``_hi`` from a bootstrap over questions; NaN with one difficulty level)."""
    keys = sorted({k for m in meters.values() for k in m})
    out: dict[str, float] = {"meta/n": float(n), "meta/questions": float(len(meters))}
    for k in keys:
        missing = 0.0 if k.startswith(CALLS_FRAC) else math.nan  # a count no sample made has share 0
        out[k] = nanmean([m.get(k, missing) for m in meters.values()])
    for d in sorted(set(difficulty.values())):
        qs = [q for q in meters if difficulty[q] == d]
        for k in ("reward/success", "reward/std", "reward/zero_var_frac"):
            out[f"{k}_d{d}"] = nanmean([meters[q][k] for q in qs])
    qs = sorted(meters)  # one (mean calls, hops) pair per question: the CI is a bootstrap over questions
    out.update(depth_adaptivity([meters[q].get("search/calls_mean", math.nan) for q in qs],
                                [difficulty.get(q, math.nan) for q in qs]))
    return out


def aggregate(trajectories: Iterable[Trajectory], samples: int | None = None) -> dict[str, float]:
    """Compute every meter over trajectories grouped by task at a fixed n, averaged over questions.

    ``meta/n`` is the n used and ``meta/questions`` the number of tasks; ``reward/std`` is the reward
    spread (mean within-group std) and ``*_d{k}`` keys are stratified by difficulty k. Beside pass@k
    (``passk/pass@k``) come pass^k (``passk/pass^k``, all k samples correct), the template-collapse score
    (``diversity/cross_input``, its ``_chance`` and ``_lift``) and ``search/depth_adaptivity``.
    """
    meters, difficulty, n = per_question(trajectories, samples)
    return average(meters, difficulty, n)
