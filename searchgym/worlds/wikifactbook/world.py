"""WikiFactbook: verified multi-hop questions over Wikipedia leads + CIA World Factbook passages.

The question set (templates, verification, the versioned file and its cache) is built in
`searchgym.worlds.wikifactbook.questions` from the extractors in `searchgym.worlds.wikifactbook.extract`;
this module is the world: the task set, the strategy classifier and the scripted demonstrators.
``python -m searchgym.worlds.wikifactbook [PATH]`` regenerates the question set
(`searchgym.worlds.wikifactbook.questions.main`, run by the package's ``__main__``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.sources import load_source
from searchgym.tasks import Step, Task, ToolCall
from searchgym.util.text import normalize_answer
from searchgym.worlds.wikifactbook.extract import contains
from searchgym.worlds.wikifactbook.questions import DEFAULT_QUESTIONS, TEST_FRACTION, question_set, split_of

STRATEGIES = ("forward", "question_first", "wiki_bridge")
QUERY_STYLES = ("keyword", "natural")
MAX_CALLS = 12  # demonstrators answer at the latest on this call
UNKNOWN = "unknown"  # what a demonstrator answers when it never reached the answer passage


# == Strategies: classifier and demonstrators =========================================================
def classify_strategy(task: Task, calls: Sequence[ToolCall]) -> str:
    """Deterministic label of an action trace, first rule that fires:

    1. ``wiki_bridge``: it opened a Wikipedia article (``wiki:`` id) before answering;
    2. ``question_first``: its first search already asks for the final attribute (a target term);
    3. ``forward``: its first search names the bridge entity (the capital, or the bordered country);
    4. ``other``.
    """
    opened = [c.arguments.get("doc_id", "") for c in calls if c.name == "open"]
    queries = [str(c.arguments.get("query", "")) for c in calls if c.name == "search"]
    if any(str(d).startswith("wiki:") for d in opened):
        return "wiki_bridge"
    if not queries:
        return "other"
    words = set(normalize_answer(queries[0]).split())
    if words & set(task.meta.get("target_terms", ())):
        return "question_first"
    if contains(queries[0], task.meta.get("bridge", "")):
        return "forward"
    return "other"


@dataclass(frozen=True)
class FactbookDemonstrator:
    """Scripted policy: search for the next unread hop, open its passage once a search shows it,
    reformulate when it does not show, answer once every hop is read (``"unknown"`` if it gives up)."""

    strategy: str
    style: str
    max_calls: int = MAX_CALLS

    def __call__(self, task: Task, history: Sequence[Step]) -> ToolCall:
        hops = list(task.meta["hops"])
        if self.strategy == "wiki_bridge":
            if not task.meta.get("wiki_hop"):
                raise ValueError(f"task {task.id} has no wiki_bridge solution; pick a strategy from task.strategies")
            hops = [task.meta["wiki_hop"], hops[-1]]
        searched = {s.call.arguments.get("query") for s in history if s.call.name == "search"}
        opened = {s.call.arguments.get("doc_id") for s in history if s.call.name == "open" and not s.error}
        seen = {d for s in history for d in s.shown}
        if len(history) >= self.max_calls - 1:
            return _answer(task if all(h["doc"] in opened for h in hops) else None)
        if self.strategy == "question_first" and not searched:
            return ToolCall("search", {"query": task.question if self.style == "natural" else task.meta["question_keyword"]})
        for hop in hops:
            if hop["doc"] in opened:
                continue
            if hop["doc"] in seen:
                return ToolCall("open", {"doc_id": hop["doc"]})
            for query in hop[self.style]:
                if query not in searched:
                    return ToolCall("search", {"query": query})
            return _answer(None)  # every reformulation failed to surface this hop
        return _answer(task)


def _answer(task: Task | None) -> ToolCall:
    return ToolCall("answer", {"text": task.answers[0] if task else UNKNOWN})


# == The task set =====================================================================================
class WikiFactbook:
    """Wikipedia leads + Factbook passages indexed together, with the verified question set.

    Args:
        split_seed: which countries are held out for test (~20%, whole countries at a time).
        questions_path: the versioned question file (default: the one a checkout ships). When it is absent,
            or stale (with a warning: its versions differ from the installed packages, or its evidence is not
            in the corpus), the set is read from the user cache, or generated and cached there
            (`searchgym.worlds.wikifactbook.questions.question_set`); None: generated in memory only.
        documents: the corpus documents (default: ``load_source("wikifactbook")``).
    """

    name = "wikifactbook"
    strategies = STRATEGIES
    query_styles = QUERY_STYLES

    def __init__(self, split_seed: int = 0, *, questions_path: str | Path | None = DEFAULT_QUESTIONS,
                 documents: Sequence[Document] | None = None, test_fraction: float = TEST_FRACTION):
        documents = list(documents) if documents is not None else load_source("wikifactbook")
        self.corpus = Corpus(documents, name="wikifactbook")
        self.split_seed = split_seed
        tasks = question_set(documents, self.corpus, questions_path)
        self._tasks = [dataclasses.replace(t, split=split_of(t.meta["subject"], split_seed, test_fraction))
                       for t in tasks]

    def tasks(self, split: str) -> list[Task]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return [t for t in self._tasks if t.split == split]

    def classify_strategy(self, task: Task, calls: Sequence[ToolCall]) -> str:
        return classify_strategy(task, calls)

    def demonstrator(self, strategy: str, style: str) -> FactbookDemonstrator:
        if strategy not in STRATEGIES or style not in QUERY_STYLES:
            raise ValueError(f"unknown strategy/style {strategy!r}/{style!r}; strategies: {STRATEGIES}, "
                             f"styles: {QUERY_STYLES}")
        return FactbookDemonstrator(strategy, style)

