"""FAISS search over a corpus: `SearchIndex.search` and `build_index`, which builds or loads it.

`build_index(corpus, "minilm", "hnsw:M=32")` embeds every document once (streamed, with a progress bar
and resumable checkpoints: corpus.embedding), builds the FAISS index (trained on a sample for IVF and
IVF-PQ: corpus.specs) and caches it under ``$SEARCHGYM_CACHE/indexes/<sha256(corpus hash, embedder id,
spec)>/`` (verified on load, rebuilt with a warning when wrong: corpus.cache). ``mmap=True`` opens the
cached file memory-mapped so processes share it. Vectors are L2-normalised, so inner product = cosine.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from searchgym.corpus.cache import (  # noqa: F401 - re-exported: callers import these from here
    CACHE_FORMAT,
    CacheError,
    cache_key,
    default_cache_dir,
    expected_meta,
    load_cached,
    read_index_file,
    save_cached,
)
from searchgym.corpus.documents import Corpus
from searchgym.corpus.embedders import DEFAULT_BATCH_SIZE, Embedder, encode_queries, get_embedder
from searchgym.corpus.embedding import (  # noqa: F401 - document_text re-exported
    DEFAULT_CHECKPOINT_EVERY,
    chunks,
    discard_partial,
    document_text,
    embed_corpus,
    partial_dir,
)
from searchgym.corpus.specs import (  # noqa: F401 - re-exported
    INDEX_OPTIONS,
    IndexSpec,
    IndexSpecError,
    check_fits,
    configure,
    effective_nlist,
    ivf_lists,
    make_faiss_index,
    train_size,
)

log = logging.getLogger(__name__)

SNIPPET_CHARS = 200
ADD_CHUNK = 65_536  # vectors added to FAISS per call (a memmap is read this much at a time)
# progress=False silences builds up to this many documents only: a longer build always shows its bar
# (an env that asked for quiet once spent 16 silent minutes on WikiFactbook), unless SEARCHGYM_PROGRESS=0.
QUIET_MAX_DOCS = 10_000


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


def _check_k(k: int, n_docs: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k <= 0:
        raise ValueError(f"k must be a positive integer (number of hits), got k={k!r}")
    return min(int(k), n_docs)


def check_search(queries: Sequence[str], k: int, n_docs: int) -> tuple[list[str], int]:
    """The arguments of every index's ``search(queries, k)``, checked: a list of non-empty strings and a
    positive k (capped at the corpus size). Shared by the dense, BM25 and hybrid indexes.

    >>> check_search(["a", "b"], 10, 3)
    (['a', 'b'], 3)
    >>> check_search("a", 1, 3)
    Traceback (most recent call last):
    ...
    TypeError: search takes a list of queries; wrap a single query: index.search([query], k)
    """
    if isinstance(queries, str):
        raise TypeError("search takes a list of queries; wrap a single query: index.search([query], k)")
    k = _check_k(k, n_docs)
    queries = list(queries)
    for i, q in enumerate(queries):
        if not isinstance(q, str) or not q.strip():
            raise ValueError(f"query is empty (query #{i}: {q!r}); pass some search text")
    return queries, k


class HitMaker:
    """Corpus row + score -> `Hit`, with the snippet computed on first display and kept: shared by every
    index type (dense, BM25, hybrid through them), so hits read the same whichever ranks them."""

    def __init__(self, corpus: Corpus):
        self.corpus = corpus
        self._ids = corpus.ids
        self._titles = [d.title for d in corpus]
        self._snippets: list[str | None] = [None] * len(corpus)

    def __call__(self, row: int, score: float) -> Hit:
        s = self._snippets[row]
        if s is None:
            s = self._snippets[row] = snippet(self.corpus.documents[row].text)
        return Hit(self._ids[row], score, self._titles[row], s)


class SearchIndex:
    """A corpus, the embedder that embedded it, and the FAISS index over those vectors.

    ``search`` clamps ``k`` to the corpus size, so ``k`` larger than the corpus returns every document.
    A batch of queries costs one embedder call and one FAISS call, so a vectorised env serves its N
    sub-envs' searches with ``index.search([q1, ..., qN], k)``; ``search_vectors`` skips the embedder.
    ``mmap`` says whether the FAISS index is memory-mapped from ``cache_path`` (shared between processes).
    """

    def __init__(self, corpus: Corpus, embedder: Embedder, spec: IndexSpec, index: faiss.Index, *,
                 cache_path: Path | None = None, from_cache: bool = False, seconds: float = 0.0,
                 batch_size: int = DEFAULT_BATCH_SIZE, mmap: bool = False):
        self.corpus, self.embedder, self.spec, self.index = corpus, embedder, spec, index
        self.mmap = mmap
        self.cache_path, self.from_cache, self.seconds = cache_path, from_cache, seconds
        self.batch_size = batch_size
        self._hit = HitMaker(corpus)

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return (f"SearchIndex({self.corpus.name!r}, docs={len(self)}, embedder={self.embedder.id!r}, "
                f"index={str(self.spec)!r})")

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits per query, best first: one embedder call and one FAISS call for the batch."""
        queries, k = check_search(queries, k, len(self.corpus))
        if not queries:
            return []
        vectors = encode_queries(self.embedder, queries, batch_size=self.batch_size)
        return self._search(np.ascontiguousarray(vectors, dtype=np.float32), k)

    def search_vectors(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        """Top-k hits for already-embedded queries, a (n, dim) array of unit vectors."""
        k = _check_k(k, len(self.corpus))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.embedder.dim:
            raise ValueError(f"query vectors must have shape (n, {self.embedder.dim}), got {vectors.shape}")
        return self._search(vectors, k)


    def _search(self, vectors: np.ndarray, k: int) -> list[list[Hit]]:
        scores, rows = self.index.search(vectors, k)
        return [[self._hit(j, s) for s, j in zip(srow, jrow) if j >= 0]  # HNSW/IVF pad with -1 when short of k
                for srow, jrow in zip(scores.tolist(), rows.tolist())]


# -- build ---------------------------------------------------------------------------------------
def build_index(corpus: Corpus, embedder: str | Embedder = "minilm", index: str | IndexSpec = "flat", *,
                cache_dir: str | os.PathLike | None = None, progress: bool = True, rebuild: bool = False,
                batch_size: int = DEFAULT_BATCH_SIZE, mmap: bool = False,
                checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> SearchIndex:
    """Load the cached index for (corpus, embedder, index) or embed, build and cache it.

    ``rebuild=True`` ignores (and replaces) any cached folder and any partial embedding. A cache that
    cannot be written (a read-only disk) is a warning, not an error: the index in memory is still
    returned. ``mmap=True`` returns the cached file memory-mapped (not part of the cache key: the same
    file serves both). ``checkpoint_every`` documents, an embedding of a larger corpus is checkpointed
    so an interrupted build resumes (see corpus.embedding). ``progress=False`` hides the progress bars
    of corpora up to QUIET_MAX_DOCS documents; larger builds show them anyway (``SEARCHGYM_PROGRESS=0``
    in the environment hides them too).
    """
    embedder = get_embedder(embedder) if isinstance(embedder, str) else embedder
    spec = IndexSpec.parse(index) if isinstance(index, str) else index
    check_fits(spec, embedder.dim, len(corpus))  # now, not after minutes of embedding
    if not isinstance(mmap, bool):
        raise ValueError(f"mmap must be true or false, got {mmap!r}")
    root = Path(cache_dir if cache_dir is not None else default_cache_dir())
    key = cache_key(corpus, embedder, spec)
    folder, partial = root / key, partial_dir(root, key)
    start = time.perf_counter()
    if (folder.exists() or folder.is_symlink()) and not rebuild:
        try:
            loaded = load_cached(folder, corpus, embedder, spec, mmap=mmap)
            return SearchIndex(corpus, embedder, spec, loaded, cache_path=folder, from_cache=True,
                               seconds=time.perf_counter() - start, batch_size=batch_size, mmap=mmap)
        except CacheError as e:
            log.warning("index cache %s is unusable: %s; rebuilding it", folder, e)
    if rebuild:
        discard_partial(partial)
    progress = bool(progress) or (len(corpus) > QUIET_MAX_DOCS and os.environ.get("SEARCHGYM_PROGRESS") != "0")

    vectors = embed_corpus(corpus, embedder, folder=partial, batch_size=batch_size, progress=progress,
                           checkpoint_every=checkpoint_every)
    built = fill_index(spec, vectors, progress=progress)
    seconds = time.perf_counter() - start
    meta = {**expected_meta(corpus, embedder, spec), "corpus_name": corpus.name,
            "build_seconds": round(seconds, 3), "faiss_version": faiss.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if (nlist := ivf_lists(built)) is not None:
        meta["nlist"] = nlist
    del vectors
    try:
        save_cached(folder, built, meta)
    except OSError as e:
        log.warning("could not write the index cache %s (%s); using the index in memory only", folder, e)
        folder, mmap = None, False
    discard_partial(partial)
    if mmap:  # serve the shared, memory-mapped file rather than this process's private copy
        built = read_index_file(folder / "index.faiss", mmap=True)
        configure(built, spec)
    return SearchIndex(corpus, embedder, spec, built, cache_path=folder, seconds=seconds,
                       batch_size=batch_size, mmap=mmap)


def fill_index(spec: IndexSpec, vectors: np.ndarray, progress: bool = False) -> faiss.Index:
    """The FAISS index of ``spec`` over ``vectors`` (an array or a memmap): trained on a deterministic
    random sample when the spec needs training, then filled ADD_CHUNK vectors at a time."""
    n, dim = vectors.shape
    sample = None
    if spec.trained:
        size = train_size(spec, n)
        rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False)) if size < n else slice(None)
        sample = np.ascontiguousarray(vectors[rows], dtype=np.float32)
    index = make_faiss_index(spec, n, dim, sample)
    del sample
    from tqdm.auto import tqdm

    with tqdm(total=n, unit="vec", desc=f"indexing ({spec})", mininterval=1.0, dynamic_ncols=True,
              disable=not progress or n <= ADD_CHUNK) as bar:
        for s, e in chunks(n, 0, ADD_CHUNK):
            index.add(np.ascontiguousarray(vectors[s:e], dtype=np.float32))
            bar.update(e - s)
    return index
