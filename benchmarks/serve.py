"""Serving overhead: `searchgym serve` (FastAPI + uvicorn on loopback) against the in-process search.

A generated corpus (benchmarks/retrieval_scale.generate: topic words + common words, deterministic) is
written as JSONL with a recipe (hashing embedder, flat index, memory-mapped), built once into a temporary
$SEARCHGYM_CACHE, then searched two ways with the same queries (12 topic words of a random document):

- in-process (the limit): ``index.search([q], 3)`` from c threads at once (FAISS releases the GIL);
- served: ``searchgym serve RECIPE --workers W`` in a subprocess, which loads the same cached index; a
  closed-loop load generator in this process keeps c requests in flight (c threads, one keep-alive
  connection each, ``{"queries": [q], "topk": 3, "return_scores": true}``), bounded by a request count
  and a time limit per phase.

At concurrency 1, 8 and 32 it reports queries/s and p50/p99 latency for both, and ``served_over_limit``
(served / in-process queries/s). ``serve_overhead_ratio`` = served p50 / in-process p50 at batch 1 and
concurrency 1 (target <= 1.5), measured in interleaved rounds so a load spike hits both; ``batch_ratio``
is the same for one request of 32 queries (one index call either way). The client runs on the same
cores as the server, so served throughput at high concurrency also pays for the client.

    nice -n 19 python benchmarks/serve.py --quick       # 50k documents, ~1 min
    nice -n 19 python benchmarks/serve.py               # 200k documents
The last line printed is one JSON object.
"""

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from retrieval_scale import generate  # noqa: E402

TOPK = 3


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summary(latencies: list[float], wall: float) -> dict:
    return {"requests": len(latencies), "qps": round(len(latencies) / wall, 1),
            "p50_ms": round(1000 * percentile(latencies, 0.5), 3),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 3)}


def closed_loop(call, items: list, concurrency: int, limit_s: float) -> tuple[list[float], float]:
    """``call(item)`` from ``concurrency`` threads, each taking the next item until none is left or
    ``limit_s`` has passed; per-call latencies and the wall time."""
    latencies: list[float] = []
    lock, position = threading.Lock(), iter(range(len(items)))
    start = time.perf_counter()
    deadline = start + limit_s
    errors: list[BaseException] = []

    def run():
        state = {}
        try:
            while time.perf_counter() < deadline:
                with lock:
                    i = next(position, None)
                if i is None:
                    return
                t = time.perf_counter()
                call(items[i], state)
                elapsed = time.perf_counter() - t
                with lock:
                    latencies.append(elapsed)
        except BaseException as e:  # reported after join: a failing phase must not look fast
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return latencies, time.perf_counter() - start


