"""Streamed, resumable embedding of a corpus, with a progress bar (tqdm, with ETA) on every build.

Documents are embedded in chunks. A corpus larger than ``checkpoint_every`` documents writes its
vectors into ``<cache_dir>/.partial/<key>/vectors.npy`` (a float32 memmap, so a million vectors never
need to fit in memory) and, every ``checkpoint_every`` documents, a ``progress.json`` marker saying how
many rows are final; Ctrl-C first writes one covering every chunk embedded so far, then stops the build.
An interrupted build (Ctrl-C, a crash, a killed job) resumes from the last marker;
a partial whose marker, shape or checksum disagrees with what is being built is discarded with a
warning and embedding starts over. build_index removes the partial once the index is cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from searchgym.corpus.documents import Corpus, Document
from searchgym.corpus.embedders import DEFAULT_BATCH_SIZE, Embedder, encode_passages
from searchgym.util.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT_EVERY = 10_000
PARTIAL_FORMAT = 1
TAIL_ROWS = 256  # rows before the marker covered by its checksum (catches a truncated or overwritten tail)


def document_text(doc: Document) -> str:
    """What gets embedded: the title helps short lead paragraphs that never repeat their subject."""
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


def partial_dir(cache_dir: Path, key: str) -> Path:
    return cache_dir / ".partial" / key


def discard_partial(folder: Path) -> None:
    """Remove a partial embedding folder, and ``.partial`` itself once empty."""
    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:
        pass


def _marker(corpus: Corpus, embedder: Embedder) -> dict:
    return {"format": PARTIAL_FORMAT, "corpus_hash": corpus.hash, "embedder": embedder.id,
            "dim": embedder.dim, "n": len(corpus)}


def _tail_sha(vectors: np.ndarray, done: int) -> str:
    return hashlib.sha256(np.ascontiguousarray(vectors[max(0, done - TAIL_ROWS):done]).tobytes()).hexdigest()


def _resume(folder: Path, corpus: Corpus, embedder: Embedder) -> tuple[np.ndarray, int] | None:
    """(vectors memmap, rows done) of a usable partial, else None (after warning about an unusable one)."""
    marker_path, vectors_path = folder / "progress.json", folder / "vectors.npy"
    if not marker_path.exists():
        return None
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
        if not isinstance(marker, dict):
            raise ValueError("progress.json is not a JSON object")
        for key, want in _marker(corpus, embedder).items():
            if marker.get(key) != want:
                raise ValueError(f"progress.json has {key}={marker.get(key)!r}, expected {want!r}")
        done = marker.get("done")
        if isinstance(done, bool) or not isinstance(done, int) or not 0 <= done <= len(corpus):
            raise ValueError(f"progress.json has done={done!r}, expected 0..{len(corpus)}")
        try:
            vectors = np.lib.format.open_memmap(vectors_path, mode="r+")
        except (OSError, ValueError) as e:
            raise ValueError(f"vectors.npy cannot be read ({e})") from None
        if vectors.shape != (len(corpus), embedder.dim) or vectors.dtype != np.float32:
            raise ValueError(f"vectors.npy holds {vectors.dtype} {vectors.shape}, expected float32 "
                             f"{(len(corpus), embedder.dim)}")
        if _tail_sha(vectors, done) != marker.get("tail_sha256"):
            raise ValueError("vectors.npy does not match the checksum in progress.json")
    except (OSError, ValueError) as e:  # JSONDecodeError and a bad .npy header are ValueErrors
        log.warning("discarding the partial embedding in %s: %s; embedding from the start", folder, e)
        discard_partial(folder)
        return None
    log.info("resuming the embedding in %s at document %d of %d", folder, done, len(corpus))
    return vectors, done


def _start_partial(folder: Path, corpus: Corpus, embedder: Embedder) -> np.ndarray | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        vectors = np.lib.format.open_memmap(folder / "vectors.npy", mode="w+", dtype=np.float32,
                                            shape=(len(corpus), embedder.dim))
        _checkpoint(folder, vectors, 0, corpus, embedder)
        return vectors
    except OSError as e:
        log.warning("cannot checkpoint the embedding in %s (%s); embedding in memory, without resume", folder, e)
        return None


def _checkpoint(folder: Path, vectors: np.ndarray, done: int, corpus: Corpus, embedder: Embedder) -> None:
    if isinstance(vectors, np.memmap):
        vectors.flush()  # rows first, then the marker that declares them final
    marker = {**_marker(corpus, embedder), "done": done, "tail_sha256": _tail_sha(vectors, done)}
    atomic_write(folder / "progress.json", json.dumps(marker).encode("utf-8"))


def _texts(corpus: Corpus, start: int, stop: int) -> list[str]:
    return [document_text(d) for d in corpus.documents[start:stop]]


def chunks(n: int, start: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(start, n, size):
        yield s, min(s + size, n)


def embed_corpus(corpus: Corpus, embedder: Embedder, *, folder: Path | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE, progress: bool = True,
                 checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY) -> np.ndarray:
    """A (len(corpus), dim) float32 array of passage vectors: in memory for small corpora, else a memmap
    in ``folder`` (None: never on disk) that a later call with the same corpus and embedder resumes."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be a positive integer, got {checkpoint_every!r}")
    n, dim = len(corpus), embedder.dim
    vectors, done = None, 0
    if folder is not None and n > checkpoint_every:
        resumed = _resume(folder, corpus, embedder)
        if resumed is not None:
            vectors, done = resumed
        else:
            vectors = _start_partial(folder, corpus, embedder)
    on_disk = vectors is not None
    if vectors is None:
        vectors = np.empty((n, dim), dtype=np.float32)
    step = max(1, min(checkpoint_every, max(batch_size * 16, 1024)))
    from tqdm.auto import tqdm

    bar = tqdm(total=n, initial=done, unit="doc", desc=f"embedding {corpus.name} ({embedder.id})",
               disable=not progress, mininterval=1.0, smoothing=0.05, dynamic_ncols=True)
    last = embedded = done  # rows declared final on disk / rows written into vectors
    try:
        for start, stop in chunks(n, done, step):
            v = encode_passages(embedder, _texts(corpus, start, stop), batch_size=batch_size)
            if not isinstance(v, np.ndarray) or v.shape != (stop - start, dim) or v.dtype != np.float32:
                got = f"{v.dtype} {v.shape}" if isinstance(v, np.ndarray) else type(v).__name__
                raise ValueError(f"embedder {embedder.id} returned {got}; expected float32 {(stop - start, dim)}")
            vectors[start:stop] = v
            embedded = stop
            bar.update(stop - start)
            if on_disk and (stop - last >= checkpoint_every or stop == n):
                _checkpoint(folder, vectors, stop, corpus, embedder)
                last = stop
    except KeyboardInterrupt:
        # Ctrl-C between two checkpoints would lose up to checkpoint_every documents (minutes of a model's
        # time): declare every finished chunk final first, then stop as asked. Only on Ctrl-C: after a crash
        # the rows in memory are not trusted, and a killed job never gets here.
        if on_disk and embedded > last:
            _checkpoint(folder, vectors, embedded, corpus, embedder)
            log.warning("interrupted: %d of %d documents embedded and checkpointed in %s; the same build resumes "
                        "there", embedded, n, folder)
        raise
    finally:
        bar.close()
    return vectors
