"""Million-document corpora: the wiki-18 source, query/passage prefixes, resumable embedding, IVF-PQ
specs and recall, memory-mapped loads and batched search (issue #17)."""

from __future__ import annotations

import inspect
import json
import logging

import faiss
import numpy as np
import pytest

from searchgym.corpus.corpus_recipe import CorpusRecipe, RecipeError
from searchgym.corpus.documents import Corpus, CorpusError, Document
from searchgym.corpus.embedders import EmbedderError, HashingEmbedder, PrefixedEmbedder, get_embedder
from searchgym.corpus.index import IndexSpec, IndexSpecError, build_index, cache_key
from searchgym.corpus.sources import iter_wiki18, load_source


# -- the wiki-18 source ----------------------------------------------------------------------------
def _wiki18(tmp_path, lines):
    path = tmp_path / "wiki-18.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_wiki18_is_streamed_and_splits_title_from_text(tmp_path):
    path = _wiki18(tmp_path, [
        json.dumps({"id": "1", "contents": '"Aaron"\nAaron is a prophet in the Hebrew Bible.'}),
        "",
        json.dumps({"id": 2, "contents": "Zurich\nZurich is a city.\nSecond line."}),
        json.dumps({"id": "3", "contents": "No title line at all"}),
    ])
    docs = load_source("wiki18", path=path)
    assert inspect.isgenerator(docs)  # nothing is read before the corpus consumes it
    assert [(d.id, d.title, d.text) for d in docs] == [
        ("1", "Aaron", "Aaron is a prophet in the Hebrew Bible."),
        ("2", "Zurich", "Zurich is a city.\nSecond line."), ("3", "", "No title line at all")]
    recipe = CorpusRecipe.from_dict({"corpus": {"source": "wiki18", "path": str(path), "limit": 2},
                                     "embedder": {"name": "hashing:dim=32"}})
    corpus = recipe.load_corpus()
    assert corpus.ids == ["1", "2"] and corpus["1"].title == "Aaron"


def test_wiki18_bad_input(tmp_path):
    path = _wiki18(tmp_path, [json.dumps({"id": "1", "contents": "T\nx"}), json.dumps({"id": "2", "text": "x"})])
    with pytest.raises(CorpusError, match=r"wiki-18.jsonl:2: expected \{\"id\": \.\.\., \"contents\""):
        list(iter_wiki18(path))
    with pytest.raises(CorpusError, match="no wiki-18 file at"):
        list(iter_wiki18(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match='source "wiki18" takes exactly one option, path'):
        load_source("wiki18")
    with pytest.raises(RecipeError, match=r'source = "wiki18" needs path'):
        CorpusRecipe.from_dict({"corpus": {"source": "wiki18"}})


# -- query / passage prefixes ------------------------------------------------------------------------
class Recording(HashingEmbedder):
    """The hashing embedder, remembering every text it was asked to encode."""

    def __init__(self, dim=32, fail_after=None):
        super().__init__(dim)
        self.seen: list[str] = []
        self.calls, self.fail_after = 0, fail_after

    def encode(self, texts, batch_size=64, progress=False):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C")
        self.seen.extend(texts)
        return super().encode(texts, batch_size, progress)


def test_prefixes_reach_the_encoder_and_the_cache_key(tmp_path):
    corpus = Corpus([Document("a", "Alpha", "first text"), Document("b", "Beta", "second text")])
    base = Recording()
    e5 = PrefixedEmbedder(base, "query: ", "passage: ")
    index = build_index(corpus, e5, cache_dir=tmp_path, progress=False)
    assert base.seen == ["passage: Alpha\nfirst text", "passage: Beta\nsecond text"]
    index.search(["second"], 1)
    assert base.seen[-1] == "query: second"
    flat = IndexSpec.parse("flat")
    keys = {cache_key(corpus, e, flat) for e in (base, e5, PrefixedEmbedder(base, "q: ", "passage: "))}
    assert len(keys) == 3  # different prefixes never share an index
    assert cache_key(corpus, get_embedder("hashing:dim=32"), flat) == cache_key(corpus, base, flat)  # no prefix: old key


def test_prefix_specs():
    e = get_embedder("hashing:dim=32|prefixes=e5")
    assert (e.query_prefix, e.passage_prefix, e.dim) == ("query: ", "passage: ", 32)
    assert e.id == 'hashing-v2:dim=32|query="query: "|passage="passage: "'
    bge = get_embedder("hashing:dim=32|prefixes=bge")
    assert bge.query_prefix.startswith("Represent this sentence") and bge.passage_prefix == ""
    assert get_embedder("hashing:dim=32|query=Q: ").query_prefix == "Q: "
    # No prefix on either side: the plain embedder and its index, not a rebuild under a new key.
    assert get_embedder("hashing:dim=32|prefixes=none").id == get_embedder("hashing:dim=32").id == "hashing-v2:dim=32"
    with pytest.raises(EmbedderError, match="prefixes must be one of e5, bge, none"):
        get_embedder("hashing|prefixes=e6")
    with pytest.raises(EmbedderError, match="bad embedder option 'doc=x'.*allowed: prefixes, query, passage"):
        get_embedder("hashing|doc=x")
    r = CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "path": "x.jsonl"},
                                "embedder": {"name": "hashing", "prefixes": "e5", "query_prefix": "q: "}})
    assert r.embedder == "hashing|prefixes=e5|query=q: "
    with pytest.raises(RecipeError, match=r"embedder.prefixes must be one of \['e5', 'bge', 'none'\], got 'E5'"):
        CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "path": "x"}, "embedder": {"prefixes": "E5"}})


