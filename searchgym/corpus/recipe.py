"""Corpus recipes: one small TOML file says which documents, embedder and index make a search corpus.

``corpora/wikipedia.toml`` is the default; ``corpora/tiny.toml`` (30 hand-written documents, hashing
embedder) is what tests use. Recipes are validated strictly: an unknown section or key, or a value of
the wrong type, is a `RecipeError` naming it, because a typo silently falling back to a default would
build the wrong index. Also home of the ``searchgym index`` / ``searchgym search`` commands.

    [corpus]    source = "jsonl" | "wiki18" | "wikipedia" | "factbook" | "wikifactbook", path, name,
                limit, options = {...}  (passed to the source loader)
    [chunking]  max_chars = 4000
    [embedder]  name = "minilm", batch_size = 64, prefixes = "e5" | "bge" | "none",
                query_prefix = "...", passage_prefix = "..."  (explicit prefixes override the preset)
    [index]     type = "flat" | "hnsw" | "ivf" | "ivfpq" | "opq+ivfpq", that type's options (M, ef_search,
                nlist, m, nbits, nprobe, ...), mmap = false
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.corpus.documents import MAX_DOC_CHARS, Corpus, CorpusError
from searchgym.corpus.embedders import DEFAULT_BATCH_SIZE, PREFIX_PRESETS, EmbedderError
from searchgym.corpus.index import INDEX_OPTIONS, IndexSpec, IndexSpecError, SearchIndex, build_index

# Every section and key a recipe may use, with its expected type (the validation schema).
SCHEMA: dict[str, dict[str, type | tuple[type, ...]]] = {
    "corpus": {"source": str, "path": str, "name": str, "limit": int, "options": dict},
    "chunking": {"max_chars": int},
    "embedder": {"name": str, "batch_size": int, "prefixes": str, "query_prefix": str, "passage_prefix": str},
    "index": {"type": str, **{k: int for opts in INDEX_OPTIONS.values() for k in opts}, "nlist": (int, str),
              "m": (int, str), "refine": str, "mmap": bool},
}
SOURCES_WITH_LOADERS = ("wikipedia", "factbook", "wikifactbook", "wiki18")  # in searchgym.corpus.sources
SOURCES_NEEDING_PATH = ("jsonl", "wiki18")
_TYPE_NAMES = {str: "a string", int: "an integer", dict: "a table", (int, str): 'an integer or "auto"',
               bool: "true or false"}


class RecipeError(ValueError):
    """A recipe that cannot be used; the message names the file, section and key."""


@dataclass(frozen=True)
class CorpusRecipe:
    """A validated recipe. ``path`` is where it was read from (None when built from a dict)."""

    source: str
    name: str
    source_path: Path | None = None
    limit: int | None = None
    source_options: dict = field(default_factory=dict)
    max_chars: int = MAX_DOC_CHARS
    embedder: str = "minilm"
    batch_size: int = DEFAULT_BATCH_SIZE
    index: IndexSpec = field(default_factory=IndexSpec)
    path: Path | None = None
    mmap: bool = False

    @classmethod
    def from_dict(cls, data: dict, *, base_dir: Path = Path("."), name: str = "corpus",
                  path: Path | None = None) -> CorpusRecipe:
        """Validate parsed TOML. Relative ``[corpus] path`` values resolve against ``base_dir``.

        >>> r = CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "path": "x.jsonl"},
        ...                             "index": {"type": "hnsw", "M": 16}}, base_dir=Path("/data"))
        >>> r.source_path, str(r.index), r.embedder
        (PosixPath('/data/x.jsonl'), 'hnsw:M=16,ef_construction=80,ef_search=64', 'minilm')
        >>> CorpusRecipe.from_dict({"corpus": {"source": "jsonl", "pth": "x"}})
        Traceback (most recent call last):
        ...
        searchgym.corpus.recipe.RecipeError: recipe: unknown key 'pth' in [corpus]; allowed keys: limit, name, options, path, source
        """
        where = str(path) if path else "recipe"
        _check(data, where)
        corpus = data.get("corpus", {})
        if "source" not in corpus:
            raise RecipeError(f"{where}: [corpus] needs source = one of "
                              f"{', '.join(('jsonl',) + SOURCES_WITH_LOADERS)}")
        source_path = Path(corpus["path"]).expanduser() if "path" in corpus else None
        if source_path is not None and not source_path.is_absolute():
            source_path = base_dir / source_path
        if corpus["source"] in SOURCES_NEEDING_PATH and source_path is None:
            raise RecipeError(f'{where}: [corpus] source = "{corpus["source"]}" needs path = "<file.jsonl'
                              f'{" or folder" if corpus["source"] == "jsonl" else ""}>"')
        limit = corpus.get("limit")
        max_chars = data.get("chunking", {}).get("max_chars", MAX_DOC_CHARS)
        for key, value in (("[corpus] limit", limit), ("[chunking] max_chars", max_chars)):
            if value is not None and value <= 0:
                raise RecipeError(f"{where}: {key} must be a positive integer, got {value}")
        embedder = data.get("embedder", {})
        index_options = dict(data.get("index", {}))
        kind = index_options.pop("type", "flat")
        mmap = index_options.pop("mmap", False)
        if kind in INDEX_OPTIONS:
            for key in index_options:
                if key not in INDEX_OPTIONS[kind]:
                    raise RecipeError(f"{where}: unknown key {key!r} in [index] for type = {kind!r}; allowed "
                                      f"keys: {', '.join(['type', *sorted(INDEX_OPTIONS[kind])])}")
        try:
            spec = IndexSpec(kind, index_options)
        except IndexSpecError as e:
            raise RecipeError(f"{where}: [index] {e}") from None
        return cls(source=corpus["source"], name=corpus.get("name", name), source_path=source_path,
                   limit=limit, source_options=dict(corpus.get("options", {})), max_chars=max_chars,
                   embedder=_embedder_spec(embedder, where),
                   batch_size=embedder.get("batch_size", DEFAULT_BATCH_SIZE), index=spec, path=path, mmap=mmap)

    def load_corpus(self) -> Corpus:
        """The documents the recipe names, chunked at ``max_chars`` and cut to ``limit`` passages."""
        if self.source == "jsonl":
            corpus = Corpus.load(self.source_path, name=self.name, max_chars=self.max_chars)
        else:
            try:
                from searchgym.corpus.sources import load_source
            except ImportError as e:
                raise RecipeError(f"source {self.source!r} needs searchgym.corpus.sources, which failed to "
                                  f"import ({e}); use source = \"jsonl\" meanwhile") from None
            options = dict(self.source_options)
            if self.source_path is not None:
                options["path"] = self.source_path
            try:
                documents = load_source(self.source, **options)
            except ValueError as e:  # CorpusError included: unknown source, bad options, missing package
                raise RecipeError(f"{self.path or 'recipe'}: [corpus] {e}") from None
            corpus = Corpus(documents, name=self.name, max_chars=self.max_chars)
        if self.limit is not None and self.limit < len(corpus):
            corpus = Corpus(corpus.documents[: self.limit], chunk=False, name=self.name)
        return corpus

    def build(self, progress: bool = True, rebuild: bool = False, cache_dir=None) -> SearchIndex:
        """Load the corpus and build (or load from cache) its index.

        Corpus, embedder and index errors come back as RecipeError prefixed with the recipe path, so
        the CLI can print them as one line.
        """
        try:
            return build_index(self.load_corpus(), self.embedder, self.index, cache_dir=cache_dir,
                               progress=progress, rebuild=rebuild, batch_size=self.batch_size, mmap=self.mmap)
        except (CorpusError, EmbedderError, IndexSpecError) as e:
            raise RecipeError(f"{self.path or 'recipe'}: {e}") from None


def _embedder_spec(table: dict, where: str) -> str:
    """``[embedder]`` as one embedder spec: ``name`` plus ``|prefixes=``/``|query=``/``|passage=`` options.

    >>> _embedder_spec({"name": "intfloat/e5-base-v2", "prefixes": "e5"}, "r")
    'intfloat/e5-base-v2|prefixes=e5'
    """
    spec = table.get("name", "minilm")
    for key, option in (("prefixes", "prefixes"), ("query_prefix", "query"), ("passage_prefix", "passage")):
        if key not in table:
            continue
        value = table[key]
        if key == "prefixes" and value not in PREFIX_PRESETS:
            raise RecipeError(f"{where}: [embedder] prefixes must be one of {', '.join(PREFIX_PRESETS)}, got {value!r}")
        if "|" in value:
            raise RecipeError(f"{where}: [embedder] {key} must not contain '|', got {value!r}")
        spec += f"|{option}={value}"
    return spec


def _check(data: dict, where: str) -> None:
    """Unknown sections/keys and wrong types, each as one RecipeError naming the culprit."""
    for section, table in data.items():
        if section not in SCHEMA:
            raise RecipeError(f"{where}: unknown section [{section}]; allowed sections: {', '.join(SCHEMA)}")
        if not isinstance(table, dict):
            raise RecipeError(f"{where}: [{section}] must be a table, got {type(table).__name__}")
        for key, value in table.items():
            if key not in SCHEMA[section]:
                raise RecipeError(f"{where}: unknown key {key!r} in [{section}]; allowed keys: "
                                  f"{', '.join(sorted(SCHEMA[section]))}")
            expected = SCHEMA[section][key]
            wrong = (not isinstance(value, bool)) if expected is bool else (
                isinstance(value, bool) or not isinstance(value, expected))
            if wrong or (isinstance(value, str) and expected == (int, str) and value != "auto"):
                raise RecipeError(f"{where}: [{section}] {key} must be {_TYPE_NAMES[expected]}, "
                                  f"got {type(value).__name__} {value!r}")


def load_recipe(path: str | Path) -> CorpusRecipe:
    """Read and validate a recipe file (relative paths inside it resolve against its folder)."""
    path = Path(path)
    if not path.is_file():
        shipped = sorted(p.name for p in Path("corpora").glob("*.toml")) if Path("corpora").is_dir() else []
        raise RecipeError(f"no recipe file at {path}" + (f"; shipped recipes in corpora/: {', '.join(shipped)}"
                                                         if shipped else ""))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{path}: not valid TOML ({e})") from None
    return CorpusRecipe.from_dict(data, base_dir=path.parent, name=path.stem, path=path)


# -- CLI bodies (typer wrappers live in searchgym/cli.py) -----------------------------------------
def index_command(recipe: Path, rebuild: bool = False) -> None:
    """Build or load the recipe's index and print a short summary."""
    from rich.console import Console
    from rich.table import Table

    start = time.perf_counter()
    r = load_recipe(recipe)
    index = r.build(progress=True, rebuild=rebuild)
    table = Table(show_header=False, title=f"index for {recipe}")
    for label, value in [("documents", f"{len(index):,}"), ("embedder", index.embedder.id),
                         ("dimension", str(index.embedder.dim)), ("index", str(index.spec)),
                         ("cache", str(index.cache_path) if index.cache_path else "(not cached)"),
                         ("source", "loaded from cache" if index.from_cache else "built"),
                         ("memory-mapped", "yes" if index.mmap else "no"),
                         ("seconds", f"{time.perf_counter() - start:.1f}")]:
        table.add_row(label, value)
    Console().print(table)


def search_command(recipe: Path, query: str, k: int = 5) -> None:
    """Search the recipe's corpus (building its index if needed) and print the hits as a table."""
    from rich.console import Console
    from rich.table import Table

    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:  # fail before a possibly long build
        raise ValueError(f"k must be a positive integer (number of hits), got k={k!r}")
    if not query.strip():
        raise ValueError("query is empty; pass some search text")
    index = load_recipe(recipe).build(progress=True)
    hits = index.search([query], k)[0]
    table = Table("rank", "score", "doc id", "title", "snippet", title=f"{query!r} in {index.corpus.name}")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.doc_id, hit.title, hit.snippet)
    Console().print(table)
