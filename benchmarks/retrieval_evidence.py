"""Evidence recall: the share of a world's questions whose top k (question text as the query) holds an
evidence document, per retriever.

    python benchmarks/retrieval_evidence.py                         # WikiFactbook test split, k=5
    python benchmarks/retrieval_evidence.py --retrievers bm25,dense-hashing,hybrid-hashing
    python benchmarks/retrieval_evidence.py --retrievers dense-minilm,hybrid-minilm   # embeds 42k docs once

A question counts as found when any of its top-k documents is in any of its gold evidence chains
(``Task.evidence``; any one chain answers the question). Retrievers are named as in
benchmarks/env_step.py: ``dense-<embedder>``, ``bm25``, ``hybrid-<embedder>`` (BM25 and dense fused by
RRF, searchgym.corpus.hybrid); each index is built with `searchgym.envs.search_env.load_index`, as
``gymnasium.make`` builds it, and cached under ``$SEARCHGYM_CACHE`` (MiniLM embeds WikiFactbook's 42,651
documents once: ~16 min on an idle 2-core CPU). The first search of a retriever also reports how many
seconds the index took to build or load (``index_s``) and the mean search latency per question.

Prints one line per retriever, then ONE JSON line (the last line): ``{"world", "split", "k", "questions",
"retrievers": {name: {"evidence_recall", "found", "index_s", "search_ms"}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from searchgym.envs.search_env import load_index, load_world  # noqa: E402


def parse_retriever(name: str) -> tuple[str, str]:
    """``"bm25"`` -> ("bm25", "hashing") (embedder unused); ``"dense-minilm"`` -> ("dense", "minilm")."""
    if name == "bm25":
        return "bm25", "hashing"
    kind, sep, embedder = name.partition("-")
    if kind not in ("dense", "hybrid") or not sep or not embedder:
        raise SystemExit(f"--retrievers: {name!r} must be bm25, dense-<embedder> or hybrid-<embedder>")
    return kind, embedder


def evidence_recall(taskset, tasks, retriever: str, embedder: str, k: int, batch: int = 64) -> dict:
    start = time.perf_counter()
    index = load_index(taskset, embedder, "flat", progress=True, retriever=retriever)
    index_s = time.perf_counter() - start
    start = time.perf_counter()
    hits = []
    for i in range(0, len(tasks), batch):
        hits += index.search([t.question for t in tasks[i:i + batch]], k)
    search_s = time.perf_counter() - start
    found = sum(any(h.doc_id in {d for chain in t.evidence for d in chain} for h in row)
                for t, row in zip(tasks, hits))
    return {"evidence_recall": round(found / len(tasks), 3), "found": found, "index_s": round(index_s, 1),
            "search_ms": round(1000 * search_s / len(tasks), 2)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--world", default="wikifactbook")
    ap.add_argument("--split", default="test")
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--retrievers", default="bm25,dense-hashing,hybrid-hashing",
                    help="comma-separated: bm25, dense-<embedder>, hybrid-<embedder>")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.retrievers.split(",") if n.strip()]
    specs = {n: parse_retriever(n) for n in names}
    taskset = load_world(args.world)
    tasks = [t for t in taskset.tasks(args.split) if t.evidence]
    results = {}
    for name, (retriever, embedder) in specs.items():
        results[name] = evidence_recall(taskset, tasks, retriever, embedder, args.k)
        r = results[name]
        print(f"{name}: top-{args.k} evidence recall {r['evidence_recall']:.3f} ({r['found']}/{len(tasks)}), "
              f"index {r['index_s']} s, search {r['search_ms']} ms/question", flush=True)
    out = {"world": args.world, "split": args.split, "k": args.k, "questions": len(tasks), "retrievers": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
