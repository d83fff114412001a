"""SyntheticWorld: determinism, splits, evidence, knobs, and its strategies' demonstrators.

Demonstrators run against a small BM25 driver over the world's corpus (the search env's lexical
stand-in): it turns calls into `Step`s exactly as the env reports them ("[doc_id] title: snippet"
lines for search, the document text for open).
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict

import pytest

from searchgym.tasks import Step, ToolCall
from searchgym.worlds.synthetic import SyntheticWorld
from searchgym.worlds.synthetic.strategies import MAX_CALLS, classify_strategy, entity_of
from searchgym.worlds.synthetic.words import tokens


class LexicalDriver:
    """BM25 over title (counted twice) + text; runs a demonstrator for one episode."""

    def __init__(self, corpus, top_k: int = 5, k1: float = 1.2, b: float = 0.75):
        self.corpus, self.top_k, self.k1, self.b = corpus, top_k, k1, b
        self.docs = list(corpus)
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.lengths = []
        for i, d in enumerate(self.docs):
            tf = Counter(tokens(d.title) * 2 + tokens(d.text))
            self.lengths.append(sum(tf.values()))
            for t, n in tf.items():
                self.postings[t].append((i, n))
        self.avgdl = sum(self.lengths) / len(self.lengths)

    def search(self, query: str) -> list[str]:
        scores: dict[int, float] = defaultdict(float)
        for t in set(tokens(query)):
            plist = self.postings.get(t, [])
            idf = math.log(1 + (len(self.docs) - len(plist) + 0.5) / (len(plist) + 0.5))
            for i, n in plist:
                norm = n + self.k1 * (1 - self.b + self.b * self.lengths[i] / self.avgdl)
                scores[i] += idf * n * (self.k1 + 1) / norm
        best = sorted(scores, key=lambda i: (-scores[i], i))[: self.top_k]
        return [self.docs[i].id for i in best]

    def step(self, call: ToolCall) -> Step:
        if call.name == "search":
            ids = self.search(str(call.arguments.get("query", "")))
            lines = [f"[{d}] {self.corpus[d].title}: {self.corpus[d].text[:200]}" for d in ids]  # env-like
            return Step(call, "\n".join(lines) or "no results", tuple(ids))
        doc_id = str(call.arguments.get("doc_id", ""))
        if doc_id not in self.corpus:
            return Step(call, f"no document {doc_id!r}", (), error=True)
        return Step(call, f"[{doc_id}] {self.corpus[doc_id].title}\n{self.corpus[doc_id].text}", (doc_id,))

    def run(self, task, demo) -> tuple[list[ToolCall], str]:
        history: list[Step] = []
        seen: set[str] = set()
        for _ in range(MAX_CALLS):
            call = demo(task, history)
            if call.name == "answer":
                return [s.call for s in history] + [call], call.arguments["text"]
            if call.name == "open":  # realism: a demonstrator only opens what it was shown
                assert call.arguments["doc_id"] in seen, (task.id, call, demo)
            step = self.step(call)
            seen.update(step.shown if call.name == "search" else ())
            history.append(step)
        raise AssertionError(f"{demo} did not answer {task.id} within {MAX_CALLS} calls")


@pytest.fixture(scope="module")
def world():
    return SyntheticWorld(seed=0, size="small", n_train=300, n_test=100)


@pytest.fixture(scope="module")
def driver(world):
    return LexicalDriver(world.corpus)


def _sample(world, n: int, seed: int = 0):
    tasks = world.tasks("train") + world.tasks("test")
    return random.Random(seed).sample(tasks, min(n, len(tasks)))


def test_same_seed_same_world_other_seed_other_world():
    a, b = SyntheticWorld(seed=7, size="small", n_train=50, n_test=20), SyntheticWorld(seed=7, size="small",
                                                                                          n_train=50, n_test=20)
    assert a.corpus.hash == b.corpus.hash
    assert [t.to_json() for t in a.tasks("train") + a.tasks("test")] == \
           [t.to_json() for t in b.tasks("train") + b.tasks("test")]
    c = SyntheticWorld(seed=8, size="small", n_train=50, n_test=20)
    assert c.corpus.hash != a.corpus.hash
    assert {t.question for t in c.tasks("train")} != {t.question for t in a.tasks("train")}


def test_default_world_size_and_mix():
    w = SyntheticWorld(seed=0)
    assert 500 <= len(w.corpus) <= 1500
    train, test = w.tasks("train"), w.tasks("test")
    assert (len(train), len(test)) == (2000, 500)
    assert {t.difficulty for t in train} == {1, 2, 3, 4}
    assert {t.kind for t in train} == {"bridge", "comparison", "intersection"}
    assert train[3].id == "syn-s0-train-00003"


def test_splits_are_disjoint(world):
    train, test = world.tasks("train"), world.tasks("test")
    assert not {t.question for t in train} & {t.question for t in test}
    assert len({t.question for t in train}) == len(train)
    # Bridges are split on their named start entity: no test chain starts where a train chain does.
    start = lambda t: t.meta["steps"][0]["target"]  # noqa: E731
    assert not ({start(t) for t in train if t.kind == "bridge"} & {start(t) for t in test if t.kind == "bridge"})
    assert {t.split for t in train} == {"train"} and {t.split for t in test} == {"test"}
    with pytest.raises(ValueError, match="split must be"):
        world.tasks("dev")


def test_evidence_exists_and_states_the_answer(world):
    for task in world.tasks("train") + world.tasks("test"):
        assert task.evidence and all(d in world.corpus for d in task.evidence_ids)
        assert len(task.evidence[0]) <= task.difficulty
        if task.kind == "comparison":  # derivable: both values are stated, the answer is the winner
            steps = task.meta["steps"]
            values = [int(s["value"]) for s in steps]
            assert all(s["value"] in world.corpus[s["docs"][0]].text for s in steps)
            assert task.answers[0] in {s["subject"] for s in steps} and values[0] != values[1]
            continue
        for chain in task.evidence:
            text = world.corpus[chain[-1]].text
            assert any(a in text for a in task.answers), (task.question, chain)


def test_strategies_enumerated_and_valid_sets(world):
    assert len(world.strategies) >= 4 and len(world.query_styles) >= 3
    valid = Counter(s for t in world.tasks("train") for s in t.strategies)
    assert set(valid) == set(world.strategies)
    for t in world.tasks("train"):
        assert "forward" in t.strategies and set(t.strategies) <= set(world.strategies)


@pytest.mark.parametrize("strategy", SyntheticWorld.strategies)
def test_each_demonstrator_is_classified_as_its_strategy(world, driver, strategy):
    tasks = [t for t in _sample(world, 160, seed=1) if strategy in t.strategies][:60]
    assert len(tasks) >= 20
    labels = Counter()
    for i, task in enumerate(tasks):
        demo = world.demonstrator(strategy, world.query_styles[i % len(world.query_styles)])
        calls, _ = driver.run(task, demo)
        labels[world.classify_strategy(task, calls)] += 1
    assert labels[strategy] >= 0.95 * len(tasks), labels


def test_forward_oracle_solves_nearly_everything(world, driver):
    tasks = _sample(world, 150, seed=2)
    solved = sum(driver.run(t, world.demonstrator("forward", "keyword"))[1] == t.answers[0] for t in tasks)
    assert solved >= 0.99 * len(tasks), f"{solved}/{len(tasks)}"


def test_classifier_rules_on_hand_written_traces(world):
    task = next(t for t in world.tasks("train") if t.kind == "comparison")
    x, y = (s["search"] for s in task.meta["steps"])
    d1, d2 = (s["docs"][0] for s in task.meta["steps"])
    def S(q):
        return ToolCall("search", {"query": q})

    def Op(d):
        return ToolCall("open", {"doc_id": d})

    assert classify_strategy(task, [ToolCall("answer", {"text": "x"})]) == "other"
    assert classify_strategy(task, [S(x), S(y)]) == "snippet"
    assert classify_strategy(task, [S(task.question), Op(d1)]) == "question_first"
    assert classify_strategy(task, [S(x), Op(d1), Op(d1 + ":b")]) == "verify"
    assert classify_strategy(task, [S(x), S(y), Op(d1), Op(d2)]) == "parallel"
    assert classify_strategy(task, [S(x), Op(d1), S(y), Op(d2)]) == "forward"
    assert classify_strategy(task, [S("something else"), Op(d1)]) == "other"


def test_knobs_change_the_world():
    base = dict(seed=3, size="small", n_train=200, n_test=50)
    easy = SyntheticWorld(**base, max_hops=2)
    hard = SyntheticWorld(**base, max_hops=4)
    assert max(t.difficulty for t in easy.tasks("train") if t.kind == "bridge") == 2
    assert max(t.difficulty for t in hard.tasks("train")) == 4

    def pages_per_fact(w):
        return sum(len(v) for v in w.facts.values()) / len(w.facts)

    one, three = SyntheticWorld(**base, redundancy=1), SyntheticWorld(**base, redundancy=3)
    assert pages_per_fact(three) > pages_per_fact(one) + 1.5
    assert len(three.corpus) == 3 * len(one.corpus)
    assert "verify" not in {s for t in one.tasks("train") for s in t.strategies}

    no_alias, alias = SyntheticWorld(**base, aliases=0.0), SyntheticWorld(**base, aliases=0.8)
    assert all(len(t.answers) == 1 for t in no_alias.tasks("train"))
    assert sum(len(t.answers) > 1 for t in alias.tasks("train")) > 0.3 * len(alias.tasks("train"))

    clean, noisy = SyntheticWorld(**base, distractors=0.0), SyntheticWorld(**base, distractors=0.6)
    assert len(noisy.corpus) > 1.3 * len(clean.corpus)
    assert not any(d.meta["distractor"] for d in clean.corpus)
    fakes = {entity_of(d.id) for d in noisy.corpus if d.meta["distractor"]}
    assert fakes and not any(entity_of(d) in fakes for t in noisy.tasks("train") for d in t.evidence_ids)


def test_bad_knobs_say_what_to_set(world):
    with pytest.raises(ValueError, match="max_hops must be 1-4"):
        SyntheticWorld(max_hops=5)
    with pytest.raises(ValueError, match="size must be one of"):
        SyntheticWorld(size="huge")
    with pytest.raises(ValueError, match="within \\[0, 1\\]"):
        SyntheticWorld(distractors=1.5)
    with pytest.raises(ValueError, match="choose one of"):
        world.demonstrator("breadth", "keyword")


def test_question_holdout_keeps_questions_apart_but_shares_anchors():
    kwargs = dict(seed=3, size=30, max_hops=2, n_train=600, n_test=150)
    w = SyntheticWorld(**kwargs, holdout="question")
    train, test = w.tasks("train"), w.tasks("test")
    assert len(test) >= 100 and not {t.question for t in train} & {t.question for t in test}
    start = lambda t: t.meta["steps"][0]["target"]  # noqa: E731
    train_starts = {start(t) for t in train if t.kind == "bridge"}
    test_starts = [start(t) for t in test if t.kind == "bridge"]
    # Unlike the anchor split, most held-out bridges start where some train bridge starts.
    assert sum(s in train_starts for s in test_starts) > 0.5 * len(test_starts)
    assert SyntheticWorld(**kwargs, holdout="question").tasks("test") == test  # still a function of the knobs
    anchor = SyntheticWorld(**kwargs)
    assert not {start(t) for t in anchor.tasks("test") if t.kind == "bridge"} & {
        start(t) for t in anchor.tasks("train") if t.kind == "bridge"}
    with pytest.raises(ValueError, match="holdout must be 'anchor' or 'question'"):
        SyntheticWorld(holdout="entity")