def test_missing_hub_model_says_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedderError, match="never downloads models.*Hugging Face cache"):
        get_embedder("intfloat/no-such-e5-model|prefixes=e5")


# -- resumable embedding -----------------------------------------------------------------------------
def _corpus(n=500):
    return Corpus([Document(f"d{i}", f"T{i}", f"word{i % 37} shared text {i}") for i in range(n)], name="five")


def test_interrupted_embedding_resumes_where_it_stopped(tmp_path, caplog):
    corpus, reference = _corpus(), build_index(_corpus(), "hashing:dim=32", cache_dir=tmp_path / "ref",
                                               progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, Recording(fail_after=2), cache_dir=tmp_path, progress=False, batch_size=10,
                    checkpoint_every=100)
    marker = json.loads(next(tmp_path.glob(".partial/*/progress.json")).read_text())
    assert marker["done"] == 200 and marker["n"] == 500
    again = Recording()
    with caplog.at_level(logging.INFO):
        index = build_index(corpus, again, cache_dir=tmp_path, progress=False, batch_size=10, checkpoint_every=100)
    assert len(again.seen) == 300 and again.seen[0] == "T200\nword15 shared text 200"  # only the rest
    assert "resuming the embedding" in caplog.text
    queries = ["word3 shared", "text 499", "word36"]
    assert index.search(queries, 5) == reference.search(queries, 5)
    assert not (tmp_path / ".partial").exists()  # removed once the index is cached


@pytest.mark.parametrize("damage, reason", [
    (lambda d: (d / "progress.json").write_text("{not json"), "Expecting"),
    (lambda d: (d / "progress.json").write_text(json.dumps(
        {**json.loads((d / "progress.json").read_text()), "done": 300})), "checksum"),
    (lambda d: (d / "progress.json").write_text(json.dumps(
        {**json.loads((d / "progress.json").read_text()), "dim": 64})), "dim=64, expected 32"),
    (lambda d: (d / "vectors.npy").write_bytes(b"\x93NUMPY garbage"), "vectors"),
])
def test_a_damaged_partial_is_discarded_with_a_warning(tmp_path, caplog, damage, reason):
    corpus = _corpus()
    with pytest.raises(KeyboardInterrupt):
        build_index(corpus, Recording(fail_after=2), cache_dir=tmp_path, progress=False, batch_size=10,
                    checkpoint_every=100)
    damage(next(tmp_path.glob(".partial/*")))
    again = Recording()
    with caplog.at_level(logging.WARNING):
        build_index(corpus, again, cache_dir=tmp_path, progress=False, batch_size=10, checkpoint_every=100)
    assert "discarding the partial embedding" in caplog.text and reason in caplog.text
    assert len(again.seen) == 500


