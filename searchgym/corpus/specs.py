"""Index specs: a FAISS index type and its options, parsed, validated and turned into a FAISS index.

``"flat"`` (exact), ``"hnsw:M=32,ef_search=64"``, ``"ivf:nlist=auto,nprobe=8"``, and the compressed
``"ivfpq:nlist=1024,m=64,nbits=8,nprobe=16"`` / ``"opq+ivfpq:..."`` (FAISS ``index_factory``
``IVF{nlist},PQ{m}x{nbits}np``, with an OPQ rotation first). Compressed indexes are trained on a sample
of the vectors, so building one never needs every vector in memory at once.

``refine=sq8`` / ``refine=flat`` on an IVF-PQ spec re-ranks its ``k_factor * k`` best candidates with
more exact vectors (FAISS ``IndexRefine``: ``...,Refine(SQ8)`` keeps d more bytes a vector, ``...,RFlat``
4*d more). The default ``refine=none`` is left out of ``str(spec)``, so specs without it keep their
cache keys.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)

# Options each index type accepts, with their defaults (nlist=0 and m=0 mean "choose from the data").
_PQ = {"nlist": 0, "m": 0, "nbits": 8, "nprobe": 16, "refine": "none", "k_factor": 4}
INDEX_OPTIONS: dict[str, dict[str, int | str]] = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 80, "ef_search": 64},
    "ivf": {"nlist": 0, "nprobe": 8},
    "ivfpq": dict(_PQ),
    "opq+ivfpq": dict(_PQ),
}
AUTO_OPTIONS = ("nlist", "m")  # may be 0, written "auto"
CHOICE_OPTIONS = {"refine": ("none", "sq8", "flat")}  # options whose value is one of these words
REFINE_FACTORY = {"sq8": "Refine(SQ8)", "flat": "RFlat"}  # FAISS index_factory suffix of each refine
NBITS = (4, 5, 6, 7, 8, 10, 12)  # PQ code sizes FAISS trains sensibly; 8 is the fast, usual one
TRAIN_POINTS_PER_LIST = 64  # training sample: this many vectors per IVF list (k-means asks for >= 39)


class IndexSpecError(ValueError):
    """An index spec with an unknown type or option, saying which ones exist."""


@dataclass(frozen=True)
class IndexSpec:
    """A FAISS index type and its options; ``str(spec)`` is canonical and keys the cache.

    >>> str(IndexSpec.parse("hnsw:ef_search=128"))
    'hnsw:M=32,ef_construction=80,ef_search=128'
    >>> IndexSpec.parse("ivf:nlist=64,nprobe=4").options
    {'nlist': 64, 'nprobe': 4}
    >>> str(IndexSpec.parse(" flat "))
    'flat'
    >>> str(IndexSpec.parse("opq+ivfpq:nlist=1024,m=32"))
    'opq+ivfpq:m=32,nbits=8,nlist=1024,nprobe=16'
    >>> str(IndexSpec.parse("ivfpq:m=32,refine=sq8"))
    'ivfpq:k_factor=4,m=32,nbits=8,nlist=auto,nprobe=16,refine=sq8'
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
            if key in CHOICE_OPTIONS:
                if value not in CHOICE_OPTIONS[key]:
                    raise IndexSpecError(f"index option {key} must be one of {list(CHOICE_OPTIONS[key])}, "
                                         f"got {value!r}")
                options[key] = value
                continue
            if value == "auto" and key in AUTO_OPTIONS:
                value = 0
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key in AUTO_OPTIONS else 1):
                raise IndexSpecError(f"index option {key} must be a positive integer"
                                     f"{' or auto' if key in AUTO_OPTIONS else ''}, got {value!r}")
            if key == "nbits" and value not in NBITS:
                raise IndexSpecError(f"index option nbits must be one of {list(NBITS)}, got {value!r}")
            options[key] = value
        if "k_factor" in self.options and options.get("refine") == "none":
            raise IndexSpecError("index option k_factor only applies with refine=sq8 or refine=flat, "
                                 "got refine=none")
        object.__setattr__(self, "options", options)

    @classmethod
    def parse(cls, spec: str) -> IndexSpec:
        """Parse ``"type"`` or ``"type:key=value,key=value"``."""
        if not isinstance(spec, str):
            raise IndexSpecError(f"index spec must be a string like 'ivfpq:nlist=1024,m=64', got {spec!r}")
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
        shown = {k: ("auto" if k in AUTO_OPTIONS and v == 0 else v) for k, v in self.options.items()
                 if self.refine != "none" or k not in ("refine", "k_factor")}  # old specs keep their keys
        return self.type + ":" + ",".join(f"{k}={v}" for k, v in sorted(shown.items()))

    def __hash__(self) -> int:
        return hash(str(self))

    @property
    def refine(self) -> str:
        """How IVF-PQ candidates are re-ranked: "none", "sq8" or "flat"."""
        return self.options.get("refine", "none")

    @property
    def trained(self) -> bool:
        """Whether building needs a training sample (IVF coarse quantizer, PQ codebooks)."""
        return self.type in ("ivf", "ivfpq", "opq+ivfpq")


