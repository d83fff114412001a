"""Documents and corpora: the unit every index, environment and meter agrees on.

A corpus is a list of `Document`s with unique ids, stored as ``documents.jsonl`` plus a
``manifest.json`` (count and a content hash). The hash keys every cache built from the corpus, so
an edited corpus can never be served with a stale index.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from searchgym.util.files import atomic_write

# Chunking policy (documented in the README): a document longer than MAX_DOC_CHARS is split on
# paragraph / sentence boundaries into chunks of at most MAX_DOC_CHARS; chunk i of doc "x" gets id
# "x#i" and keeps the title. Embedders see at most a few hundred tokens anyway, and `open` budgets
# truncate long texts, so splitting keeps every part of a long document searchable.
MAX_DOC_CHARS = 4000


class CorpusError(ValueError):
    """A corpus that cannot be used, with a message that says what to change."""


@dataclass(frozen=True)
class Document:
    """One retrievable unit: ``id`` is unique within its corpus, ``meta`` is free-form JSON."""

    id: str
    title: str
    text: str
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "text": self.text, "meta": self.meta}

    @classmethod
    def from_json(cls, row: dict, where: str = "") -> Document:
        missing = [k for k in ("id", "text") if k not in row]
        if missing:
            raise CorpusError(f"{where}document is missing field(s) {missing}; each JSONL line needs "
                              '{"id": str, "title": str, "text": str, "meta": {...}}')
        return cls(id=str(row["id"]), title=str(row.get("title", "")), text=str(row["text"]),
                   meta=dict(row.get("meta") or {}))


def chunk_document(doc: Document, max_chars: int = MAX_DOC_CHARS) -> list[Document]:
    """Split an over-long document on paragraph/sentence boundaries (see MAX_DOC_CHARS).

    >>> [d.id for d in chunk_document(Document("a", "A", "x. " * 3000), max_chars=4000)]
    ['a#0', 'a#1', 'a#2']
    >>> chunk_document(Document("b", "B", "short"))[0].id
    'b'
    """
    if len(doc.text) <= max_chars:
        return [doc]
    pieces, current = [], ""
    for unit in _units(doc.text):
        while len(unit) > max_chars:  # a single unbroken run of text: hard split
            if current:
                pieces.append(current)
                current = ""
            pieces.append(unit[:max_chars])
            unit = unit[max_chars:]
        if len(current) + len(unit) > max_chars:
            pieces.append(current)
            current = ""
        current += unit
    if current.strip():
        pieces.append(current)
    return [Document(f"{doc.id}#{i}", doc.title, p.strip(), {**doc.meta, "parent": doc.id, "chunk": i})
            for i, p in enumerate(pieces)]


def _units(text: str) -> Iterator[str]:
    """Sentences (with their trailing space/newline), the natural split points of prose."""
    start = 0
    for i, ch in enumerate(text):
        if ch in ".!?\n" and (i + 1 == len(text) or text[i + 1] in " \n"):
            yield text[start:i + 2]
            start = i + 2
    if start < len(text):
        yield text[start:]


class Corpus:
    """An ordered, id-unique collection of documents with a content hash.

    >>> c = Corpus([Document("d1", "One", "first text"), Document("d2", "Two", "second text")])
    >>> len(c), c["d2"].title, "d3" in c
    (2, 'Two', False)
    >>> c.hash == Corpus(list(c)).hash
    True
    """

    def __init__(self, documents: Iterable[Document], *, chunk: bool = True, name: str = "corpus",
                 max_chars: int = MAX_DOC_CHARS):
        self.name = name
        docs: list[Document] = []
        for d in documents:
            if not d.id or not d.id.strip():
                raise CorpusError(f"{name}: a document has an empty id; give every document a unique id")
            if not d.text or not d.text.strip():
                raise CorpusError(f"{name}: document {d.id!r} has empty text; drop it or give it text")
            docs.extend(chunk_document(d, max_chars) if chunk else [d])
        if not docs:
            raise CorpusError(f"{name}: the corpus is empty; it needs at least one document")
        self._by_id: dict[str, int] = {}
        for i, d in enumerate(docs):
            if d.id in self._by_id:
                raise CorpusError(f"{name}: duplicate document id {d.id!r}; document ids must be unique")
            self._by_id[d.id] = i
        self.documents = docs
        self._hash: str | None = None

    def __len__(self) -> int:
        return len(self.documents)

    def __iter__(self) -> Iterator[Document]:
        return iter(self.documents)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._by_id

    def __getitem__(self, doc_id: str) -> Document:
        return self.documents[self._by_id[doc_id]]

    def position(self, doc_id: str) -> int:
        return self._by_id[doc_id]

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.documents]

    @property
    def hash(self) -> str:
        """sha256 over ids, titles and texts in order (meta is not retrieved, so not hashed)."""
        if self._hash is None:
            h = hashlib.sha256()
            for d in self.documents:
                for part in (d.id, d.title, d.text):
                    b = part.encode("utf-8")
                    h.update(len(b).to_bytes(8, "little"))
                    h.update(b)
            self._hash = h.hexdigest()
        return self._hash

    # -- disk format: documents.jsonl + manifest.json ------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``documents.jsonl`` and ``manifest.json`` atomically into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lines = "".join(json.dumps(d.to_json(), ensure_ascii=False) + "\n" for d in self.documents)
        atomic_write(directory / "documents.jsonl", lines.encode("utf-8"))
        manifest = {"name": self.name, "count": len(self), "hash": self.hash}
        atomic_write(directory / "manifest.json", json.dumps(manifest, indent=2).encode("utf-8"))
        return directory

    @classmethod
    def load(cls, path: str | os.PathLike, *, name: str | None = None,
             max_chars: int = MAX_DOC_CHARS) -> Corpus:
        """Load a corpus folder (documents.jsonl + manifest.json) or a bare ``.jsonl`` file.

        A manifest whose count or hash disagrees with the documents is an error, not a warning: it
        means the file was edited or truncated after it was written.
        """
        path = Path(path)
        jsonl = path / "documents.jsonl" if path.is_dir() else path
        if not jsonl.exists():
            raise CorpusError(f"no corpus at {path}: expected a .jsonl file or a folder with documents.jsonl")
        raw = jsonl.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise CorpusError(f"{jsonl}: invalid UTF-8 at line {line} (byte {e.start}); "
                              "re-encode the file as UTF-8") from None
        docs = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{jsonl}:{n}: not valid JSON ({e.msg}); each line must be one JSON object") from None
            if not isinstance(row, dict):
                raise CorpusError(f"{jsonl}:{n}: expected a JSON object, got {type(row).__name__}")
            docs.append(Document.from_json(row, where=f"{jsonl}:{n}: "))
        corpus = cls(docs, name=name or path.stem, chunk=True, max_chars=max_chars)
        manifest = path / "manifest.json" if path.is_dir() else None
        if manifest is not None and manifest.exists():
            m = json.loads(manifest.read_text())
            if m.get("count") != len(corpus) or m.get("hash") != corpus.hash:
                raise CorpusError(f"{manifest} does not match {jsonl} (count/hash differ): the corpus was "
                                  "edited or truncated; re-save it with Corpus.save or delete the manifest")
        return corpus

