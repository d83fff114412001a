"""BM25 keyword search over a corpus (the `bm25s` package): `LexicalIndex.search`, and a verified cache.

`build_lexical_index(corpus)` tokenises every document (title + text, the text the dense index embeds),
builds a BM25 index in seconds (WikiFactbook's 42k documents: no model, no embedding) and caches it under
``$SEARCHGYM_CACHE/lexical/<sha256(corpus hash, settings)>/``. Like the FAISS cache
(`searchgym.corpus.index`), the folder is written atomically and never trusted blindly: a folder whose
meta, checksums or size disagree with what was asked for is reported in a warning and rebuilt.

`LexicalIndex` has `SearchIndex`'s public API (``search(queries, k)``, ``len``, ``corpus``, the same
`Hit` and snippets), so `SearchTools` and `SearchEnv` take either. Scores are BM25 scores (not cosines).
A hit shares at least one term with the query: a query of stopwords only, or of words no document
contains, returns no hits (the search tool then says "No documents match").
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import time
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from searchgym.corpus.cache import CacheError, file_sha256, publish_folder, read_meta
from searchgym.corpus.documents import Corpus
from searchgym.corpus.index import Hit, HitMaker, check_search, document_text
from searchgym.paths import cache_root

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the folder layout, meta.json fields or the tokeniser change
DEFAULT_K1 = 1.5
DEFAULT_B = 0.75
METHOD = "lucene"  # bm25s's default BM25 variant (Lucene's idf, always positive)
_TOKEN = re.compile(r"\w+")
_COMBINING = re.compile(r"[\u0300-\u036f]")


def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


_STOPWORDS: frozenset[str] | None = None


def bm25_tokenize(text: str) -> list[str]:
    """Lower-cased, accent-stripped word tokens without English stopwords (what BM25 counts).

    >>> bm25_tokenize("The capital of São Tomé is São Tomé")
    ['capital', 'sao', 'tome', 'sao', 'tome']
    >>> bm25_tokenize("Was it of the?")
    []
    """
    global _STOPWORDS
    if _STOPWORDS is None:
        _STOPWORDS = _stopwords()
    if not text.isascii():
        text = _COMBINING.sub("", unicodedata.normalize("NFKD", text))
    return [t for t in _TOKEN.findall(text.casefold()) if t not in _STOPWORDS]


class LexicalIndex:
    """A corpus and the BM25 index over its documents, with `SearchIndex`'s search API.

    ``search`` clamps ``k`` to the corpus size; ties in score are broken by corpus order, so results
    are deterministic.
    """

    def __init__(self, corpus: Corpus, retriever, *, k1: float = DEFAULT_K1, b: float = DEFAULT_B,
                 cache_path: Path | None = None, from_cache: bool = False, seconds: float = 0.0):
        self.corpus, self.retriever, self.k1, self.b = corpus, retriever, k1, b
        self.cache_path, self.from_cache, self.seconds = cache_path, from_cache, seconds
        self._hit = HitMaker(corpus)
        self._vocab: dict[str, int] = retriever.vocab_dict

    def __len__(self) -> int:
        return len(self.corpus)

    def __repr__(self) -> str:
        return f"LexicalIndex({self.corpus.name!r}, docs={len(self)}, bm25 k1={self.k1}, b={self.b})"

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits per query, best first (at most k: only documents sharing a term with the query)."""
        queries, k = check_search(queries, k, len(self.corpus))
        return [self._search_one(q, k) for q in queries]

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every document for ``query`` (0 where it shares no term), in corpus order."""
        ids = [self._vocab[t] for t in dict.fromkeys(bm25_tokenize(query)) if t in self._vocab]
        if not ids:
            return np.zeros(len(self.corpus), dtype=np.float32)
        return self.retriever.get_scores_from_ids(ids)

    def _search_one(self, query: str, k: int) -> list[Hit]:
        scores = self.scores(query)
        rows = np.flatnonzero(scores > 0)
        if len(rows) > k:  # keep every row tied with the k-th score, then order ties by corpus row
            kth = np.partition(scores[rows], len(rows) - k)[len(rows) - k]
            rows = rows[scores[rows] >= kth]
        rows = rows[np.lexsort((rows, -scores[rows]))][:k]
        return [self._hit(j, float(scores[j])) for j in rows.tolist()]


# -- cache ---------------------------------------------------------------------------------------
def default_cache_dir() -> Path:
    """``cache_root()/lexical``: ``$SEARCHGYM_CACHE/lexical``, else ``~/.cache/searchgym/lexical``."""
    return cache_root() / "lexical"


def settings_id(k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> str:
    """The settings string that keys the cache (with the corpus hash).

    >>> settings_id()
    'bm25:method=lucene,k1=1.5,b=0.75,tokenizer=1'
    """
    return f"bm25:method={METHOD},k1={k1},b={b},tokenizer={CACHE_FORMAT}"


def cache_key(corpus: Corpus, k1: float = DEFAULT_K1, b: float = DEFAULT_B) -> str:
    return hashlib.sha256(f"{corpus.hash}\0{settings_id(k1, b)}".encode()).hexdigest()


def _expected_meta(corpus: Corpus, k1: float, b: float) -> dict:
    return {"format": CACHE_FORMAT, "corpus_hash": corpus.hash, "settings": settings_id(k1, b),
            "ntotal": len(corpus)}


def load_cached(folder: Path, corpus: Corpus, k1: float = DEFAULT_K1, b: float = DEFAULT_B):
    """Read and verify a cache folder; return the bm25s retriever or raise CacheError saying what is wrong."""
    import bm25s

    meta = read_meta(folder, _expected_meta(corpus, k1, b))
    files = meta.get("files")
    if not isinstance(files, dict) or not files:
        raise CacheError("meta.json lists no index files")
    for name, digest in files.items():
        path = folder / str(name)
        if Path(str(name)).name != name:
            raise CacheError(f"meta.json lists a file outside the folder: {name!r}")
        try:
            actual = file_sha256(path)
        except FileNotFoundError:
            raise CacheError(f"{name} is missing") from None
        except OSError as e:
            raise CacheError(f"{name} cannot be read ({e.strerror or type(e).__name__})") from None
        if actual != digest:
            raise CacheError(f"{name} checksum does not match meta.json ({path.stat().st_size} bytes): "
                             "the file is truncated or modified")
    try:
        retriever = bm25s.BM25.load(str(folder), mmap=False, load_corpus=False, show_progress=False,
                                    verbosity=0)
    except Exception as e:  # checksums matched, so this is a bm25s version that reads its files differently
        raise CacheError(f"bm25s cannot read the index ({type(e).__name__}: {str(e)[:120]})") from None
    if retriever.scores.get("num_docs") != len(corpus):
        raise CacheError(f"the index holds {retriever.scores.get('num_docs')} documents, expected {len(corpus)}")
    return retriever


def save_cached(folder: Path, retriever, meta: dict) -> None:
    """Save the bm25s files, then meta.json (with their checksums), into a temporary sibling folder and
    rename it into place, so ``folder`` is either absent or complete."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:16]}.", suffix=".tmp", dir=folder.parent))
    try:
        retriever.save(str(tmp), show_progress=False)
        files = {}
        for path in sorted(tmp.iterdir()):
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
            files[path.name] = file_sha256(path)
        publish_folder(tmp, folder, {**meta, "files": files})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- build ---------------------------------------------------------------------------------------
