"""Corpus recipes: one small TOML file says which documents, embedder and index make a search corpus.

``corpora/wikipedia.toml`` is the default; ``corpora/tiny.toml`` (30 hand-written documents, hashing
embedder) is what tests use. A recipe is typed (`CorpusFile`, built by the one config loader,
`searchgym.util.config_schema`) and validated strictly: an unknown section or key, a value of the wrong type or a word
outside its choices is a `ConfigError` (alias `RecipeError`) naming the field and what is allowed, because a
typo silently falling back to a default would build the wrong index. Also home of the ``searchgym index`` /
``searchgym search`` commands.

    [corpus]    source = "jsonl" | "wiki18" | "wikipedia" | "factbook" | "wikifactbook", path, name,
                limit, options = {...}  (passed to the source loader)
    [chunking]  max_chars = 4000
    [embedder]  name = "minilm", batch_size = 64, prefixes = "e5" | "bge" | "none",
                query_prefix = "...", passage_prefix = "..."  (explicit prefixes override the preset)
    [index]     type = "flat" | "hnsw" | "ivf" | "ivfpq" | "opq+ivfpq", that type's options (M, ef_search,
                nlist, m, nbits, nprobe, refine, k_factor, ...), mmap = false
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from searchgym.corpus.documents import MAX_DOC_CHARS, Corpus, CorpusError
from searchgym.corpus.embedders import DEFAULT_BATCH_SIZE, EmbedderError, known_dim
from searchgym.corpus.index import INDEX_OPTIONS, IndexSpec, IndexSpecError, SearchIndex, build_index
from searchgym.corpus.specs import check_fits
from searchgym.util.config_schema import ConfigError, build, read_toml

RecipeError = ConfigError  # the corpus recipe's error is the one config error

# The words a field may take (tests check they match searchgym.corpus.sources.KNOWN_SOURCES, INDEX_OPTIONS,
# specs.CHOICE_OPTIONS["refine"] and embedders.PREFIX_PRESETS).
Source = Literal["jsonl", "wiki18", "wikipedia", "factbook", "wikifactbook"]
IndexType = Literal["flat", "hnsw", "ivf", "ivfpq", "opq+ivfpq"]
Refine = Literal["none", "sq8", "flat"]
Prefixes = Literal["e5", "bge", "none"]
SOURCES_NEEDING_PATH = ("jsonl", "wiki18")


@dataclass
class CorpusSection:
    """``[corpus]``: the documents."""

    source: Source = field(metadata={"example": '[corpus] source = "jsonl" with path = "documents.jsonl"'})
    path: str | None = None  # a file or folder, relative to the recipe's folder
    name: str | None = None  # default: the recipe file's name
    limit: int | None = None  # keep the first N passages
    options: dict = field(default_factory=dict)  # passed to the source loader


@dataclass
class ChunkingSection:
    max_chars: int = MAX_DOC_CHARS


@dataclass
class EmbedderSection:
    name: str = "minilm"
    batch_size: int = DEFAULT_BATCH_SIZE
    prefixes: Prefixes | None = None
    query_prefix: str | None = None
    passage_prefix: str | None = None


@dataclass
class IndexSection:
    """``[index]``: the type, and any of that type's options (`searchgym.corpus.specs.INDEX_OPTIONS`)."""

    type: IndexType = "flat"
    mmap: bool = False
    M: int | None = None
    ef_construction: int | None = None
    ef_search: int | None = None
    nlist: int | Literal["auto"] | None = None
    nprobe: int | None = None
    m: int | Literal["auto"] | None = None
    nbits: int | None = None
    refine: Refine | None = None
    k_factor: int | None = None

    def spec(self, where: str) -> IndexSpec:
        """The options this file sets, checked against what its type takes, as an `IndexSpec`."""
        given = {f.name: getattr(self, f.name) for f in fields(self)
                 if f.name not in ("type", "mmap") and getattr(self, f.name) is not None}
        for key in given:
            if key not in INDEX_OPTIONS[self.type]:
                raise ConfigError(f"{where}: unknown key 'index.{key}' for type = {self.type!r}; allowed keys in "
                                  f"[index]: {sorted(['type', 'mmap', *INDEX_OPTIONS[self.type]])}")
        try:
            return IndexSpec(self.type, given)
        except IndexSpecError as e:
            raise ConfigError(f"{where}: [index] {e}") from None


@dataclass
class CorpusFile:
    """A corpus recipe file as written: its four sections."""

    corpus: CorpusSection
    chunking: ChunkingSection = field(default_factory=ChunkingSection)
    embedder: EmbedderSection = field(default_factory=EmbedderSection)
    index: IndexSection = field(default_factory=IndexSection)


