"""Documents, corpora and embedders: every bad input gets one clear error; hashing vectors are sound."""

from __future__ import annotations

import json

import numpy as np
import pytest

from searchgym.corpus.documents import MAX_DOC_CHARS, Corpus, CorpusError, Document
from searchgym.corpus.embedders import EmbedderError, HashingEmbedder, get_embedder


def docs(n: int) -> list[Document]:
    return [Document(f"d{i}", f"Doc {i}", f"text number {i}") for i in range(n)]


# -- bad corpora -----------------------------------------------------------------------------------
def test_empty_corpus_is_an_error():
    with pytest.raises(CorpusError, match="corpus is empty"):
        Corpus([])


def test_duplicate_ids_are_named():
    with pytest.raises(CorpusError, match="duplicate document id 'd1'"):
        Corpus(docs(3) + [Document("d1", "again", "other text")])


@pytest.mark.parametrize("text", ["", "   \n\t"])
def test_empty_document_is_named(text):
    with pytest.raises(CorpusError, match="document 'd9' has empty text"):
        Corpus(docs(2) + [Document("d9", "blank", text)])


def test_blank_id_is_an_error():
    with pytest.raises(CorpusError, match="empty id"):
        Corpus([Document(" ", "t", "text")])


def test_invalid_utf8_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"id": "a", "title": "A", "text": "fine"}).encode() + b"\n"
    path.write_bytes(good + b'{"id": "b", "title": "B", "text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match="invalid UTF-8 at line 2"):
        Corpus.load(path)


def test_bad_json_line_and_missing_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "a", "text": "ok"}\n{not json}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:2: not valid JSON"):
        Corpus.load(path)
    path.write_text('{"id": "a"}\n')
    with pytest.raises(CorpusError, match=r"missing field\(s\) \['text'\]"):
        Corpus.load(path)


def test_huge_document_is_chunked_on_sentences_and_every_part_kept():
    sentence = "The river flows to the sea. "
    doc = Document("big", "Big", sentence * 1000)  # 28k chars
    corpus = Corpus([doc, *docs(2)])
    chunks = [d for d in corpus if d.meta.get("parent") == "big"]
    assert len(chunks) == len(doc.text) // MAX_DOC_CHARS + 1
    assert [c.id for c in chunks] == [f"big#{i}" for i in range(len(chunks))]
    assert all(len(c.text) <= MAX_DOC_CHARS and c.title == "Big" for c in chunks)
    assert all(c.text.endswith("sea.") for c in chunks)  # cut between sentences, never inside
    assert sum(c.text.count("river") for c in chunks) == 1000
    assert len(Corpus([doc], max_chars=10_000)) == 3  # the chunk size is a knob (recipes set it)


def test_save_load_round_trip_and_manifest_guard(tmp_path):
    corpus = Corpus(docs(5), name="five")
    corpus.save(tmp_path / "c")
    again = Corpus.load(tmp_path / "c")
    assert again.hash == corpus.hash and again.ids == corpus.ids
    with open(tmp_path / "c" / "documents.jsonl", "a") as f:
        f.write(json.dumps({"id": "extra", "text": "appended later"}) + "\n")
    with pytest.raises(CorpusError, match="does not match"):
        Corpus.load(tmp_path / "c")
    assert not list((tmp_path / "c").glob("*.tmp"))  # atomic writes leave no temp files


# -- embedders -------------------------------------------------------------------------------------
def test_hashing_vectors_are_unit_deterministic_and_lexical():
    e = HashingEmbedder(dim=256)
    texts = ["the capital of France is Paris", "Paris is the capital of France", "a red planet", "!!!"]
    v = e.encode(texts)
    assert v.shape == (4, 256) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v[:3], axis=1), 1.0, rtol=1e-6)
    assert not v[3].any()  # no words -> zero vector, not NaN
    assert v[0] @ v[1] > 0.6 > v[0] @ v[2]  # shared words score high, unrelated low
    np.testing.assert_array_equal(v, HashingEmbedder(dim=256).encode(texts))  # stable across instances
    assert e.encode([]).shape == (0, 256)


def test_hashing_batches_do_not_change_vectors():
    e = HashingEmbedder(dim=64)
    texts = [f"word{i} shared text {i % 7}" for i in range(2500)]
    whole = e.encode(texts, batch_size=8)  # processed in 3 internal chunks
    np.testing.assert_array_equal(whole, np.vstack([e.encode(texts[:1300]), e.encode(texts[1300:])]))


def test_get_embedder_specs_and_cache():
    assert get_embedder("hashing:dim=128").id == "hashing-v2:dim=128"
    assert get_embedder("hashing") is get_embedder("hashing")
    with pytest.raises(EmbedderError, match="only option is dim=N"):
        get_embedder("hashing:size=3")
    with pytest.raises(EmbedderError, match=">= 2"):
        get_embedder("hashing:dim=1")


def test_unknown_embedder_lists_builtins(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EmbedderError) as e:
        get_embedder("no-such-embedder-xyz")
    assert "unknown embedder 'no-such-embedder-xyz'" in str(e.value)
    assert "minilm" in str(e.value) and "hashing" in str(e.value)