# -- IVF-PQ ------------------------------------------------------------------------------------------
def test_ivfpq_specs_and_errors():
    assert str(IndexSpec.parse("ivfpq")) == "ivfpq:m=auto,nbits=8,nlist=auto,nprobe=16"
    assert IndexSpec.parse("opq+ivfpq:nlist=64,m=8,nbits=4,nprobe=4").options == {
        "nlist": 64, "m": 8, "nbits": 4, "nprobe": 4, "refine": "none", "k_factor": 4}
    for spec, message in [("ivfpq:nbits=9", "nbits must be one of [4, 5, 6, 7, 8, 10, 12], got 9"),
                          ("ivfpq:M=8", "unknown option 'M' for index type 'ivfpq'; allowed: ['k_factor', 'm', 'nbits'"),
                          ("ivfpq:nprobe=auto", "nprobe must be a positive integer, got 'auto'"),
                          ("ivfpq:m=x", "m must be a positive integer or auto, got 'x'"),
                          ("ivfpq:refine=sq4", "refine must be one of ['none', 'sq8', 'flat'], got 'sq4'"),
                          ("ivfpq:refine=8", "refine must be one of ['none', 'sq8', 'flat'], got 8"),
                          ("ivfpq:refine=flat,k_factor=0", "k_factor must be a positive integer, got 0"),
                          ("ivfpq:k_factor=8", "k_factor only applies with refine=sq8 or refine=flat"),
                          ("ivf:refine=flat", "unknown option 'refine' for index type 'ivf'")]:
        with pytest.raises(IndexSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
            IndexSpec.parse(spec)
    r = CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "path": "x"},
                                "index": {"type": "ivfpq", "nlist": 64, "m": 16, "mmap": True}})
    assert str(r.index) == "ivfpq:m=16,nbits=8,nlist=64,nprobe=16" and r.mmap is True
    with pytest.raises(RecipeError, match=r"index.mmap must be bool, got str 'yes'"):
        CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "path": "x"}, "index": {"mmap": "yes"}})


def test_ivfpq_bad_m_or_too_few_vectors(tmp_path):
    with pytest.raises(IndexSpecError, match="m=7 must divide the embedding dimension 32"):
        build_index(_corpus(300), "hashing:dim=32", "ivfpq:m=7", cache_dir=tmp_path, progress=False)
    with pytest.raises(IndexSpecError, match="nbits=8 needs at least 256 vectors.*the corpus has 100"):
        build_index(_corpus(100), "hashing:dim=32", "ivfpq:m=8", cache_dir=tmp_path, progress=False)


class ArrayEmbedder:
    def __init__(self, vectors):
        self.vectors, self.dim = vectors, vectors.shape[1]
        self.id = f"array:{hash(vectors.tobytes())}:dim={self.dim}"

    def encode(self, texts, batch_size=64, progress=False):
        return self.vectors[[int(t[1:]) for t in texts]]