class Client:
    """One keep-alive connection per load-generator thread (held in that thread's ``state``)."""

    def __init__(self, port: int):
        self.port = port

    def post(self, body: dict, state: dict) -> dict:
        # uvicorn closes a keep-alive connection idle for 5 s (at the default size a phase runs longer than that
        # while another phase's connection waits): reconnect once, as HTTP clients do with a stale connection.
        for attempt in (0, 1):
            conn = state.get("conn")
            if conn is None:
                conn = state["conn"] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            try:
                conn.request("POST", "/retrieve", body=json.dumps(body), headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                conn.close()
                state["conn"] = None
                if attempt:
                    raise
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return json.loads(data)

    def search(self, query: str, state: dict) -> None:
        self.post({"queries": [query], "topk": TOPK, "return_scores": True}, state)


def start_server(recipe: Path, workers: int, env: dict) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "searchgym.cli", "serve", str(recipe), "--port", str(port),
                             "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 600
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not answer /health within 600 s")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, port
        except OSError:
            time.sleep(0.25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50k documents, fewer requests (CI)")
    parser.add_argument("--docs", type=int, help="documents (default 200,000; quick 50,000)")
    parser.add_argument("--dim", type=int, default=256, help="hashing embedder dimension")
    parser.add_argument("--index", default="flat", help="[index] type of the recipe (its defaults)")
    parser.add_argument("--requests", type=int, help="requests per phase (default 2,000; quick 400)")
    parser.add_argument("--limit-s", type=float, default=60.0, help="time limit per phase")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers of the server")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads (server and in-process)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from searchgym import serve

    n = args.docs or (50_000 if args.quick else 200_000)
    requests = args.requests or (400 if args.quick else 2_000)
    load_start = os.getloadavg()
    tmp = tempfile.TemporaryDirectory()
    root = Path(tmp.name)
    os.environ["SEARCHGYM_CACHE"] = str(root / "cache")
    docs, rng = generate(n)
    with open(root / "docs.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"id": d.id, "title": d.title, "text": d.text}) + "\n")
    recipe = root / "bench.toml"
    recipe.write_text(f'[corpus]\nsource = "jsonl"\npath = "docs.jsonl"\nname = "synthetic-{n}"\n'
                      f'[embedder]\nname = "hashing:dim={args.dim}"\n[index]\ntype = "{args.index}"\nmmap = true\n')
    t = time.perf_counter()
    service = serve.load_retriever(recipe, "dense", progress=False)
    build_s = time.perf_counter() - t
    index = service.index
    queries = [" ".join(docs[int(j)].text.split()[:12]) for j in rng.integers(0, n, requests)]
    del docs
    print(f"{n:,} documents, index {index.spec} built in {build_s:.0f}s; starting the server", file=sys.stderr)
    proc, port = start_server(recipe, args.workers, {**os.environ})
    client = Client(port)
    try:
        for q in queries[:20]:  # warm-up: page cache, thread pools, connections
            index.search([q], TOPK)
            client.search(q, {})

        # concurrency 1, interleaved rounds: in-process, served, in-process, ...
        rounds, inproc1, served1, walls = 5, [], [], {"in_process": 0.0, "served": 0.0}
        state: dict = {}
        for r in range(rounds):
            part = queries[r::rounds]
            for name, call, into in (("in_process", lambda q, s: index.search([q], TOPK), inproc1),
                                     ("served", lambda q, s: client.search(q, state), served1)):
                lat, wall = closed_loop(call, part, 1, args.limit_s / rounds)
                into.extend(lat)
                walls[name] += wall
        results = {"1": {"in_process": summary(inproc1, walls["in_process"]),
                         "served": summary(served1, walls["served"])}}
        for c in (8, 32):
            lat_i, wall_i = closed_loop(lambda q, s: index.search([q], TOPK), queries, c, args.limit_s)
            lat_s, wall_s = closed_loop(client.search, queries, c, args.limit_s)
            results[str(c)] = {"in_process": summary(lat_i, wall_i), "served": summary(lat_s, wall_s)}
        for row in results.values():
            row["served_over_limit"] = round(row["served"]["qps"] / row["in_process"]["qps"], 3)

        batch = queries[:32]
        b_in, b_srv = [], []
        for _ in range(10 if args.quick else 30):
            t = time.perf_counter()
            index.search(batch, TOPK)
            b_in.append(time.perf_counter() - t)
            t = time.perf_counter()
            client.post({"queries": batch, "topk": TOPK, "return_scores": True}, state)
            b_srv.append(time.perf_counter() - t)
        same = client.post({"queries": queries[:50], "topk": TOPK, "return_scores": True}, {})["result"]
        expected = index.search(queries[:50], TOPK)
        same_results = all([r["document"]["id"] for r in got] == [h.doc_id for h in want]
                           and all(abs(r["score"] - h.score) <= 1e-6 for r, h in zip(got, want))
                           for got, want in zip(same, expected))
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        tmp.cleanup()

    ratio = results["1"]["served"]["p50_ms"] / results["1"]["in_process"]["p50_ms"]
    batch_ratio = statistics.median(b_srv) / statistics.median(b_in)
    print(f"\n{n:,} docs, {index.spec}, hashing:dim={args.dim}, {args.workers} worker(s), OMP threads "
          f"{args.threads}, load {load_start[0]:.2f} -> {os.getloadavg()[0]:.2f}")
    print(f"{'concurrency':>11} | {'in-process q/s':>14} {'p50 ms':>8} {'p99 ms':>8} | {'served q/s':>10} "
          f"{'p50 ms':>8} {'p99 ms':>8} | served/limit")
    for c, row in results.items():
        i, s = row["in_process"], row["served"]
        print(f"{c:>11} | {i['qps']:>14} {i['p50_ms']:>8} {i['p99_ms']:>8} | {s['qps']:>10} {s['p50_ms']:>8} "
              f"{s['p99_ms']:>8} | {row['served_over_limit']}")
    print(f"serve_overhead_ratio (batch 1, p50) {ratio:.3f} (target <= 1.5); batch of 32: "
          f"{1000 * statistics.median(b_in):.1f} ms in-process, {1000 * statistics.median(b_srv):.1f} ms served "
          f"(ratio {batch_ratio:.3f}); same results: {same_results}")
    print(json.dumps({"docs": n, "index": str(index.spec), "embedder": f"hashing:dim={args.dim}",
                      "workers": args.workers, "omp_threads": args.threads, "build_s": round(build_s, 1),
                      "concurrency": results, "serve_overhead_ratio": round(ratio, 3),
                      "batch32_ms": {"in_process": round(1000 * statistics.median(b_in), 2),
                                     "served": round(1000 * statistics.median(b_srv), 2)},
                      "batch_ratio": round(batch_ratio, 3), "same_results": same_results,
                      "meets_target": ratio <= 1.5 and same_results,
                      "load_avg": [round(load_start[0], 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
