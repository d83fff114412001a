"""Corpus recipes: strict validation, the shipped recipes, and the `searchgym index/search` commands."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from searchgym.cli import app
from searchgym.corpus.corpus_recipe import (
    CorpusRecipe,
    RecipeError,
    index_command,
    load_corpus_recipe,
    search_command,
)
from searchgym.corpus.index import IndexSpec

CORPORA = Path(__file__).resolve().parents[1] / "corpora"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEARCHGYM_CACHE", str(tmp_path / "cache"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text)
    return path


def test_shipped_recipes_parse():
    recipes = {p.stem: load_corpus_recipe(p) for p in CORPORA.glob("*.toml")}
    assert {"tiny", "wikipedia", "factbook", "wikifactbook"} <= set(recipes)
    assert recipes["wikipedia"].source == "wikipedia" and recipes["wikipedia"].embedder == "minilm"
    assert recipes["wikipedia"].index == IndexSpec("flat")
    assert recipes["wikifactbook"].index.type == "hnsw"
    assert recipes["tiny"].source_path == CORPORA / "tiny.jsonl"  # relative to the recipe's folder


def test_tiny_recipe_builds_and_caches(tmp_path):
    recipe = load_corpus_recipe(CORPORA / "tiny.toml")
    index = recipe.build(progress=False)
    assert len(index) == 30 and index.embedder.id == "hashing-v2:dim=512"
    assert index.cache_path.parent == tmp_path / "cache" / "indexes"  # $SEARCHGYM_CACHE is honoured
    assert index.search(["capital of Italy"], 1)[0][0].doc_id == "rome"
    assert recipe.build(progress=False).from_cache


def test_limit_and_chunking_apply(tmp_path):
    (tmp_path / "d.jsonl").write_text(
        '{"id": "long", "title": "L", "text": "' + "A sentence here. " * 40 + '"}\n'
        + "".join(f'{{"id": "s{i}", "title": "S", "text": "short {i}"}}\n' for i in range(5)))
    path = write(tmp_path, '[corpus]\nsource = "jsonl"\npath = "d.jsonl"\nlimit = 4\n'
                           '[chunking]\nmax_chars = 200\n[embedder]\nname = "hashing:dim=32"\n')
    corpus = load_corpus_recipe(path).load_corpus()
    assert corpus.ids == ["long#0", "long#1", "long#2", "long#3"] and corpus.name == "r"


@pytest.mark.parametrize("body, message", [
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[indx]\ntype = "flat"\n',
     "unknown key 'indx'; allowed keys: ['chunking', 'corpus', 'embedder', 'index']"),
    ('[corpus]\nsource = "jsonl"\npth = "x"\n',
     "unknown key 'corpus.pth'; allowed keys in [corpus]: ['limit', 'name', 'options', 'path', 'source']"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[index]\ntype = "flat"\nM = 4\n',
     "unknown key 'index.M' for type = 'flat'; allowed keys in [index]: ['mmap', 'type']"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[index]\ntype = "annoy"\n', "index.type must be one of ['flat', 'hnsw', 'ivf', 'ivfpq', 'opq+ivfpq'], got 'annoy'"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[chunking]\nmax_chars = "big"\n',
     "chunking.max_chars must be int, got str 'big'"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[chunking]\nmax_chars = true\n',
     "chunking.max_chars must be int, got bool True"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[chunking]\nmax_chars = 0\n', "chunking.max_chars must be a positive integer, got 0"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[embedder]\nbatch_size = 0\n',
     "embedder.batch_size must be a positive integer, got 0"),
    ('[corpus]\nsource = 3\n', "corpus.source must be one of ['jsonl', 'wiki18', 'wikipedia', 'factbook', 'wikifactbook'], got 3"),
    ('[corpus]\nsource = "jsonl"\npath = "x"\n[index]\ntype = "ivf"\nnlist = "many"\n',
     "index.nlist must be int or one of ['auto'], got str 'many'"),
    ('[embedder]\nname = "hashing"\n', "corpus.source is required (one of ['jsonl', 'wiki18', 'wikipedia', 'factbook', 'wikifactbook'])"),
    ('[corpus]\nsource = "jsonl"\n', 'source = "jsonl" needs path'),
    ('corpus = 3\n', "corpus must be a table, got int"),
    ('[corpus\nsource = "x"\n', "not valid TOML"),
])
def test_bad_recipes_name_the_problem(tmp_path, body, message):
    with pytest.raises(RecipeError) as e:
        load_corpus_recipe(write(tmp_path, body))
    assert message in str(e.value) and "r.toml" in str(e.value)


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="no recipe file at"):
        load_corpus_recipe(tmp_path / "nope.toml")


def test_build_errors_become_recipe_errors(tmp_path):
    (tmp_path / "dup.jsonl").write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    bad_corpus = write(tmp_path, '[corpus]\nsource = "jsonl"\npath = "dup.jsonl"\n[embedder]\nname = "hashing"\n')
    with pytest.raises(RecipeError, match="r.toml: .*duplicate document id 'a'"):
        load_corpus_recipe(bad_corpus).build(progress=False)
    (tmp_path / "ok.jsonl").write_text('{"id": "a", "text": "x"}\n')
    bad_embedder = write(tmp_path, '[corpus]\nsource = "jsonl"\npath = "ok.jsonl"\n[embedder]\nname = "nope-x"\n')
    with pytest.raises(RecipeError, match="unknown embedder 'nope-x'.*minilm"):
        load_corpus_recipe(bad_embedder).build(progress=False)
    assert not (tmp_path / "cache").exists()  # failed builds leave no cache folder


def test_unknown_source_is_refused_at_load_with_the_allowed_sources():
    from searchgym.corpus.sources import KNOWN_SOURCES
    from searchgym.util.config_schema import ConfigError

    with pytest.raises(ConfigError) as e:  # a Literal field: refused when the recipe loads, not at build
        CorpusRecipe.from_dict({"corpus": {"source": "gutenberg"}})
    message = str(e.value)
    assert "\n" not in message and message.startswith("recipe: corpus.source must be one of [")
    assert message.endswith("got 'gutenberg'") and all(repr(s) in message for s in KNOWN_SOURCES)
    with pytest.raises(RecipeError, match=r"index.refine must be one of \['none', 'sq8', 'flat'\], got 'sq4'"):
        CorpusRecipe.from_dict({"corpus": {"source": "wikipedia"}, "index": {"type": "ivfpq", "refine": "sq4"}})


def test_corpus_choices_match_what_the_loaders_take():
    """The corpus recipe's Literal fields name exactly what the sources, index specs and embedders accept."""
    import dataclasses

    from searchgym.corpus import corpus_recipe
    from searchgym.corpus.embedders import PREFIX_PRESETS
    from searchgym.corpus.index import INDEX_OPTIONS
    from searchgym.corpus.sources import KNOWN_SOURCES
    from searchgym.corpus.specs import CHOICE_OPTIONS
    from searchgym.util.config_schema import choices

    assert set(choices(corpus_recipe.Source)) == set(KNOWN_SOURCES)
    assert choices(corpus_recipe.IndexType) == tuple(INDEX_OPTIONS)
    assert choices(corpus_recipe.Refine) == CHOICE_OPTIONS["refine"]
    assert choices(corpus_recipe.Prefixes) == tuple(PREFIX_PRESETS)
    options = {f.name for f in dataclasses.fields(corpus_recipe.IndexSection)} - {"type", "mmap"}
    assert options == {k for opts in INDEX_OPTIONS.values() for k in opts}


