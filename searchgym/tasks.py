"""Tasks and task sets: what a search environment asks, and what it knows about the answer.

A `Task` is one question with its gold answers, gold evidence documents and (where the world knows
them) the enumerated valid solution strategies. A `TaskSet` bundles a corpus with train/test tasks,
a deterministic strategy classifier and scripted demonstrators. Environments, demonstrations, meters
and the GRPO adapter all consume these two types and nothing world-specific.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from searchgym.corpus.documents import Corpus


@dataclass(frozen=True)
class Task:
    """One question.

    Attributes:
        id: unique within its task set, stable across runs (``"syn-s0-00042"``).
        question: the text the agent sees.
        answers: gold answers, canonical first, then aliases; scoring takes the best match.
        evidence: gold evidence chains; each chain is a tuple of document ids in reading order.
            A question is solvable by reading any one chain.
        difficulty: number of hops (1-4), the knob meters stratify by.
        kind: question type (``"bridge"``, ``"comparison"``, ``"intersection"``, ``"count"``...).
        split: ``"train"`` or ``"test"``; test questions never appear in training data.
        strategies: names of the valid solution strategies for this question (may be empty when
            a world cannot enumerate them).
        meta: world-specific structure the demonstrators and classifier need (entities per hop…).
    """

    id: str
    question: str
    answers: tuple[str, ...]
    evidence: tuple[tuple[str, ...], ...]
    difficulty: int
    kind: str
    split: str
    strategies: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return {"id": self.id, "question": self.question, "answers": list(self.answers),
                "evidence": [list(c) for c in self.evidence], "difficulty": self.difficulty,
                "kind": self.kind, "split": self.split, "strategies": list(self.strategies),
                "meta": self.meta}

    @classmethod
    def from_json(cls, row: dict) -> Task:
        return cls(id=row["id"], question=row["question"], answers=tuple(row["answers"]),
                   evidence=tuple(tuple(c) for c in row["evidence"]), difficulty=int(row["difficulty"]),
                   kind=row["kind"], split=row["split"], strategies=tuple(row.get("strategies", ())),
                   meta=dict(row.get("meta") or {}))

    @property
    def evidence_ids(self) -> frozenset[str]:
        """Every document on any gold chain."""
        return frozenset(d for chain in self.evidence for d in chain)


@dataclass(frozen=True)
class ToolCall:
    """A parsed agent action: a tool name and its arguments (both as the model wrote them)."""

    name: str
    arguments: dict


@dataclass(frozen=True)
class Step:
    """What an agent saw after one call: the call, the observation text, and the document ids that
    observation showed (search hits, or the opened document) so scripted policies need not parse text."""

    call: ToolCall
    observation: str
    shown: tuple[str, ...] = ()
    error: bool = False


class Demonstrator(Protocol):
    """A scripted policy: given the task and the step history, the next call.

    Demonstrators only read what an agent could read (the question, observations) plus the task's
    gold structure to choose *which* of the visible documents to open; they never open an id they
    have not seen in an observation.
    """

    strategy: str
    style: str

    def __call__(self, task: Task, history: Sequence[Step]) -> ToolCall: ...


class TaskSet(Protocol):
    """What every world provides (SyntheticWorld, WikiFactbook, plug-ins)."""

    name: str
    corpus: Corpus
    strategies: tuple[str, ...]  # every strategy name the world knows, in a fixed order
    query_styles: tuple[str, ...]  # paraphrase styles the demonstrators can use

    def tasks(self, split: str) -> list[Task]: ...

    def classify_strategy(self, task: Task, calls: Sequence[ToolCall]) -> str:
        """Deterministic strategy label of a trajectory (``"other"`` when none fits)."""
        ...

    def demonstrator(self, strategy: str, style: str) -> Demonstrator: ...
