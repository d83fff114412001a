"""Demonstration sets for SFT: scripted demonstrators played through the env, as chat conversations.

Two sets answer one question — does the diversity of demonstrations decide how much an agent explores?
Both use the SAME train questions and the SAME number of demonstrations (same information budget):
"diverse" cycles round-robin through every (strategy, query style) pair valid for each question,
"narrow" repeats one strategy in one style. Only demos that answer correctly (and that the world's
classifier labels as the strategy they demonstrate) are kept.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import gymnasium

from searchgym.envs.scripted_play import honest_demo
from searchgym.envs.tools import SearchTools
from searchgym.meters.entropy import plugin_entropy
from searchgym.trajectory import Trajectory, write_trajectories
from searchgym.util.files import atomic_write

KINDS = ("diverse", "narrow")


def diverse_pairs(strategies: Sequence[str], styles: Sequence[str]) -> list[tuple[str, str]]:
    """Every (strategy, style) pair, ordered so that neighbours differ in strategy: a round-robin
    cursor then spreads a question's few demos over different strategies first.

    >>> diverse_pairs(["forward", "snippet"], ["keyword", "natural"])
    [('forward', 'keyword'), ('snippet', 'keyword'), ('forward', 'natural'), ('snippet', 'natural')]
    """
    return [(s, y) for y in styles for s in strategies]


def strategy_entropy(trajectories: Sequence[Trajectory]) -> float:
    """Plug-in entropy (nats) of the demonstrated strategy labels of a set.

    >>> t = lambda s: Trajectory("q", "e", 0, "?", [], [], "A", s, [], [], [], "x", 1.0, True, [], [], 1)
    >>> strategy_entropy([t("forward")] * 4), round(strategy_entropy([t("forward"), t("snippet")]), 4)
    (0.0, 0.6931)
    """
    return plugin_entropy([t.meta.get("demo_strategy", t.strategy) for t in trajectories])


def build_demo_sets(env_id: str, *, num_questions: int, demos_per_question: int, seed: int,
                    narrow_strategy: str, narrow_style: str = "", env_kwargs: dict | None = None,
                    ) -> dict[str, list[Trajectory]]:
    """Both demo sets over the same questions: ``{"diverse": [...], "narrow": [...]}``.

    Questions are the env's train tasks where ``narrow_strategy`` is valid, in a seeded order; a question
    is kept only when its narrow demo and all ``demos_per_question`` diverse demos succeed (a failing
    diverse pair is replaced by the next pair), so both sets keep equal question lists and sizes.
    """
    if num_questions < 1 or demos_per_question < 1:
        raise ValueError("sft.num_questions and sft.demos_per_question must be >= 1")
    env = gymnasium.make(env_id, **{**(env_kwargs or {}), "split": "train"})
    base = env.unwrapped
    world = base.taskset
    if not world.strategies:
        raise ValueError(f"{env_id}: world {world.name!r} has no strategies or demonstrators, so it cannot "
                         "make SFT demos; use searchgym/SyntheticWorld-Easy-v0 (or a world that has them)")
    style = narrow_style or world.query_styles[0]
    if narrow_strategy not in world.strategies:
        raise ValueError(f"sft.narrow_strategy: {narrow_strategy!r} is not a strategy of {world.name}; "
                         f"choose one of {list(world.strategies)}")
    if style not in world.query_styles:
        raise ValueError(f"sft.narrow_style: {style!r} is not a query style of {world.name}; "
                         f"choose one of {list(world.query_styles)}")

    candidates = [t for t in base.tasks if narrow_strategy in t.strategies]
    random.Random(seed).shuffle(candidates)
    cache: dict[tuple[str, str, str], Trajectory | None] = {}

    def demo(task, strategy: str, style: str) -> Trajectory | None:
        """Play one demonstrator (deterministic, so memoised); None unless correct and honestly labelled."""
        key = (task.id, strategy, style)
        if key not in cache:
            cache[key] = honest_demo(env, strategy, style, task_id=task.id)
        return cache[key]

    sets: dict[str, list[Trajectory]] = {"diverse": [], "narrow": []}
    cursor = 0  # global round-robin position, so the mix is uniform over the whole set
    for task in candidates:
        if len(sets["narrow"]) >= num_questions * demos_per_question:
            break
        narrow = demo(task, narrow_strategy, style)
        if narrow is None:  # dropped from BOTH sets: they must share questions
            continue
        pairs = diverse_pairs([s for s in world.strategies if s in task.strategies], world.query_styles)
        order = pairs[cursor % len(pairs):] + pairs[: cursor % len(pairs)]
        good: list[Trajectory] = []
        for s, y in order:  # lazily: stop at the first demos_per_question successes
            if len(good) == demos_per_question:
                break
            if (d := demo(task, s, y)) is not None:
                good.append(d)
        if not good:
            continue
        cursor += demos_per_question
        for j in range(demos_per_question):  # repeats only when fewer pairs succeed than demos wanted
            sets["diverse"].append(_copy(good[j % len(good)], sample=j))
            sets["narrow"].append(_copy(narrow, sample=j))
    env.close()
    if not sets["narrow"]:
        raise ValueError(f"no train question of {env_id} yielded a correct {narrow_strategy}/{style} demo; "
                         "pick another sft.narrow_strategy or check the env kwargs")
    return sets


def build_demos(env_id: str, kind: str, *, num_questions: int, demos_per_question: int, seed: int,
                narrow_strategy: str, narrow_style: str = "", env_kwargs: dict | None = None) -> list[Trajectory]:
    """One demo set, ``kind`` = "diverse" or "narrow" (built alongside the other; see `build_demo_sets`)."""
    if kind not in KINDS:
        raise ValueError(f"demo kind must be one of {KINDS}, got {kind!r}")
    return build_demo_sets(env_id, num_questions=num_questions, demos_per_question=demos_per_question, seed=seed,
                           narrow_strategy=narrow_strategy, narrow_style=narrow_style,
                           env_kwargs=env_kwargs)[kind]


def _copy(t: Trajectory, sample: int) -> Trajectory:
    return Trajectory.from_json({**json.loads(json.dumps(t.to_json())), "sample": sample})


def to_dataset(trajectories: Sequence[Trajectory]):
    """SFT rows ``{"messages", "tools", "strategy", "style", "task_id"}`` as a `datasets.Dataset`.

    Messages are stored as JSON per message ("use_json"), so each tool call keeps exactly its own
    arguments: a merged struct would add ``null`` fields that the chat template would then render.
    """
    from datasets import Dataset

    tools = SearchTools.schemas()
    rows = [{"messages": t.messages, "tools": tools, "strategy": t.meta.get("demo_strategy") or t.strategy,
             "style": t.meta.get("demo_style") or "", "task_id": t.task_id} for t in trajectories]
    return Dataset.from_list(rows, on_mixed_types="use_json")


def demo_stats(trajectories: Sequence[Trajectory]) -> dict:
    """Size and mix of a demo set: counts, strategy/style shares, strategy entropy, mean tool calls."""
    n = max(len(trajectories), 1)
    strategies = Counter(t.meta.get("demo_strategy", t.strategy) for t in trajectories)
    styles = Counter(t.meta.get("demo_style") for t in trajectories)
    return {"demos": len(trajectories), "questions": len({t.task_id for t in trajectories}),
            "strategy_entropy": strategy_entropy(trajectories) if trajectories else float("nan"),
            "strategy_share": {k: v / n for k, v in sorted(strategies.items())},
            "style_share": {k: v / n for k, v in sorted(styles.items())},
            "mean_tool_calls": sum(t.num_tool_calls for t in trajectories) / n}


def save_demo_sets(sets: dict[str, list[Trajectory]], folder: str | Path) -> dict[str, dict]:
    """Write each set as ``<kind>.jsonl`` (trajectories, for `searchgym meter`) and ``<kind>/`` (the SFT
    dataset, `Dataset.save_to_disk`), plus ``stats.json``; return the stats."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stats = {}
    for kind, trajectories in sets.items():
        write_trajectories(folder / f"{kind}.jsonl", trajectories)
        to_dataset(trajectories).save_to_disk(str(folder / kind))
        stats[kind] = demo_stats(trajectories)
    atomic_write(folder / "stats.json", json.dumps(stats, indent=2).encode("utf-8"))
    return stats
