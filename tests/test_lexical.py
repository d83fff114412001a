"""BM25 (corpus.lexical), hybrid RRF (corpus.hybrid) and the env's ``retriever`` choice."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import gymnasium
import pytest
from typer.testing import CliRunner

import searchgym  # noqa: F401  (registers the envs and plug-ins)
from searchgym.cli import app
from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.hybrid import HybridIndex, build_hybrid_index, reciprocal_rank_fusion
from searchgym.corpus.index import Hit, build_index, snippet
from searchgym.corpus.lexical import LexicalIndex, bm25_tokenize, build_lexical_index
from searchgym.envs.actions import format_tool_call
from searchgym.tasks import ToolCall

ENV_ID = "searchgym_plugin_example/Elements-v0"
TINY = Path(__file__).resolve().parents[1] / "corpora" / "tiny.jsonl"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty $SEARCHGYM_CACHE: nothing here is written to ~/.cache."""
    monkeypatch.setenv("SEARCHGYM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def keyword_corpus() -> Corpus:
    """One long document holds the rare keyword; short ones repeat the query's common words."""
    filler = " ".join(f"word{i}" for i in range(40))
    docs = [Document("target", "Harbour notes", f"The ledger of Zorvath was kept here. {filler}")]
    docs += [Document(f"d{i}", f"City {i}", f"The capital city of region {i} is a capital city.") for i in range(8)]
    return Corpus(docs, name="keywords")


def rank(hits: list[Hit], doc_id: str) -> int:
    return [h.doc_id for h in hits].index(doc_id) if doc_id in [h.doc_id for h in hits] else len(hits)


def test_bm25_finds_an_exact_keyword_the_hashing_embedder_ranks_lower(tmp_path):
    corpus, query = keyword_corpus(), "capital city Zorvath"
    lexical = build_lexical_index(corpus, cache_dir=tmp_path, progress=False).search([query], 5)[0]
    dense = build_index(corpus, "hashing", cache_dir=tmp_path / "dense", progress=False).search([query], 5)[0]
    assert lexical[0].doc_id == "target"  # the rare word's idf outweighs the common words
    assert rank(dense, "target") > 0  # no idf: the short documents sharing two common words win
    assert lexical[0].title == "Harbour notes" and lexical[0].snippet == snippet(corpus["target"].text)
    assert all(a.score >= b.score for a, b in zip(lexical, lexical[1:]))


def test_lexical_search_api_matches_search_index(tmp_path):
    corpus = keyword_corpus()
    index = build_lexical_index(corpus, cache_dir=tmp_path, progress=False)
    assert isinstance(index, LexicalIndex) and len(index) == len(corpus) and index.corpus is corpus
    assert len(index.search(["capital"], 100)[0]) == 8  # k clamped; only documents with the word
    assert index.search(["the of is", "Zorvath"], 3)[0] == []  # stopwords only: no hits, no error
    assert index.search([], 3) == []
    assert bm25_tokenize("Zorváth's CAPITAL") == ["zorvath", "s", "capital"]
    with pytest.raises(TypeError, match="wrap a single query"):
        index.search("capital", 3)
    with pytest.raises(ValueError, match="query is empty"):
        index.search(["  "], 3)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        index.search(["capital"], 0)


def test_reciprocal_rank_fusion_on_a_hand_made_example():
    # dense: a b c d ; lexical: c e a. RRF(k=60): a = 1/61 + 1/63, c = 1/63 + 1/61 (tie: a seen first),
    # b = 1/62, e = 1/62 (tie: b seen first), d = 1/64.
    fused = reciprocal_rank_fusion([["a", "b", "c", "d"], ["c", "e", "a"]], k=60)
    assert [d for d, _ in fused] == ["a", "c", "b", "e", "d"]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 63) and fused[-1][1] == pytest.approx(1 / 64)
    # k=0 makes ranks count more: x = 1/1, y = 1/2 + 1/2 = 1 (tie, x first), z = 1/3 + 1/1.
    assert [d for d, _ in reciprocal_rank_fusion([["x", "y", "z"], ["z", "y"]], k=0)] == ["z", "x", "y"]
    with pytest.raises(ValueError, match="rrf_k"):
        reciprocal_rank_fusion([["a"]], k=-1)


class _Ranked:
    """A stand-in index that returns fixed rankings (so the fused order is known by hand)."""

    def __init__(self, corpus: Corpus, order: list[str]):
        self.corpus, self.order = corpus, order

    def search(self, queries, k):
        return [[Hit(d, 1.0, self.corpus[d].title, snippet(self.corpus[d].text)) for d in self.order[:k]]
                for _ in queries]


def test_hybrid_index_fuses_the_two_rankings():
    corpus = Corpus([Document(c, c.upper(), f"text {c}") for c in "abcde"], name="five")
    hybrid = HybridIndex(_Ranked(corpus, list("abcd")), _Ranked(corpus, list("cea")), rrf_k=60, depth=5)
    hits = hybrid.search(["q", "r"], 3)
    assert [[h.doc_id for h in row] for row in hits] == [["a", "c", "b"]] * 2
    assert hits[0][0] == Hit("a", pytest.approx(1 / 61 + 1 / 63), "A", "text a")
    assert len(hybrid) == 5 and hybrid.corpus is corpus
    assert [h.doc_id for h in hybrid.search(["q"], 99)[0]] == ["a", "c", "b", "e", "d"]  # k clamped to 5


