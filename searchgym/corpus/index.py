"""FAISS search over a corpus: index specs, `SearchIndex.search`, and a verified on-disk cache.

`build_index(corpus, "minilm", "hnsw:M=32")` embeds every document once, builds the FAISS index and
caches it under ``$SEARCHGYM_CACHE/indexes/<sha256(corpus hash, embedder id, spec)>/``. The cache is
never trusted blindly: a folder whose meta, checksum, dimension or size disagrees with what was asked
for is reported in a warning and rebuilt. Vectors are L2-normalised, so inner product = cosine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.embedders import DEFAULT_BATCH_SIZE, Embedder, get_embedder
from searchgym.paths import cache_root

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the folder layout or meta.json fields change
SNIPPET_CHARS = 200
# Options each index type accepts, with their defaults (nlist=0 means "choose from the corpus size").
INDEX_OPTIONS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 0, "nprobe": 8},
}


class IndexSpecError(ValueError):
    """An index spec with an unknown type or option, saying which ones exist."""


class CacheError(Exception):
    """Why a cached index folder cannot be used (caught by build_index, which rebuilds)."""


# -- index specs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class IndexSpec:
    """A FAISS index type and its options; ``str(spec)`` is canonical and keys the cache.

    >>> str(IndexSpec.parse("hnsw:ef_search=128"))
    'hnsw:M=32,ef_construction=80,ef_search=128'
    >>> IndexSpec.parse("ivf:nlist=64,nprobe=4").options
    {'nlist': 64, 'nprobe': 4}
    >>> str(IndexSpec.parse(" flat "))
    'flat'
    """

    type: str = "flat"
    options: dict = dataclasses.field(default_factory=dict, hash=False)

    def __post_init__(self):
        if self.type not in INDEX_OPTIONS:
            raise IndexSpecError(f"unknown index type {self.type!r}; choose one of {sorted(INDEX_OPTIONS)}")
        allowed = INDEX_OPTIONS[self.type]
        options = dict(allowed)
        for key, value in self.options.items():
            if key not in allowed:
                raise IndexSpecError(f"unknown option {key!r} for index type {self.type!r}; "
                                     f"allowed: {sorted(allowed) or 'none'}")
            if value == "auto" and key == "nlist":
                value = 0
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "nlist" else 1):
                raise IndexSpecError(f"index option {key} must be a positive integer, got {value!r}")
            options[key] = value
        object.__setattr__(self, "options", options)

    @classmethod
    def parse(cls, spec: str) -> IndexSpec:
        """Parse ``"type"`` or ``"type:key=value,key=value"``."""
        kind, _, rest = spec.strip().partition(":")
        options: dict = {}
        for item in filter(None, (p.strip() for p in rest.split(","))):
            key, eq, value = (s.strip() for s in item.partition("="))
            if not eq or not value:
                raise IndexSpecError(f"bad index option {item!r} in {spec!r}; write key=value, "
                                     "e.g. 'hnsw:M=32,ef_search=64'")
            options[key] = value if value == "auto" or not value.isdigit() else int(value)
        return cls(kind.strip(), options)

    def __str__(self) -> str:
        if not self.options:
            return self.type
        shown = {k: ("auto" if k == "nlist" and v == 0 else v) for k, v in self.options.items()}
        return self.type + ":" + ",".join(f"{k}={v}" for k, v in sorted(shown.items()))

    def __hash__(self) -> int:
        return hash(str(self))


def effective_nlist(requested: int, n: int) -> int:
    """IVF list count: ``requested`` capped at ``n``; auto (0) = 4*sqrt(n), but at most n/39 so
    k-means gets the 39 points per centroid FAISS asks for, and at least 1.

    >>> effective_nlist(0, 10_000), effective_nlist(0, 30), effective_nlist(64, 20)
    (256, 1, 20)
    """
    if requested:
        return max(1, min(requested, n))
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def _make_faiss_index(spec: IndexSpec, vectors: np.ndarray) -> faiss.Index:
    n, dim = vectors.shape
    o = spec.options
    if spec.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, o["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = o["ef_construction"]
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, effective_nlist(o["nlist"], n),
                                   faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
    index.add(vectors)
    _configure(index, spec)
    return index


def _configure(index: faiss.Index, spec: IndexSpec) -> None:
    """Search-time knobs, set after building and after loading (they are not part of the cache)."""
    if spec.type == "hnsw":
        index.hnsw.efSearch = spec.options["ef_search"]
    elif spec.type == "ivf":
        index.nprobe = min(spec.options["nprobe"], index.nlist)


# -- search --------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the document id to open, its cosine score, title and a short snippet."""

    doc_id: str
    score: float
    title: str
    snippet: str


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first ~limit characters of ``text`` on one line, cut on a word boundary.

    >>> snippet("The quick brown fox jumps", limit=12)
    'The quick…'
    >>> snippet("short\\n text")
    'short text'
    """
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary not too far back; else hard-cut one long token
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def document_text(doc: Document) -> str:
    """What gets embedded: the title helps short lead paragraphs that never repeat their subject."""
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


class SearchIndex:
    """A corpus, the embedder that embedded it, and the FAISS index over those vectors.

    ``search`` clamps ``k`` to the corpus size, so ``k`` larger than the corpus returns every document.
    """

    def __init__(self, corpus: Corpus, embedder: Embedder, spec: IndexSpec, index: faiss.Index, *,
                 cache_path: Path | None = None, from_cache: bool = False, seconds: float = 0.0,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        self.corpus, self.embedder, self.spec, self.index = corpus, embedder, spec, index
        self.cache_path, self.from_cache, self.seconds = cache_path, from_cache, seconds
        self.batch_size = batch_size
        self._ids = corpus.ids
        self._titles = [d.title for d in corpus]
        self._snippets: list[str | None] = [None] * len(corpus)  # computed on first display

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return (f"SearchIndex({self.corpus.name!r}, docs={len(self)}, embedder={self.embedder.id!r}, "
                f"index={str(self.spec)!r})")

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits per query, best first: one embedder call and one FAISS call for the batch."""
        if isinstance(queries, str):
            raise TypeError("search takes a list of queries; wrap a single query: index.search([query], k)")
        k = self._check_k(k)
        queries = list(queries)
        for i, q in enumerate(queries):
            if not isinstance(q, str) or not q.strip():
                raise ValueError(f"query is empty (query #{i}: {q!r}); pass some search text")
        if not queries:
            return []
        vectors = self.embedder.encode(queries, batch_size=self.batch_size, progress=False)
        return self._search(vectors, k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k hits for already-embedded queries, a (n, dim) array of unit vectors."""
        k = self._check_k(k)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dim:
            raise ValueError(f"query vectors must have shape (n, {self.embedder.dim}), got {vectors.shape}")
        return self._search(vectors, k)

    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
            raise ValueError(f"k must be a positive integer (number of hits), got k={k!r}")
        return min(int(k), len(self.corpus))

    def _search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        scores, rows = self.index.search(vectors, k)
        ids, titles = self._ids, self._titles
        return [[Hit(ids[j], s, titles[j], self._snippet(j))
                 for s, j in zip(srow, jrow) if j >= 0]  # HNSW/IVF pad with -1 when short of k
                for srow, jrow in zip(scores.tolist(), rows.tolist())]

    def _snippet(self, row: int) -> str:
        s = self._snippets[row]
        if s is None:
            s = self._snippets[row] = snippet(self.corpus.documents[row].text)
        return s


# -- cache ---------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``cache_root()/indexes``: ``$SEARCHGYM_CACHE/indexes``, else ``~/.cache/searchgym/indexes``."""
    return cache_root() / "indexes"


def cache_key(corpus: Corpus, embedder: Embedder, spec: IndexSpec) -> str:
    return hashlib.sha256(f"{corpus.hash}\0{embedder.id}\0{spec}".encode()).hexdigest()


def _expected_meta(corpus: Corpus, embedder: Embedder, spec: IndexSpec) -> dict:
    return {"format": CACHE_FORMAT, "corpus_hash": corpus.hash, "embedder": embedder.id,
            "spec": str(spec), "dim": embedder.dim, "ntotal": len(corpus)}


def load_cached(folder: Path, corpus: Corpus, embedder: Embedder, spec: IndexSpec) -> faiss.Index:
    """Read and verify a cache folder; raise CacheError saying what is wrong."""
    if not folder.is_dir():
        raise CacheError("it is not a folder")
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError("meta.json is missing (an interrupted write?)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CacheError(f"meta.json is not valid JSON ({e})") from None
    except OSError as e:  # e.g. a folder named meta.json
        raise CacheError(f"meta.json cannot be read ({e.strerror or type(e).__name__})") from None
    if not isinstance(meta, dict):
        raise CacheError("meta.json is not a JSON object")
    for key, want in _expected_meta(corpus, embedder, spec).items():
        if meta.get(key) != want:
            raise CacheError(f"meta.json has {key}={meta.get(key)!r}, expected {want!r}")
    try:
        data = (folder / "index.faiss").read_bytes()
    except FileNotFoundError:
        raise CacheError("index.faiss is missing") from None
    except OSError as e:  # e.g. a folder named index.faiss
        raise CacheError(f"index.faiss cannot be read ({e.strerror or type(e).__name__})") from None
    if hashlib.sha256(data).hexdigest() != meta.get("index_sha256"):
        raise CacheError(f"index.faiss checksum does not match meta.json ({len(data)} bytes): "
                         "the file is truncated or modified")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError as e:
        raise CacheError(f"FAISS cannot read index.faiss ({str(e).strip().splitlines()[-1]})") from None
    if index.d != embedder.dim or index.ntotal != len(corpus):
        raise CacheError(f"index.faiss holds {index.ntotal} vectors of dim {index.d}, expected "
                         f"{len(corpus)} of dim {embedder.dim}")
    _configure(index, spec)
    return index


def save_cached(folder: Path, index: faiss.Index, meta: dict) -> None:
    """Write index.faiss then meta.json into a temporary sibling folder and rename it into place,
    so ``folder`` is either absent or complete; a failure removes the temporary folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:16]}.", suffix=".tmp", dir=folder.parent))
    try:
        data = faiss.serialize_index(index).tobytes()
        _write_synced(tmp / "index.faiss", data)
        meta = {**meta, "index_sha256": hashlib.sha256(data).hexdigest()}
        _write_synced(tmp / "meta.json", json.dumps(meta, indent=2).encode("utf-8"))  # last: marks done
        if folder.is_dir() and not folder.is_symlink():  # a stale or corrupt folder we decided to replace
            shutil.rmtree(folder)
        elif folder.exists() or folder.is_symlink():  # a file (or link) where the folder belongs
            folder.unlink()
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").exists():  # not a concurrent build that just won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


# -- build ---------------------------------------------------------------------------------------
def build_index(corpus: Corpus, embedder: str | Embedder = "minilm", index: str | IndexSpec = "flat", *,
                cache_dir: str | os.PathLike | None = None, progress: bool = True, rebuild: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE) -> SearchIndex:
    """Load the cached index for (corpus, embedder, index) or embed, build and cache it.

    ``rebuild=True`` ignores (and replaces) any cached folder. A cache that cannot be written (a
    read-only disk) is a warning, not an error: the index in memory is still returned.
    """
    embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
    spec = IndexSpec.parse(index) if isinstance(index, str) else index
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cache_key(corpus, embedder, spec)
    start = time.perf_counter()
    if (folder.exists() or folder.is_symlink()) and not rebuild:
        try:
            loaded = load_cached(folder, corpus, embedder, spec)
            return SearchIndex(corpus, embedder, spec, loaded, cache_path=folder, from_cache=True,
                               seconds=time.perf_counter() - start, batch_size=batch_size)
        except CacheError as e:
            log.warning("index cache %s is unusable: %s; rebuilding it", folder, e)

    vectors = embedder.encode([document_text(d) for d in corpus], batch_size=batch_size, progress=progress)
    if vectors.shape != (len(corpus), embedder.dim) or vectors.dtype != np.float32:
        raise ValueError(f"embedder {embedder.id} returned {vectors.dtype} {vectors.shape}; expected "
                         f"float32 {(len(corpus), embedder.dim)}")
    built = _make_faiss_index(spec, vectors)
    seconds = time.perf_counter() - start
    meta = {**_expected_meta(corpus, embedder, spec), "corpus_name": corpus.name,
            "build_seconds": round(seconds, 3), "faiss_version": faiss.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if spec.type == "ivf":
        meta["nlist"] = built.nlist
    try:
        save_cached(folder, built, meta)
    except OSError as e:
        log.warning("could not write the index cache %s (%s); using the index in memory only", folder, e)
        folder = None
    return SearchIndex(corpus, embedder, spec, built, cache_path=folder, seconds=seconds,
                       batch_size=batch_size)
