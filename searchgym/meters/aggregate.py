"""Every meter over a list of trajectories: per question at a fixed n, then averaged over questions.

Trajectories are grouped by ``task_id``; each group must hold the same number n of samples (or the first
``samples`` of each are used), because most meters grow with n. The result is one flat dict of
namespaced keys ("diversity/strategy_entropy_mm", "search/calls_mean", "passk/pass@4" ...), ready for a
table, a JSON file or a training logger. Token meters are NaN for trajectories without token data. Every
key is a row of the table of meters (`searchgym.meters.table.METERS`): `question_meters` runs its
per-question families, `cross_input_meters` and `average` add its batch rows.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence

import searchgym.meters.table as table
from searchgym.meters.families import REF_LOGPROBS_KEY, trajectory_text
from searchgym.meters.literature import cross_input_accuracy, depth_adaptivity, question_retrieval_credit
from searchgym.meters.reward import nanmean
from searchgym.meters.table import MAIN_KEYS
from searchgym.trajectory import Trajectory

__all__ = ["MAIN_KEYS", "REF_LOGPROBS_KEY", "aggregate", "average", "cross_input_meters", "group_by_task",
           "per_question", "question_meters", "trajectory_text"]


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


def question_meters(group: Sequence[Trajectory]) -> dict[str, float]:
    """All per-question meters of one task's n samples (flat namespaced dict of floats, NaN = n/a): the
    dicts of the table's per-question families (`searchgym.meters.table.families`), merged in table order.

    >>> from searchgym.meters.families import example
    >>> m = question_meters([example(), example(sample=1, correct=False, reward=0.0)])
    >>> m["reward/success"], m["passk/pass@2"], m["search/calls_mean"]
    (0.5, 1.0, 2.0)
    """
    out: dict[str, float] = {}
    for compute in table.families():
        out |= compute(group)
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
        missing = table.missing(k)  # NaN: left out; 0 for a tool-call count no sample made
        out[k] = nanmean([m.get(k, missing) for m in meters.values()])
    for d in sorted(set(difficulty.values())):
        qs = [q for q in meters if difficulty[q] == d]
        for k in table.difficulty_keys():
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