def test_hybrid_over_real_indexes_keeps_both_signals(tmp_path):
    corpus, query = keyword_corpus(), "capital city Zorvath"
    hybrid = build_hybrid_index(corpus, "hashing", cache_dir=tmp_path, progress=False)
    hits = hybrid.search([query], 5)[0]
    assert "target" in [h.doc_id for h in hits] and len(hits) == 5
    assert (tmp_path / "indexes").is_dir() and (tmp_path / "lexical").is_dir()
    assert build_hybrid_index(corpus, "hashing", cache_dir=tmp_path, progress=False).from_cache


def _truncate(folder: Path):
    path = folder / "data.csc.index.npy"
    path.write_bytes(path.read_bytes()[:-8])


@pytest.mark.parametrize("corrupt, reason", [
    (_truncate, "checksum does not match"),
    (lambda f: (f / "meta.json").write_text("{not json"), "meta.json is not valid JSON"),
    (lambda f: (f / "vocab.index.json").unlink(), "vocab.index.json is missing"),
    (lambda f: (shutil.rmtree(f), f.write_text("a file")), "it is not a folder"),
])
def test_cache_is_reused_and_rebuilt_when_corrupt(tmp_path, caplog, corrupt, reason):
    corpus = Corpus.load(TINY)
    first = build_lexical_index(corpus, cache_dir=tmp_path, progress=False)
    assert not first.from_cache and first.cache_path.parent == tmp_path
    expected = first.search(["capital of Spain", "capital city"], 5)
    again = build_lexical_index(corpus, cache_dir=tmp_path, progress=False)
    assert again.from_cache and again.search(["capital of Spain", "capital city"], 5) == expected
    corrupt(first.cache_path)
    with caplog.at_level(logging.WARNING, logger="searchgym.corpus.lexical"):
        rebuilt = build_lexical_index(corpus, cache_dir=tmp_path, progress=False)
    assert not rebuilt.from_cache and reason in caplog.text and "rebuilding" in caplog.text
    assert rebuilt.search(["capital of Spain", "capital city"], 5) == expected
    assert build_lexical_index(corpus, cache_dir=tmp_path, progress=False).from_cache  # repaired
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp folders left


def test_cache_key_separates_corpus_and_settings(tmp_path):
    corpus = keyword_corpus()
    a = build_lexical_index(corpus, cache_dir=tmp_path, progress=False)
    b = build_lexical_index(corpus, k1=1.2, cache_dir=tmp_path, progress=False)
    c = build_lexical_index(Corpus(list(corpus)[:-1]), cache_dir=tmp_path, progress=False)
    assert len({a.cache_path, b.cache_path, c.cache_path}) == 3 and not b.from_cache
    assert build_lexical_index(corpus, cache_dir=tmp_path, progress=False, rebuild=True).from_cache is False


def test_env_with_bm25_plays_an_episode_through_step(cache):
    env = gymnasium.make(ENV_ID, retriever="bm25", max_steps=4)
    assert isinstance(env.unwrapped.index, LexicalIndex) and env.unwrapped.retriever == "bm25"
    env.reset(options={"task_id": "el-sym-O"})
    obs, reward, term, trunc, info = env.step(format_tool_call(ToolCall("search", {"query": "Oxygen"})))
    assert info["error"] is None and info["shown"] and "[el:O] Oxygen" in obs
    obs, *_ = env.step(format_tool_call(ToolCall("search", {"query": "the of and"})))
    assert obs.startswith("No documents match")  # stopwords only: an observation, not an error
    obs, *_ = env.step("open: el:O")
    assert "Oxygen" in obs
    obs, reward, term, trunc, info = env.step(format_tool_call(ToolCall("answer", {"text": "O"})))
    assert term and reward == 1.0 and info["correct"]
    assert list((cache / "lexical").iterdir())  # cached under $SEARCHGYM_CACHE
    hybrid = gymnasium.make(ENV_ID, retriever="hybrid", embedder="hashing").unwrapped
    assert isinstance(hybrid.index, HybridIndex)
    hybrid.reset(options={"task_id": "el-sym-O"})
    assert "[el:O] Oxygen" in hybrid.step("search: Oxygen atomic number 8")[0]


@pytest.mark.parametrize("value", ["bm52", "BM25", "", None, 3])
def test_a_bad_retriever_is_refused_at_construction_in_one_line(value):
    with pytest.raises(ValueError) as e:
        gymnasium.make(ENV_ID, retriever=value)
    message = str(e.value)
    assert "\n" not in message and message.startswith("retriever must be one of ['dense', 'bm25', 'hybrid']")


def test_a_recipe_with_a_bad_retriever_fails_at_load(tmp_path, monkeypatch):
    import searchgym.envs.search_env as search_env

    def slow(*args, **kwargs):
        raise AssertionError("an index was built before the recipe was validated")

    monkeypatch.setattr(search_env, "load_index", slow)
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "agents/quick.toml", "--set", 'env.kwargs.retriever="bm52"',
                                      "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: env.kwargs.retriever: "), result.output
    assert "['dense', 'bm25', 'hybrid']" in lines[0] and "Traceback" not in result.output
    assert not out.exists()
    from searchgym.train.stages import load_recipe

    assert load_recipe(Path("agents/quick.toml"), ['env.kwargs.retriever="bm25"']).env.kwargs["retriever"] == "bm25"