def _clustered(n=3000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((30, dim))
    v = (centres[rng.integers(0, 30, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _vector_corpus(n):
    return Corpus([Document(f"d{i}", "", f"v{i}") for i in range(n)], name="vectors")


def _owned_arrays(index) -> list[bool]:
    """For each bulk array of a FAISS index (flat codes, HNSW storage, IVF lists, refine codes): whether
    this process holds its own copy (False: the array is mapped from the file)."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        return _owned_arrays(index.base_index) + _owned_arrays(index.refine_index)
    if isinstance(index, faiss.IndexHNSW):
        return _owned_arrays(index.storage)
    if isinstance(index, faiss.IndexPreTransform):
        return _owned_arrays(index.index)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        if isinstance(lists, faiss.OnDiskInvertedLists):  # IO_FLAG_MMAP: every list is in the file
            return [False]
        return [lists.codes.at(i).is_owned for i in range(lists.nlist) if lists.list_size(i)]
    return [index.codes.is_owned]


@pytest.mark.parametrize("spec", ["ivfpq:nlist=16,m=16,nprobe=8", "opq+ivfpq:nlist=16,m=16,nprobe=8"])
def test_ivfpq_recall_against_flat(tmp_path, spec):
    vectors = _clustered()
    queries = _clustered(50, seed=1)
    embedder = ArrayEmbedder(vectors)
    flat = build_index(_vector_corpus(3000), embedder, "flat", cache_dir=tmp_path, progress=False)
    pq = build_index(_vector_corpus(3000), embedder, spec, cache_dir=tmp_path, progress=False)
    want, got = flat.search_vectors(queries, 10), pq.search_vectors(queries, 10)
    recall = np.mean([len({h.doc_id for h in g} & {h.doc_id for h in w}) / 10 for g, w in zip(got, want)])
    assert recall >= 0.8, recall
    size = lambda i: (i.cache_path / "index.faiss").stat().st_size  # noqa: E731
    assert size(pq) < size(flat) / 3  # 16 bytes a vector instead of 128


def test_refine_specs_keep_old_cache_keys():
    assert str(IndexSpec.parse("ivfpq:refine=none")) == str(IndexSpec.parse("ivfpq"))  # default: key unchanged
    assert str(IndexSpec.parse("opq+ivfpq:m=8,refine=flat,k_factor=8")) == (
        "opq+ivfpq:k_factor=8,m=8,nbits=8,nlist=auto,nprobe=16,refine=flat")
    corpus, embedder = _corpus(10), get_embedder("hashing:dim=32")
    keys = {cache_key(corpus, embedder, IndexSpec.parse(f"ivfpq:{o}")) for o in ("", "refine=sq8", "refine=flat")}
    assert len(keys) == 3


@pytest.mark.parametrize("kind", ["ivfpq", "opq+ivfpq"])
def test_refine_recall_at_least_plain_ivfpq_and_cache_round_trip(tmp_path, kind):
    vectors, queries = _clustered(), _clustered(50, seed=1)
    embedder = ArrayEmbedder(vectors)
    base = f"{kind}:nlist=16,m=4,nbits=6,nprobe=4"  # coarse codes, so re-ranking has something to fix
    flat = build_index(_vector_corpus(3000), embedder, "flat", cache_dir=tmp_path, progress=False)
    want = flat.search_vectors(queries, 10)

    def recall(index):
        got = index.search_vectors(queries, 10)
        return np.mean([len({h.doc_id for h in g} & {h.doc_id for h in w}) / 10 for g, w in zip(got, want)])

    plain = build_index(_vector_corpus(3000), embedder, base, cache_dir=tmp_path, progress=False)
    size = lambda i: (i.cache_path / "index.faiss").stat().st_size  # noqa: E731
    results = {}
    for refine in ("sq8", "flat"):
        spec = f"{base},refine={refine},k_factor=8"
        built = build_index(_vector_corpus(3000), embedder, spec, cache_dir=tmp_path, progress=False)
        assert built.index.k_factor == 8 and faiss.extract_index_ivf(built.index).nprobe == 4
        results[refine] = recall(built)
        assert results[refine] >= recall(plain) + 0.1, (refine, results[refine], recall(plain))
        # cache round trip, plain and memory-mapped (IO_FLAG_MMAP_IFC maps the lists and the refine codes)
        for mmap in (False, True):
            loaded = build_index(_vector_corpus(3000), embedder, spec, cache_dir=tmp_path, progress=False, mmap=mmap)
            assert loaded.from_cache and loaded.mmap == mmap
            assert loaded.index.k_factor == 8 and faiss.extract_index_ivf(loaded.index).nprobe == 4
            assert loaded.search_vectors(queries, 10) == built.search_vectors(queries, 10)
        extra = size(built) - size(plain)  # d bytes a vector for sq8, 4*d for flat (plus a few header bytes)
        assert 3000 * 32 * (1 if refine == "sq8" else 4) <= extra < 3000 * 32 * (1 if refine == "sq8" else 4) + 4096
    assert results["flat"] >= results["sq8"] - 0.02, results  # what remains is the IVF partition (nprobe 4/16)


def test_a_refine_index_is_opened_memory_mapped(tmp_path):
    from searchgym.corpus.cache import read_index_file

    built = build_index(_vector_corpus(3000), ArrayEmbedder(_clustered(3000)), "ivfpq:nlist=8,m=8,refine=flat",
                        cache_dir=tmp_path, progress=False)
    path = str(built.cache_path / "index.faiss")
    with open(path, "rb") as f:
        assert f.read(4) == b"IxRF"  # not an IVF fourcc: read with IO_FLAG_MMAP_IFC, lists and codes mapped
    mapped = read_index_file(path, mmap=True)
    with open("/proc/self/maps") as f:
        assert any(line.rstrip().endswith(path) for line in f)  # the file is mapped, not copied
    assert mapped.ntotal == 3000
    # Both the IVF lists and the refine codes are mapped (IO_FLAG_MMAP would copy the refine codes).
    owned = _owned_arrays(mapped)
    assert len(owned) > 1 and not any(owned)


# -- memory-mapped loads and batched search --------------------------------------------------------------
@pytest.mark.parametrize("spec", ["flat", "ivf:nlist=8,nprobe=8", "ivfpq:nlist=8,m=8,nprobe=8", "hnsw:M=8",
                                  "ivfpq:nlist=8,m=8,nprobe=8,refine=sq8"])
def test_mmap_load_gives_the_same_results(tmp_path, spec):
    vectors, queries = _clustered(1000), _clustered(20, seed=2)
    embedder = ArrayEmbedder(vectors)
    built = build_index(_vector_corpus(1000), embedder, spec, cache_dir=tmp_path, progress=False)
    mapped = build_index(_vector_corpus(1000), embedder, spec, cache_dir=tmp_path, progress=False, mmap=True)
    assert mapped.from_cache and mapped.mmap and not built.mmap
    assert not any(_owned_arrays(mapped.index)) and all(_owned_arrays(built.index))  # mapped, not copied
    assert mapped.search_vectors(queries, 10) == built.search_vectors(queries, 10)
    fresh = build_index(_vector_corpus(1000), embedder, spec, cache_dir=tmp_path / "new", progress=False, mmap=True)
    assert fresh.mmap and not fresh.from_cache and fresh.search_vectors(queries, 10) == built.search_vectors(queries, 10)
    assert not any(_owned_arrays(fresh.index))  # a fresh build serves the mapped file, not its own copy
    with pytest.raises(ValueError, match="mmap must be true or false"):
        build_index(_vector_corpus(1000), embedder, spec, cache_dir=tmp_path, mmap="yes")


def test_a_batch_of_queries_is_one_faiss_call(tmp_path):
    index = build_index(_corpus(50), "hashing:dim=32", "flat", cache_dir=tmp_path, progress=False)

    class Counting:
        def __init__(self, inner):
            self.inner, self.calls = inner, 0

        def search(self, vectors, k):
            self.calls += 1
            return self.inner.search(vectors, k)

    one_by_one = [index.search([q], 3)[0] for q in ["word1", "word2 text", "shared 7"]]
    index.index = counting = Counting(index.index)
    assert index.search(["word1", "word2 text", "shared 7"], 3) == one_by_one and counting.calls == 1


def test_a_long_build_shows_its_progress_bar_even_when_asked_for_quiet(tmp_path, capsys, monkeypatch):
    from searchgym.corpus import index as index_module

    monkeypatch.setattr(index_module, "QUIET_MAX_DOCS", 100)
    build_index(_corpus(50), "hashing:dim=32", cache_dir=tmp_path, progress=False)
    assert "embedding" not in capsys.readouterr().err  # small: quiet as asked
    build_index(_corpus(150), "hashing:dim=32", cache_dir=tmp_path, progress=False)
    err = capsys.readouterr().err
    assert "embedding five (hashing-v2:dim=32)" in err and "150/150" in err
    monkeypatch.setenv("SEARCHGYM_PROGRESS", "0")
    build_index(_corpus(150), "hashing:dim=32", cache_dir=tmp_path, progress=False, rebuild=True)
    assert "embedding" not in capsys.readouterr().err


def test_recipe_index_refine_key_is_read_and_checked(tmp_path):
    """`refine` is a string option in a corpus recipe's [index] (not an integer like the others)."""
    from searchgym.corpus.corpus_recipe import RecipeError, load_corpus_recipe

    head = '[corpus]\nsource = "wikipedia"\n[embedder]\nname = "hashing"\n[index]\ntype = "ivfpq"\n'
    (tmp_path / "ok.toml").write_text(head + 'nlist = 2\nm = 8\nrefine = "sq8"\nk_factor = 2\n')
    spec = load_corpus_recipe(tmp_path / "ok.toml").index
    assert spec.options["refine"] == "sq8" and spec.options["k_factor"] == 2
    (tmp_path / "bad.toml").write_text(head + 'refine = "sq4"\n')
    with pytest.raises(RecipeError, match=r"refine must be one of \['none', 'sq8', 'flat'\]"):
        load_corpus_recipe(tmp_path / "bad.toml")
