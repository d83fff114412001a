"""Env step throughput per tool, and search-step latency vs the raw retrieval call it wraps.

    python benchmarks/env_step.py [--quick] [--env searchgym/SyntheticWorld-v0] [--embedder minilm]

Same queries, same index, same run: the baseline is ``SearchIndex.search([q], k)`` alone; the env
adds action parsing, the tool, observation formatting and info. Prints a table, then (last line)
a JSON object with ``"search_step_ratio"`` (env search step / raw search, median latency; target <= 1.2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import gymnasium

import searchgym  # noqa: F401
from searchgym.envs.actions import format_tool_call
from searchgym.tasks import ToolCall


def _median_ms(fn, items, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        for item in items:
            t = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="searchgym/SyntheticWorld-v0")
    parser.add_argument("--embedder", default="minilm")
    parser.add_argument("--quick", action="store_true", help="fewer queries and repeats (< 1 minute)")
    args = parser.parse_args()
    n_queries, repeats = (40, 2) if args.quick else (200, 3)

    env = gymnasium.make(args.env, embedder=args.embedder, max_steps=10**6, progress=True)
    base = env.unwrapped
    tasks = base.tasks[:n_queries]
    queries = [t.question for t in tasks]
    k = base.tools.top_k
    env.reset(seed=0)

    # Warm up both paths (first-call allocations, model graph).
    base.index.search(queries[:4], k)
    for q in queries[:4]:
        env.step(format_tool_call(ToolCall("search", {"query": q})))

    raw_ms = _median_ms(lambda q: base.index.search([q], k), queries, repeats)
    actions = [format_tool_call(ToolCall("search", {"query": q})) for q in queries]
    env_ms = _median_ms(env.step, actions, repeats)

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
    print(f"{args.env}  embedder={args.embedder}  docs={len(base.index.corpus)}  queries={len(queries)}")
    print(f"{'path':36s} {'median ms':>10s} {'steps/s':>10s}")
    for name, ms in rows:
        print(f"{name:36s} {ms:10.3f} {1000 / ms:10.1f}")
    result = {"env": args.env, "embedder": args.embedder, "raw_search_ms": round(raw_ms, 4),
              "search_step_ms": round(env_ms, 4), "open_step_ms": round(open_ms, 4),
              "invalid_step_ms": round(bad_ms, 4), "reset_answer_ms": round(reset_answer_ms, 4),
              "search_step_ratio": round(env_ms / raw_ms, 3)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