def test_index_mmap_reaches_the_built_index(tmp_path):
    """``[index] mmap = true`` opens the cached index memory-mapped; the default reads it into memory."""
    body = f'[corpus]\nsource = "jsonl"\npath = "{CORPORA / "tiny.jsonl"}"\n[embedder]\nname = "hashing"\n'
    assert not load_corpus_recipe(write(tmp_path, body)).build(progress=False).mmap
    assert load_corpus_recipe(write(tmp_path, body + "[index]\nmmap = true\n")).build(progress=False).mmap


def test_index_and_search_commands_print(capsys):
    index_command(CORPORA / "tiny.toml")
    out = capsys.readouterr().out
    assert "30" in out and "hashing-v2:dim=512" in out and "built" in out
    index_command(CORPORA / "tiny.toml")
    assert "loaded from cache" in capsys.readouterr().out
    search_command(CORPORA / "tiny.toml", "tea leaves hot water", k=2)
    out = capsys.readouterr().out
    assert "tea" in out and "Camellia" in out and "rank" in out
    with pytest.raises(ValueError, match="k=0"):
        search_command(CORPORA / "tiny.toml", "tea", k=0)


def test_cli_reports_errors_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["search", str(CORPORA / "tiny.toml"), "   "])
    assert result.exit_code == 2 and "query is empty" in result.output
    result = runner.invoke(app, ["index", str(write(tmp_path, "[corpus]\nsrc = 1\n"))])
    assert result.exit_code == 2 and "unknown key 'corpus.src'" in result.output and "Traceback" not in result.output
