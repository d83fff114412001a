"""Exploration rewards for GRPO, gym-side: reward terms the search-agent literature adds and TRL lacks.

Each term is a pure function of what an episode recorded (`searchgym.envs.tools.EpisodeState`: queries, the
documents search showed, the documents opened, the answer) and `reward_terms` turns the ones a recipe
weights into TRL reward functions, so TRL logs each one's mean as ``rewards/<term>/mean`` (what was paid
for) beside the env's own reward. Weights live in ``[grpo]`` (docs/countermeasures.md):

* ``novelty_reward``: per distinct query and per distinct document opened (count-based exploration bonus);
* ``redundancy_penalty``: per repeated query and per re-opened document (StepSearch's redundancy penalty);
* ``evidence_reward``: the share of a gold evidence chain the episode surfaced (StepSearch's information
  gain, read from the world's known evidence; 0 where a task has none);
* ``rare_answer_reward``: how rare the rollout's answer is among its group, and optionally among every
  answer given to the same question before (outcome-based exploration, 2025).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from searchgym.util.text import normalize_answer


def novelty(queries: Sequence[str], opened: Sequence[str]) -> int:
    """Distinct queries (compared normalised) plus distinct documents opened.

    >>> novelty(["Capital of Togo", "capital of togo!", "Lome mayor"], ["d1", "d1", "d2"])
    4
    >>> novelty([], [])
    0
    """
    return len({normalize_answer(q) for q in queries}) + len(set(opened))


def redundancy(queries: Sequence[str], opened: Sequence[str]) -> int:
    """Repeated queries (compared normalised) plus re-opened documents: what `novelty` does not count.

    >>> redundancy(["Capital of Togo", "capital of togo!", "Lome mayor"], ["d1", "d1", "d2"])
    2
    """
    return len(queries) + len(opened) - novelty(queries, opened)


def evidence_gain(chains: Sequence[Sequence[str]], shown: Sequence[str], opened: Sequence[str]) -> float:
    """The largest share of one gold evidence chain among the documents search showed or the agent opened
    (a question is solvable from any one chain); 0 without chains.

    >>> evidence_gain([("d1", "d2"), ("d3",)], shown=["d1", "d9"], opened=[])
    0.5
    >>> evidence_gain([("d1", "d2"), ("d3",)], shown=["d9"], opened=["d3"])
    1.0
    >>> evidence_gain([], shown=["d1"], opened=["d1"])
    0.0
    """
    seen = set(shown) | set(opened)
    return max((sum(d in seen for d in chain) / len(chain) for chain in chains if chain), default=0.0)


def answer_rarity(answers: Sequence[str | None], groups: Sequence[str],
                  history: dict[str, Counter] | None = None) -> list[float]:
    """For each rollout, 1 minus the share of the answers to its question (its group in this batch, plus
    ``history[group]`` when given) that equal its own, compared normalised; 0 for a rollout that gave no
    answer. Unique answers in a group of 4 score 0.75, an answer all four gave scores 0.

    >>> answer_rarity(["Lome", "lomé", "Accra", None], ["q1"] * 4)
    [0.5, 0.5, 0.75, 0.0]
    >>> answer_rarity(["Accra", "Lome"], ["q1", "q1"], history={"q1": Counter({"lome": 2})})
    [0.75, 0.25]
    """
    normalised = [normalize_answer(a) if a is not None else None for a in answers]
    counts: dict[str, Counter] = {}
    for group, answer in zip(groups, normalised):
        counts.setdefault(group, Counter())
        if answer is not None:
            counts[group][answer] += 1
    rarity = []
    for group, answer in zip(groups, normalised):
        if answer is None:
            rarity.append(0.0)
            continue
        pool = counts[group] + (history or {}).get(group, Counter())
        size = sum(groups_ == group for groups_ in groups) + sum((history or {}).get(group, Counter()).values())
        rarity.append(1.0 - pool[answer] / size)
    return rarity


def reward_terms(settings) -> tuple[list, list[float]]:
    """TRL reward functions and their weights for the exploration terms ``settings`` (a recipe's
    GRPOSettings) gives a non-zero weight; empty when none. Each reads the rollouts' envs (``environments``)."""
    funcs, weights = [], []

    def add(weight: float, func) -> None:
        if weight:
            funcs.append(func)
            weights.append(weight)

    def novelty_reward(environments, **kwargs) -> list[float]:
        return [float(novelty(e.state.queries, e.state.opened)) for e in environments]

    def redundancy_penalty(environments, **kwargs) -> list[float]:
        return [float(redundancy(e.state.queries, e.state.opened)) for e in environments]

    def evidence_reward(environments, **kwargs) -> list[float]:
        return [evidence_gain(e.task.evidence if e.task else (), e.state.shown, e.state.opened)
                for e in environments]

    history: dict[str, Counter] = {}

    def rare_answer_reward(environments, **kwargs) -> list[float]:
        groups = [e.task.id if e.task else "" for e in environments]
        answers = [e.state.answer for e in environments]
        rarity = answer_rarity(answers, groups, history if settings.rare_answer_history else None)
        if settings.rare_answer_history:  # this batch joins the history after it is scored against it
            for group, answer in zip(groups, answers):
                if answer is not None:
                    history.setdefault(group, Counter())[normalize_answer(answer)] += 1
        return rarity

    add(settings.novelty_reward, novelty_reward)
    add(-settings.redundancy_penalty, redundancy_penalty)
    add(settings.evidence_reward, evidence_reward)
    add(settings.rare_answer_reward, rare_answer_reward)
    return funcs, weights