def build_lexical_index(corpus: Corpus, *, k1: float = DEFAULT_K1, b: float = DEFAULT_B,
                        cache_dir: str | os.PathLike | None = None, progress: bool = True,
                        rebuild: bool = False) -> LexicalIndex:
    """Load the cached BM25 index for (corpus, k1, b) or tokenise, build and cache it.

    ``rebuild=True`` ignores (and replaces) any cached folder. A cache that cannot be written is a
    warning, not an error: the index in memory is still returned.
    """
    import bm25s
    from tqdm.auto import tqdm

    if not (isinstance(k1, int | float) and k1 >= 0 and isinstance(b, int | float) and 0 <= b <= 1):
        raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cache_key(corpus, k1, b)
    start = time.perf_counter()
    if (folder.exists() or folder.is_symlink()) and not rebuild:
        try:
            loaded = load_cached(folder, corpus, k1, b)
            return LexicalIndex(corpus, loaded, k1=k1, b=b, cache_path=folder, from_cache=True,
                                seconds=time.perf_counter() - start)
        except CacheError as e:
            log.warning("lexical index cache %s is unusable: %s; rebuilding it", folder, e)

    tokens = [bm25_tokenize(document_text(d))
              for d in tqdm(corpus, desc=f"BM25 {corpus.name}", unit="doc", disable=not progress)]
    if not any(tokens):
        raise ValueError(f"{corpus.name}: no document has a searchable word (only stopwords or punctuation); "
                         "BM25 needs text to index")
    retriever = bm25s.BM25(k1=k1, b=b, method=METHOD)
    retriever.index(tokens, show_progress=progress)
    seconds = time.perf_counter() - start
    meta = {**_expected_meta(corpus, k1, b), "corpus_name": corpus.name, "vocab": len(retriever.vocab_dict),
            "build_seconds": round(seconds, 3), "bm25s_version": bm25s.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        save_cached(folder, retriever, meta)
    except OSError as e:
        log.warning("could not write the lexical index cache %s (%s); using the index in memory only", folder, e)
        folder = None
    return LexicalIndex(corpus, retriever, k1=k1, b=b, cache_path=folder, seconds=seconds)
