"""Retrieval benchmark: what does searchgym's SearchIndex cost over raw sentence-transformers + FAISS?

Same MiniLM model object, same document strings, same batch size, progress bars off on both paths;
the raw path is `model.encode` + `faiss.IndexFlatIP.add/search`. Measured in one run: per-query latency
at batch 1 and 64 (median of interleaved samples, after warm-up) and index build throughput (docs/s,
best of the repeats). Prints a table, then ONE JSON line (the last line) with overhead_ratio
(searchgym/raw batch-1 latency; target <= 1.2) and build_ratio (searchgym/raw throughput; >= 0.95).

    python benchmarks/retrieval.py            # 10k Wikipedia leads (~10+ min on 2 CPU cores)
    python benchmarks/retrieval.py --quick    # 1k docs cut to 200 chars, fewer repeats (< 1 min idle)
    python benchmarks/retrieval.py --threads 1   # on a busy shared machine: avoids OpenMP spin-waits
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import faiss  # noqa: E402

from searchgym.corpus.documents import Corpus, Document  # noqa: E402
from searchgym.corpus.embedders import get_embedder  # noqa: E402
from searchgym.corpus.index import build_index, document_text  # noqa: E402

BATCH_SIZE = 64  # the encode batch size both paths use, for documents and queries
K = 10


def load_documents(n: int, max_chars: int | None) -> tuple[list[Document], str]:
    """The first n Wikipedia leads when the source is available, else n deterministic synthetic docs."""
    try:
        from searchgym.corpus.sources import load_source

        docs, source = load_source("wikipedia")[:n], "wikipedia"
    except Exception as e:  # noqa: BLE001 - any failure means "no real corpus here"
        print(f"(wikipedia source unavailable: {e}; using synthetic documents)", file=sys.stderr)
        rng = random.Random(0)
        vocab = ["".join(rng.choice("aeioubcdfghklmnprstvz") for _ in range(rng.randint(3, 9)))
                 for _ in range(3000)]
        docs = [Document(f"syn{i}", " ".join(rng.sample(vocab, 2)).title(),
                         " ".join(rng.choice(vocab) for _ in range(rng.randint(60, 120))) + ".")
                for i in range(n)]
        source = "synthetic"
    if max_chars:
        docs = [Document(d.id, d.title, d.text[:max_chars], d.meta) for d in docs]
    return docs, source


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k short docs, fewer repeats (< 1 min)")
    parser.add_argument("--docs", type=int, help="number of documents (default 10000, quick 1000)")
    parser.add_argument("--threads", type=int, help="torch and FAISS threads (default: their own)")
    parser.add_argument("--repeats", type=int, help="latency passes over the queries (default 5, quick 2)")
    args = parser.parse_args()
    n_docs = args.docs or (1000 if args.quick else 10_000)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    build_rounds = 1 if args.quick else 2

    # -- set-up: documents, the one shared model, queries --------------------------------------------
    docs, source = load_documents(n_docs, 200 if args.quick else None)
    corpus = Corpus(docs, name=f"bench-{source}")
    embedder = get_embedder("minilm")
    model = embedder.model  # the raw path uses the very same SentenceTransformer object
    texts = [document_text(d) for d in corpus]
    rng = random.Random(1)
    queries = [f"what is known about {d.title}?" for d in rng.sample(docs, 64)]
    model.encode(texts[:BATCH_SIZE], batch_size=BATCH_SIZE, show_progress_bar=False)  # warm-up

    # -- 1. build throughput: raw encode + add vs build_index (cache write included), interleaved ------
    raw_times, sg_times = [], []
    raw_index = sg_index = None
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(build_rounds):
            def raw_build():
                nonlocal raw_index
                vectors = model.encode(texts, batch_size=BATCH_SIZE, show_progress_bar=False,
                                       convert_to_numpy=True)
                raw_index = faiss.IndexFlatIP(vectors.shape[1])
                raw_index.add(vectors)

            def sg_build():
                nonlocal sg_index
                sg_index = build_index(corpus, embedder, "flat", cache_dir=cache, progress=False,
                                       rebuild=True, batch_size=BATCH_SIZE)

            raw_times.append(timed(raw_build))
            sg_times.append(timed(sg_build))
    raw_tput, sg_tput = len(corpus) / min(raw_times), len(corpus) / min(sg_times)

    # -- 2. query latency, batch 1 and 64: samples interleaved so load spikes hit both paths ----------
    def raw_search(batch):
        vectors = model.encode(batch, batch_size=BATCH_SIZE, show_progress_bar=False, convert_to_numpy=True)
        return raw_index.search(vectors, K)

    def sg_search(batch):
        return sg_index.search(batch, K)

    for q in queries[:8]:  # warm-up both paths
        raw_search([q]), sg_search([q])
    lat = {("raw", 1): [], ("searchgym", 1): [], ("raw", 64): [], ("searchgym", 64): []}
    for r in range(repeats):
        for i, q in enumerate(queries):
            pair = [("raw", raw_search), ("searchgym", sg_search)]
            for name, fn in pair if (i + r) % 2 else pair[::-1]:  # alternate who goes first
                lat[(name, 1)].append(timed(lambda fn=fn, q=q: fn([q])))
        for name, fn in [("raw", raw_search), ("searchgym", sg_search)][:: 1 if r % 2 else -1]:
            lat[(name, 64)].append(timed(lambda fn=fn: fn(queries)) / len(queries))
    ms = {key: 1000 * statistics.median(v) for key, v in lat.items()}

    # sanity: both paths return the same documents for the same query
    same = [h.doc_id for h in sg_search(queries[:1])[0]] == [corpus.documents[j].id
                                                              for j in raw_search(queries[:1])[1][0]]

    # -- report ---------------------------------------------------------------------------------------
    result = {
        "benchmark": "retrieval", "source": source, "docs": len(corpus), "quick": args.quick, "k": K,
        "batch_size": BATCH_SIZE, "repeats": repeats, "threads": faiss.omp_get_max_threads(),
        "latency_ms": {f"{name}_b{b}": round(v, 3) for (name, b), v in ms.items()},
        "build_docs_per_s": {"raw": round(raw_tput, 1), "searchgym": round(sg_tput, 1)},
        "overhead_ratio": round(ms[("searchgym", 1)] / ms[("raw", 1)], 3),
        "overhead_ratio_b64": round(ms[("searchgym", 64)] / ms[("raw", 64)], 3),
        "build_ratio": round(sg_tput / raw_tput, 3),
        "same_results": same,
    }
    result["meets_targets"] = result["overhead_ratio"] <= 1.2 and result["build_ratio"] >= 0.95
    print(f"retrieval benchmark: {len(corpus)} {source} docs, MiniLM on CPU, k={K}, batch_size={BATCH_SIZE}")
    print(f"{'':28}{'raw':>12}{'searchgym':>12}{'ratio':>8}")
    for b in (1, 64):
        raw, sg = ms[("raw", b)], ms[("searchgym", b)]
        print(f"{f'latency/query, batch {b} (ms)':28}{raw:12.2f}{sg:12.2f}{sg / raw:8.3f}")
    print(f"{'build throughput (docs/s)':28}{raw_tput:12.1f}{sg_tput:12.1f}{sg_tput / raw_tput:8.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
