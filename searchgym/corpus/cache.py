"""The verified on-disk index cache: ``<cache_dir>/<key>/index.faiss`` + ``meta.json``.

The cache is never trusted blindly: a folder whose meta, checksum, dimension or size disagrees with
what was asked for raises `CacheError` (build_index warns and rebuilds). ``mmap=True`` opens the index
file memory-mapped (FAISS ``IO_FLAG_MMAP`` for IVF lists, ``IO_FLAG_MMAP_IFC`` for flat codes), so N
processes searching one index share one copy in the page cache instead of N private copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import faiss

from searchgym.corpus.documents import Corpus
from searchgym.corpus.embedders import Embedder
from searchgym.corpus.specs import IndexSpec, configure
from searchgym.paths import cache_root

CACHE_FORMAT = 1  # bump when the folder layout or meta.json fields change
# IVF indexes (fourcc "Iw..", or an OPQ "IxPT" wrapping one) map their inverted lists with IO_FLAG_MMAP;
# the others (flat, HNSW) map their vector codes with IO_FLAG_MMAP_IFC. The two cannot be combined.
# A refine index ("IxRF": IVF-PQ + SQ8 or flat codes) is opened with IO_FLAG_MMAP_IFC, which in FAISS
# 1.15 maps both its inverted lists and its refine codes (IO_FLAG_MMAP would map the lists only and
# copy the larger refine codes into every process; measured in tests/test_corpus_scale.py).
IVF_FOURCC = (b"Iw", b"IxPT")


class CacheError(Exception):
    """Why a cached index folder cannot be used (caught by build_index, which rebuilds)."""


def default_cache_dir() -> Path:
    """``cache_root()/indexes``: ``$SEARCHGYM_CACHE/indexes``, else ``~/.cache/searchgym/indexes``."""
    return cache_root() / "indexes"


def cache_key(corpus: Corpus, embedder: Embedder, spec: IndexSpec) -> str:
    return hashlib.sha256(f"{corpus.hash}\0{embedder.id}\0{spec}".encode()).hexdigest()


def expected_meta(corpus: Corpus, embedder: Embedder, spec: IndexSpec) -> dict:
    return {"format": CACHE_FORMAT, "corpus_hash": corpus.hash, "embedder": embedder.id,
            "spec": str(spec), "dim": embedder.dim, "ntotal": len(corpus)}


def file_sha256(path: Path) -> str:
    """sha256 of a file read in 16 MiB blocks (an index of several GB never sits in memory whole)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def read_index_file(path: str | os.PathLike, mmap: bool = False) -> faiss.Index:
    """``faiss.read_index``, memory-mapped when ``mmap`` (the file must then stay where it is)."""
    flags = 0
    if mmap:
        with open(path, "rb") as f:
            fourcc = f.read(4)
        ivf = fourcc.startswith(IVF_FOURCC)
        flags = faiss.IO_FLAG_MMAP if ivf else getattr(faiss, "IO_FLAG_MMAP_IFC", faiss.IO_FLAG_MMAP)
    return faiss.read_index(str(path), flags)


def read_meta(folder: Path, expected: dict) -> dict:
    """The ``meta.json`` of a cache folder, checked against ``expected`` (key -> value); raise CacheError
    saying what is wrong. Shared by the FAISS and the BM25 caches."""
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
    for key, want in expected.items():
        if meta.get(key) != want:
            raise CacheError(f"meta.json has {key}={meta.get(key)!r}, expected {want!r}")
    return meta


def load_cached(folder: Path, corpus: Corpus, embedder: Embedder, spec: IndexSpec, *,
                mmap: bool = False) -> faiss.Index:
    """Read and verify a cache folder; raise CacheError saying what is wrong."""
    meta = read_meta(folder, expected_meta(corpus, embedder, spec))
    path = folder / "index.faiss"
    try:
        digest, size = file_sha256(path), path.stat().st_size
    except FileNotFoundError:
        raise CacheError("index.faiss is missing") from None
    except OSError as e:  # e.g. a folder named index.faiss
        raise CacheError(f"index.faiss cannot be read ({e.strerror or type(e).__name__})") from None
    if digest != meta.get("index_sha256"):
        raise CacheError(f"index.faiss checksum does not match meta.json ({size} bytes): "
                         "the file is truncated or modified")
    try:
        index = read_index_file(path, mmap=mmap)
    except RuntimeError as e:
        raise CacheError(f"FAISS cannot read index.faiss ({str(e).strip().splitlines()[-1]})") from None
    if index.d != embedder.dim or index.ntotal != len(corpus):
        raise CacheError(f"index.faiss holds {index.ntotal} vectors of dim {index.d}, expected "
                         f"{len(corpus)} of dim {embedder.dim}")
    configure(index, spec)
    return index


def save_cached(folder: Path, index: faiss.Index, meta: dict) -> None:
    """Write index.faiss then meta.json into a temporary sibling folder and rename it into place,
    so ``folder`` is either absent or complete; a failure removes the temporary folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name[:16]}.", suffix=".tmp", dir=folder.parent))
    try:
        faiss.write_index(index, str(tmp / "index.faiss"))  # same bytes as serialize_index, no copy in memory
        _fsync(tmp / "index.faiss")
        meta = {**meta, "index_sha256": file_sha256(tmp / "index.faiss"),
                "index_bytes": (tmp / "index.faiss").stat().st_size}
        publish_folder(tmp, folder, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_folder(tmp: Path, folder: Path, meta: dict) -> None:
    """Write ``meta.json`` into the finished temporary folder ``tmp`` (last: it marks the folder complete)
    and rename ``tmp`` to ``folder``, replacing a stale one. Shared by the FAISS and the BM25 caches."""
    with open(tmp / "meta.json", "wb") as f:
        f.write(json.dumps(meta, indent=2).encode("utf-8"))
    _fsync(tmp / "meta.json")
    if folder.is_dir() and not folder.is_symlink():  # a stale or corrupt folder we decided to replace
        shutil.rmtree(folder)
    elif folder.exists() or folder.is_symlink():  # a file (or link) where the folder belongs
        folder.unlink()
    try:
        os.replace(tmp, folder)
    except OSError:
        if not (folder / "meta.json").exists():  # not a concurrent build that just won the race
            raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
