"""Env step throughput per tool, search-step latency vs the raw retrieval call it wraps, and each
retriever's first `make` (cold cache) and steady search latency.

    python benchmarks/env_step.py [--quick] [--env searchgym/SyntheticWorld-v0] [--embedder minilm]
                                  [--envs ID,ID] [--retrievers dense-hashing,bm25,hybrid-hashing,...]
                                  [--minilm-max-docs 5000]

Part 1, same queries, same index, same run: the baseline is ``SearchIndex.search([q], k)`` alone; the
env adds action parsing, the tool, observation formatting and info (``--env``, dense ``--embedder``,
the default cache).

Part 2, per env in ``--envs`` and retriever in ``--retrievers`` (``dense-<embedder>``, ``bm25``,
``hybrid-<embedder>``), each in a fresh process with an empty temporary ``$SEARCHGYM_CACHE``:
``make_cold_s`` (the first ``gymnasium.make``: world + index build, after the imports every retriever
shares, which are timed apart as ``imports_s``), ``index_s`` (the index build alone), ``make_warm_s``
(a second make that loads the index from the disk cache, the world memoised), then the median latency of
``index.search([q], k)`` and of an env ``search`` step. MiniLM retrievers are skipped on corpora over
``--minilm-max-docs`` documents (WikiFactbook's 42k take ~16 min to embed on 2 cores).

Prints tables, then (last line) a JSON object with ``"search_step_ratio"`` (part 1: env search step /
raw search, median latency; target <= 1.2) and ``"retrievers"`` (part 2, one object per env x retriever).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time


def _median_ms(fn, items, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _search_action(query: str) -> str:
    from searchgym.envs.actions import format_tool_call
    from searchgym.tasks import ToolCall

    return format_tool_call(ToolCall("search", {"query": query}))


def per_tool(env_id: str, embedder: str, n_queries: int, repeats: int) -> dict:
    """Part 1: the per-tool table on one env (dense retriever, the default cache)."""
    import gymnasium

    import searchgym  # noqa: F401
    from searchgym.envs.actions import format_tool_call
    from searchgym.tasks import ToolCall

    env = gymnasium.make(env_id, embedder=embedder, max_steps=10**6, progress=True)
    base = env.unwrapped
    tasks = base.tasks[:n_queries]
    queries = [t.question for t in tasks]
    k = base.tools.top_k
    env.reset(seed=0)

    # Warm up both paths (first-call allocations, model graph).
    base.index.search(queries[:4], k)
    for q in queries[:4]:
        env.step(_search_action(q))

    raw_ms = _median_ms(lambda q: base.index.search([q], k), queries, repeats)
    env_ms = _median_ms(env.step, [_search_action(q) for q in queries], repeats)

    shown = list(dict.fromkeys(base.tools.state.shown))[:n_queries]
    open_ms = _median_ms(env.step, [format_tool_call(ToolCall("open", {"doc_id": d})) for d in shown], repeats)
    bad_ms = _median_ms(env.step, ["not a tool call"] * n_queries, repeats)

    def answer_step(task):
        env.reset(options={"task_id": task.id})
        env.step(format_tool_call(ToolCall("answer", {"text": task.answers[0]})))

    reset_answer_ms = _median_ms(answer_step, tasks, repeats)

    rows = [("raw SearchIndex.search (batch 1)", raw_ms), ("env step: search", env_ms),
            ("env step: open", open_ms), ("env step: invalid action", bad_ms),
            ("env reset + answer", reset_answer_ms)]
    print(f"{env_id}  embedder={embedder}  docs={len(base.index.corpus)}  queries={len(queries)}")
    print(f"{'path':36s} {'median ms':>10s} {'steps/s':>10s}")
    for name, ms in rows:
        print(f"{name:36s} {ms:10.3f} {1000 / ms:10.1f}")
    return {"env": env_id, "embedder": embedder, "raw_search_ms": round(raw_ms, 4),
            "search_step_ms": round(env_ms, 4), "open_step_ms": round(open_ms, 4),
            "invalid_step_ms": round(bad_ms, 4), "reset_answer_ms": round(reset_answer_ms, 4),
            "search_step_ratio": round(env_ms / raw_ms, 3)}


def _parse_retriever(name: str) -> tuple[str, str]:
    """``"dense-hashing"`` -> ("dense", "hashing"); ``"bm25"`` -> ("bm25", "hashing") (embedder unused)."""
    kind, _, embedder = name.partition("-")
    if kind not in ("dense", "bm25", "hybrid") or (kind != "bm25") != bool(embedder):
        raise SystemExit(f"--retrievers: {name!r} is not dense-<embedder>, bm25 or hybrid-<embedder>")
    return kind, embedder or "hashing"


def child(env_id: str, retriever: str, n_queries: int, repeats: int) -> dict:
    """Part 2, in a fresh process whose $SEARCHGYM_CACHE is empty: first make, warm make, latencies."""
    t = time.perf_counter()
    import gymnasium

    import searchgym  # noqa: F401
    import searchgym.envs.search_env as search_env
    from searchgym.envs.tools import SearchTools

    SearchTools.schemas()  # imports transformers (tool schemas) and torch: the same for every retriever
    search_env._text_space(1500)
    search_env._text_space(search_env.MAX_ACTION_CHARS)
    imports_s = time.perf_counter() - t

    kind, embedder = _parse_retriever(retriever)
    t = time.perf_counter()
    env = gymnasium.make(env_id, retriever=kind, embedder=embedder, max_steps=10**6, progress=False)
    make_cold_s = time.perf_counter() - t
    base = env.unwrapped
    index_s = base.index.seconds
    search_env._INDEX_CACHE.clear()
    t = time.perf_counter()
    warm = gymnasium.make(env_id, retriever=kind, embedder=embedder, max_steps=10**6, progress=False)
    make_warm_s = time.perf_counter() - t
    assert warm.unwrapped.index.from_cache, "the second make did not load the index from the cache"

    queries = [task.question for task in base.tasks[:n_queries]]
    k = base.tools.top_k
    env.reset(seed=0)
    base.index.search(queries[:4], k)  # warm-up
    raw_ms = _median_ms(lambda q: base.index.search([q], k), queries, repeats)
    env_ms = _median_ms(env.step, [_search_action(q) for q in queries], repeats)
    return {"env": env_id, "retriever": retriever, "docs": len(base.index.corpus), "queries": len(queries),
            "imports_s": round(imports_s, 2), "make_cold_s": round(make_cold_s, 2),
            "index_s": round(index_s, 2), "make_warm_s": round(make_warm_s, 2),
            "raw_search_ms": round(raw_ms, 3), "search_step_ms": round(env_ms, 3)}


def _corpus_size(env_id: str) -> int | None:
    """Documents in an env's corpus without building its index (None: unknown)."""
    import gymnasium

    import searchgym  # noqa: F401
    from searchgym.envs.search_env import load_world

    kwargs = gymnasium.spec(env_id).kwargs
    try:
        return len(load_world(kwargs.get("world", "synthetic"), kwargs.get("world_kwargs")).corpus)
    except Exception:
        return None


