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
documents once: 16.4 min on an idle 2-core CPU, 26.8 min on one thread beside other work; then ~5 s to
load). Each retriever also reports how many seconds its index took to build or load (``index_s``) and the
mean search latency per question (batches of 64). Results: benchmarks/README.md, "Evidence recall".

Each retriever after the first is also compared with the first on the same questions (paired): how many
questions only it found, how many only the first found, and the exact two-sided McNemar p of that split.

Prints one line per retriever, then ONE JSON line (the last line): ``{"world", "split", "k", "questions",
"retrievers": {name: {"evidence_recall", "found", "index_s", "search_ms"[, "vs_first": {"reference",
"only_this", "only_reference", "mcnemar_p"}]}}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from math import comb

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
    found = [any(h.doc_id in {d for chain in t.evidence for d in chain} for h in row) for t, row in zip(tasks, hits)]
    return {"evidence_recall": round(sum(found) / len(tasks), 3), "found": sum(found), "index_s": round(index_s, 1),
            "search_ms": round(1000 * search_s / len(tasks), 2), "per_question": found}


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided McNemar p: the discordant questions split ``only_a``/``only_b`` under a fair coin.

    >>> mcnemar_p(25, 9), mcnemar_p(3, 3)
    (0.009, 1.0)
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return round(min(1.0, 2 * tail), 3)


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
    results, first = {}, None
    for name, (retriever, embedder) in specs.items():
        r = results[name] = evidence_recall(taskset, tasks, retriever, embedder, args.k)
        line = (f"{name}: top-{args.k} evidence recall {r['evidence_recall']:.3f} ({r['found']}/{len(tasks)}), "
                f"index {r['index_s']} s, search {r['search_ms']} ms/question")
        if first is None:
            first = name
        else:
            ref = results[first]["per_question"]
            only_this = sum(a and not b for a, b in zip(r["per_question"], ref))
            only_ref = sum(b and not a for a, b in zip(r["per_question"], ref))
            r["vs_first"] = {"reference": first, "only_this": only_this, "only_reference": only_ref,
                             "mcnemar_p": mcnemar_p(only_this, only_ref)}
            line += f"; vs {first}: {only_this} found only here, {only_ref} only there, p={r['vs_first']['mcnemar_p']}"
        print(line, flush=True)
    for r in results.values():
        del r["per_question"]
    out = {"world": args.world, "split": args.split, "k": args.k, "questions": len(tasks), "retrievers": results}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