@dataclass(frozen=True)
class CorpusRecipe:
    """A validated recipe, resolved. ``path`` is where it was read from (None when built from a dict)."""

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
        searchgym.util.config_schema.ConfigError: recipe: unknown key 'corpus.pth'; allowed keys in [corpus]: ['limit', 'name', 'options', 'path', 'source']
        """
        where = str(path) if path else "recipe"
        file = build(CorpusFile, data, where)
        corpus = file.corpus
        source_path = Path(corpus.path).expanduser() if corpus.path is not None else None
        if source_path is not None and not source_path.is_absolute():
            source_path = base_dir / source_path
        if corpus.source in SOURCES_NEEDING_PATH and source_path is None:
            raise ConfigError(f'{where}: corpus.path is required: source = "{corpus.source}" needs path = '
                              f'"<file.jsonl{" or folder" if corpus.source == "jsonl" else ""}>"')
        for key, value in (("corpus.limit", corpus.limit), ("chunking.max_chars", file.chunking.max_chars),
                           ("embedder.batch_size", file.embedder.batch_size)):
            if value is not None and value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive integer, got {value}")
        embedder, index = _embedder_spec(file.embedder, where), file.index.spec(where)
        try:  # what the index needs of the vectors, as far as it is known before loading anything
            check_fits(index, known_dim(embedder), corpus.limit)
        except IndexSpecError as e:
            raise ConfigError(f"{where}: [index] {e}") from None
        return cls(source=corpus.source, name=corpus.name or name, source_path=source_path, limit=corpus.limit,
                   source_options=dict(corpus.options), max_chars=file.chunking.max_chars,
                   embedder=embedder, batch_size=file.embedder.batch_size,
                   index=index, path=path, mmap=file.index.mmap)

    def load_corpus(self) -> Corpus:
        """The documents the recipe names, chunked at ``max_chars`` and cut to ``limit`` passages."""
        if self.source == "jsonl":
            corpus = Corpus.load(self.source_path, name=self.name, max_chars=self.max_chars)
        else:
            try:
                from searchgym.corpus.sources import load_source
            except ImportError as e:
                raise ConfigError(f"source {self.source!r} needs searchgym.corpus.sources, which failed to "
                                  f"import ({e}); use source = \"jsonl\" meanwhile") from None
            options = dict(self.source_options)
            if self.source_path is not None:
                options["path"] = self.source_path
            try:
                documents = load_source(self.source, **options)
            except ValueError as e:  # CorpusError included: unknown source, bad options, missing package
                raise ConfigError(f"{self.path or 'recipe'}: [corpus] {e}") from None
            corpus = Corpus(documents, name=self.name, max_chars=self.max_chars)
        if self.limit is not None and self.limit < len(corpus):
            corpus = Corpus(corpus.documents[: self.limit], chunk=False, name=self.name)
        return corpus

    def build(self, progress: bool = True, rebuild: bool = False, cache_dir=None) -> SearchIndex:
        """Load the corpus and build (or load from cache) its index.

        Corpus, embedder and index errors come back as a ConfigError prefixed with the recipe path, so
        the CLI can print them as one line.
        """
        try:
            return build_index(self.load_corpus(), self.embedder, self.index, cache_dir=cache_dir,
                               progress=progress, rebuild=rebuild, batch_size=self.batch_size, mmap=self.mmap)
        except (CorpusError, EmbedderError, IndexSpecError) as e:
            raise ConfigError(f"{self.path or 'recipe'}: {e}") from None


def _embedder_spec(table: EmbedderSection, where: str) -> str:
    """``[embedder]`` as one embedder spec: ``name`` plus ``|prefixes=``/``|query=``/``|passage=`` options.

    >>> _embedder_spec(EmbedderSection("intfloat/e5-base-v2", prefixes="e5"), "r")
    'intfloat/e5-base-v2|prefixes=e5'
    """
    spec = table.name
    for key, option in (("prefixes", "prefixes"), ("query_prefix", "query"), ("passage_prefix", "passage")):
        value = getattr(table, key)
        if value is None:
            continue
        if "|" in value:
            raise ConfigError(f"{where}: embedder.{key} must not contain '|', got {value!r}")
        spec += f"|{option}={value}"
    return spec


def load_corpus_recipe(path: str | Path) -> CorpusRecipe:
    """Read and validate a recipe file (relative paths inside it resolve against its folder)."""
    path = Path(path)
    shipped = sorted(p.name for p in Path("corpora").glob("*.toml")) if Path("corpora").is_dir() else []
    data = read_toml(path, f"no recipe file at {path}" + (
        f"; shipped recipes in corpora/: {', '.join(shipped)}" if shipped else ""))
    return CorpusRecipe.from_dict(data, base_dir=path.parent, name=path.stem, path=path)


# -- CLI bodies (typer wrappers live in searchgym/cli.py) -----------------------------------------
def index_command(recipe: Path, rebuild: bool = False) -> None:
    """Build or load the recipe's index and print a short summary."""
    from rich.console import Console
    from rich.table import Table

    start = time.perf_counter()
    r = load_corpus_recipe(recipe)
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
    index = load_corpus_recipe(recipe).build(progress=True)
    hits = index.search([query], k)[0]
    table = Table("rank", "score", "doc id", "title", "snippet", title=f"{query!r} in {index.corpus.name}")
    for rank, hit in enumerate(hits, 1):
        table.add_row(str(rank), f"{hit.score:.3f}", hit.doc_id, hit.title, hit.snippet)
    Console().print(table)