def per_retriever(envs: list[str], retrievers: list[str], n_queries: int, repeats: int,
                  minilm_max_docs: int) -> list[dict]:
    rows = []
    for env_id in envs:
        docs = _corpus_size(env_id) if any("minilm" in r for r in retrievers) else None
        for retriever in retrievers:
            _parse_retriever(retriever)
            if "minilm" in retriever and (docs is None or docs > minilm_max_docs):
                rows.append({"env": env_id, "retriever": retriever, "docs": docs,
                             "skipped": f"over --minilm-max-docs {minilm_max_docs}"})
                continue
            cache = tempfile.mkdtemp(prefix="searchgym-bench-cache-")
            try:
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", env_id, retriever, "--queries", str(n_queries),
                     "--repeats", str(repeats)],
                    env={**os.environ, "SEARCHGYM_CACHE": cache}, capture_output=True, text=True)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
            if proc.returncode:
                rows.append({"env": env_id, "retriever": retriever,
                             "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]})
            else:
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\n{'env':34s} {'retriever':15s} {'docs':>6s} {'imports s':>9s} {'make cold s':>11s} "
          f"{'index s':>8s} {'make warm s':>11s} {'raw ms':>8s} {'step ms':>8s}")
    for r in rows:
        head = f"{r['env']:34s} {r['retriever']:15s} {r.get('docs') or '?':>6}"
        if "make_cold_s" in r:
            print(f"{head} {r['imports_s']:9.2f} {r['make_cold_s']:11.2f} {r['index_s']:8.2f} "
                  f"{r['make_warm_s']:11.2f} {r['raw_search_ms']:8.3f} {r['search_step_ms']:8.3f}")
        else:
            print(f"{head}  {r.get('skipped') or 'error: ' + r['error']}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="searchgym/SyntheticWorld-v0", help="part 1's env")
    parser.add_argument("--embedder", default="minilm", help="part 1's dense embedder")
    parser.add_argument("--envs", default=None, help="part 2's envs, comma-separated (default: --quick: "
                        "SyntheticWorld-v0; else every built-in env)")
    parser.add_argument("--retrievers", default=None, help="part 2's retrievers, comma-separated (default: "
                        "dense-hashing,bm25,hybrid-hashing, plus dense-minilm,hybrid-minilm without --quick)")
    parser.add_argument("--minilm-max-docs", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="fewer queries and repeats, one env (CI)")
    parser.add_argument("--child", nargs=2, metavar=("ENV", "RETRIEVER"), help=argparse.SUPPRESS)
    parser.add_argument("--queries", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    n_queries, repeats = (40, 2) if args.quick else (200, 3)
    n_queries, repeats = args.queries or n_queries, args.repeats or repeats
    if args.child:
        print(json.dumps(child(*args.child, n_queries, repeats)))
        return

    result = per_tool(args.env, args.embedder, n_queries, repeats)
    builtin = ["searchgym/SyntheticWorld-v0", "searchgym/SyntheticWorld-Easy-v0", "searchgym/WikiFactbook-v0"]
    envs = args.envs.split(",") if args.envs else (builtin[:1] if args.quick else builtin)
    retrievers = (args.retrievers.split(",") if args.retrievers else
                  ["dense-hashing", "bm25", "hybrid-hashing"] + ([] if args.quick else ["dense-minilm", "hybrid-minilm"]))
    result["retrievers"] = per_retriever(envs, retrievers, n_queries, repeats, args.minilm_max_docs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