def effective_nlist(requested: int, n: int) -> int:
    """IVF list count: ``requested`` capped at ``n``; auto (0) = 4*sqrt(n), but at most n/39 so
    k-means gets the 39 points per centroid FAISS asks for, and at least 1.

    >>> effective_nlist(0, 10_000), effective_nlist(0, 30), effective_nlist(64, 20)
    (256, 1, 20)
    """
    if requested:
        return max(1, min(requested, n))
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def effective_m(requested: int, dim: int) -> int:
    """PQ sub-quantizer count: ``requested`` (it must divide ``dim``); auto (0) = the largest divisor
    of ``dim`` that is at most dim/4 (4 dimensions per byte-sized code: 16x smaller than float32).

    >>> effective_m(0, 768), effective_m(0, 256), effective_m(48, 384)
    (192, 64, 48)
    >>> effective_m(7, 256)
    Traceback (most recent call last):
    ...
    searchgym.corpus.specs.IndexSpecError: index option m=7 must divide the embedding dimension 256; allowed: [1, 2, 4, 8, 16, 32, 64, 128, 256]
    """
    if requested:
        if dim % requested:
            divisors = [d for d in range(1, dim + 1) if dim % d == 0]
            raise IndexSpecError(f"index option m={requested} must divide the embedding dimension {dim}; "
                                 f"allowed: {divisors}")
        return requested
    return max(d for d in range(1, max(dim // 4, 1) + 1) if dim % d == 0)


def check_fits(spec: IndexSpec, dim: int | None = None, n: int | None = None) -> None:
    """Refuse a spec that cannot be built for ``n`` vectors of ``dim`` (None: not known yet, not checked):
    an IVF-PQ ``m`` that does not divide ``dim``, or an ``nbits`` whose codebooks need more vectors than the
    corpus has. Both used to surface only when the index was built, after the whole corpus was embedded;
    recipes call this at load and `build_index` before embedding.

    >>> check_fits(IndexSpec.parse("ivfpq:m=8"), dim=32, n=300)
    >>> check_fits(IndexSpec.parse("ivfpq:nbits=8"), n=100)
    Traceback (most recent call last):
    ...
    searchgym.corpus.specs.IndexSpecError: index option nbits=8 needs at least 256 vectors to train its codebooks, the corpus has 100; use a smaller nbits (one of [4, 5, 6, 7, 8, 10, 12]) or index type 'flat'
    """
    if spec.type not in ("ivfpq", "opq+ivfpq"):
        return
    if dim is not None:
        effective_m(spec.options["m"], dim)
    nbits = spec.options["nbits"]
    if n is not None and n < 2 ** nbits:  # the training sample is min(n, >= 64 * 2**nbits) vectors
        raise IndexSpecError(f"index option nbits={nbits} needs at least {2 ** nbits} vectors to train its "
                             f"codebooks, the corpus has {n}; use a smaller nbits (one of {list(NBITS)}) or "
                             "index type 'flat'")


def train_size(spec: IndexSpec, n: int) -> int:
    """How many vectors train the index: enough for k-means on every list and on every PQ codebook."""
    if not spec.trained:
        return 0
    need = TRAIN_POINTS_PER_LIST * effective_nlist(spec.options["nlist"], n)
    if spec.type != "ivf":
        need = max(need, 64 * 2 ** spec.options["nbits"])
    return min(n, need)


def factory_string(spec: IndexSpec, n: int, dim: int) -> str:
    """The FAISS index_factory description of a spec for ``n`` vectors of ``dim``.

    >>> factory_string(IndexSpec.parse("opq+ivfpq:nlist=1024,m=64"), 10**6, 256)
    'OPQ64,IVF1024,PQ64x8np'
    >>> factory_string(IndexSpec.parse("ivfpq:nlist=1024,m=64,refine=sq8"), 10**6, 256)
    'IVF1024,PQ64x8np,Refine(SQ8)'
    """
    o = spec.options
    if spec.type == "flat":
        return "Flat"
    if spec.type == "hnsw":
        return f"HNSW{o['M']},Flat"
    nlist = effective_nlist(o["nlist"], n)
    if spec.type == "ivf":
        return f"IVF{nlist},Flat"
    m = effective_m(o["m"], dim)
    # "np": no polysemous training (a slow annealing of the codes that only a Hamming-threshold search uses)
    refine = f",{REFINE_FACTORY[spec.refine]}" if spec.refine != "none" else ""
    return (f"OPQ{m}," if spec.type == "opq+ivfpq" else "") + f"IVF{nlist},PQ{m}x{o['nbits']}np" + refine


def make_faiss_index(spec: IndexSpec, n: int, dim: int, sample: np.ndarray | None = None) -> faiss.Index:
    """An empty FAISS index for ``n`` vectors, trained on ``sample`` when the spec needs training."""
    o = spec.options
    if spec.type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif spec.type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, o["M"], faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = o["ef_construction"]
    elif spec.type == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, effective_nlist(o["nlist"], n),
                                   faiss.METRIC_INNER_PRODUCT)
    else:
        if sample is not None:
            check_fits(spec, dim, len(sample))
        index = faiss.index_factory(dim, factory_string(spec, n, dim), faiss.METRIC_INNER_PRODUCT)
    if spec.trained:
        if sample is None:
            raise ValueError(f"index {spec} needs training vectors")
        log.info("training %s on %d vectors", spec, len(sample))
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    configure(index, spec)
    return index


def configure(index: faiss.Index, spec: IndexSpec) -> None:
    """Search-time knobs, set after building and after loading (they are not stored in the file): efSearch,
    nprobe, and a refine index's k_factor (its IVF index, whose nprobe is set, is its base_index)."""
    if spec.type == "hnsw":
        index.hnsw.efSearch = spec.options["ef_search"]
    elif spec.trained:
        if spec.refine != "none":
            refine = faiss.downcast_index(index)
            refine.k_factor = float(spec.options["k_factor"])
            index = faiss.downcast_index(refine.base_index)
        ivf = faiss.extract_index_ivf(index)
        ivf.nprobe = min(spec.options["nprobe"], ivf.nlist)


def ivf_lists(index: faiss.Index) -> int | None:
    """The list count of an IVF index (recorded in meta.json), else None."""
    try:
        return int(faiss.extract_index_ivf(index).nlist)
    except RuntimeError:
        return None
