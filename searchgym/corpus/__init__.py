"""Corpus and retrieval layer: documents, embedders, FAISS indexes and their cache."""

from searchgym.corpus.documents import Corpus, CorpusError, Document

__all__ = ["Corpus", "CorpusError", "Document"]
