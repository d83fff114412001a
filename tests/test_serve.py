"""`searchgym serve`: a real HTTP server on 127.0.0.1 over a tiny corpus, queried with urllib.

The served results must be the in-process search's (same ids, order and scores), in Search-R1's shapes;
every bad request must be a 4xx with a one-line reason and leave the server answering; the CLI must
refuse a bad recipe, port, retriever or worker count in one line with exit 2 before serving.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from typer.testing import CliRunner  # noqa: E402

from searchgym import serve  # noqa: E402
from searchgym.cli import app as cli  # noqa: E402
from searchgym.corpus.corpus_recipe import load_corpus_recipe  # noqa: E402

CORPORA = Path(__file__).resolve().parent.parent / "corpora"
QUERIES = ["capital of Italy", "river through Rome", "largest city of France", "Berlin Wall",
           "mountains and the sea", "zzzz unknownword"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A tiny JSONL corpus and its recipe (hashing embedder, flat index, memory-mapped), in an empty
    $SEARCHGYM_CACHE that the servers (threads and subprocesses) share."""
    root = tmp_path_factory.mktemp("serve")
    shutil.copy(CORPORA / "tiny.jsonl", root / "docs.jsonl")
    path = root / "tiny.toml"
    path.write_text('[corpus]\nsource = "jsonl"\npath = "docs.jsonl"\nname = "tiny"\n'
                    '[embedder]\nname = "hashing:dim=64"\n[index]\ntype = "flat"\nmmap = true\n')
    with pytest.MonkeyPatch.context() as m:
        m.setenv("SEARCHGYM_CACHE", str(root / "cache"))
        yield path


def free_socket() -> socket.socket:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    return s


@contextmanager
def running(app):
    """uvicorn serving ``app`` in a thread, on a socket bound before it starts (no port race)."""
    sock = free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture(scope="module")
def servers(recipe):
    """One served index per retriever, and the same index for in-process search."""
    with running(serve.create_app(dense := serve.load_retriever(recipe, "dense", progress=False))) as d, \
            running(serve.create_app(bm25 := serve.load_retriever(recipe, "bm25", progress=False))) as b, \
            running(serve.create_app(hybrid := serve.load_retriever(recipe, "hybrid", progress=False))) as h:
        yield {"dense": (d, dense), "bm25": (b, bm25), "hybrid": (h, hybrid)}


def post(url: str, body, path: str = "/retrieve") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str, path: str = "/health") -> dict:
    with urllib.request.urlopen(url + path, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def assert_same(served: list, index, queries: list[str], k: int) -> None:
    """Served results = in-process ``index.search(queries, k)``: ids, order, scores within 1e-6,
    and each document's contents in Search-R1's '"Title"\\ntext'."""
    expected = index.search(queries, k)
    assert len(served) == len(expected) == len(queries)
    for got, want in zip(served, expected):
        assert [r["document"]["id"] for r in got] == [h.doc_id for h in want]
        assert all(abs(r["score"] - h.score) <= 1e-6 for r, h in zip(got, want))
        for r in got:
            doc = index.corpus[r["document"]["id"]]
            assert r["document"] == {"id": doc.id, "contents": f'"{doc.title}"\n{doc.text}'}


@pytest.mark.parametrize("retriever", ["dense", "bm25", "hybrid"])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_served_results_are_the_in_process_search(servers, retriever, k):
    url, service = servers[retriever]
    status, body = post(url, {"queries": QUERIES, "topk": k, "return_scores": True})
    assert status == 200 and list(body) == ["result"]
    assert_same(body["result"], service.index, QUERIES, k)
    if retriever != "bm25":  # BM25 finds nothing for a word no document has
        assert all(len(r) == k for r in body["result"])


def test_search_r1_shapes_defaults_and_blank_queries(servers):
    url, service = servers["dense"]
    # Search-R1's default return_scores is false: each query's list holds the documents themselves
    status, body = post(url, {"queries": ["capital of Italy"]})
    assert status == 200
    (docs,) = body["result"]
    assert len(docs) == serve.DEFAULT_TOPK and set(docs[0]) == {"id", "contents"}
    scored = post(url, {"queries": ["capital of Italy"], "return_scores": True, "topk": None})[1]["result"][0]
    assert [r["document"] for r in scored] == docs
    assert docs[0]["contents"].split("\n")[0].strip('"') == service.corpus[docs[0]["id"]].title
    # a blank query gets no hits; the rest of its batch is answered as usual; unknown keys are ignored
    status, body = post(url, {"queries": ["", "capital of Italy", "  "], "topk": 2, "return_scores": True,
                              "extra": 1})
    assert status == 200 and body["result"][0] == [] and body["result"][2] == []
    assert_same(body["result"][1:2], service.index, ["capital of Italy"], 2)
    # topk larger than the corpus returns every document
    assert len(post(url, {"queries": ["Rome"], "topk": 100})[1]["result"][0]) == len(service.corpus)


def test_health(servers):
    for retriever, (url, service) in servers.items():
        health = get(url)
        assert health["status"] == "ok" and health["retriever"] == retriever
        assert health["documents"] == len(service.corpus) == 30 and health["corpus"] == "tiny"
    assert get(servers["dense"][0])["mmap"] is True and get(servers["dense"][0])["index"] == "flat"


def test_a_batch_is_one_index_call(recipe):
    calls = []

    class Counting:
        def __init__(self, index):
            self.index, self.corpus = index, index.corpus

        def search(self, queries, k):
            calls.append((list(queries), k))
            return self.index.search(queries, k)

    service = serve.load_retriever(recipe, "dense", progress=False)
    service.index = Counting(service.index)
    with running(serve.create_app(service)) as url:
        status, body = post(url, {"queries": QUERIES + [""], "topk": 4, "return_scores": True})
    assert status == 200 and len(body["result"]) == len(QUERIES) + 1
    assert calls == [(QUERIES, 4)]


BAD = [
    (b"not json", 400, "not valid JSON"),
    (b"", 400, "not valid JSON"),
    (b"\xff\xfe\x00", 400, "not valid JSON"),
    (b"[" * 100_000, 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    ({"topk": 3}, 400, "queries is missing"),
    ({"queries": []}, 400, "queries is empty"),
    ({"queries": "capital of Italy"}, 400, "must be a list of strings"),
    ({"queries": None}, 400, "must be a list of strings"),
    ({"queries": ["a", 3]}, 400, "queries[1] must be a string, got int"),
    ({"queries": [["a"]]}, 400, "queries[0] must be a string, got list"),
    ({"queries": ["a"], "topk": 0}, 400, "topk must be an integer from 1 to 100, got 0"),
    ({"queries": ["a"], "topk": -3}, 400, "topk must be an integer from 1 to 100"),
    ({"queries": ["a"], "topk": 101}, 400, "got 101"),
    ({"queries": ["a"], "topk": 2.5}, 400, "got 2.5"),
    ({"queries": ["a"], "topk": "3"}, 400, 'got "3"'),
    ({"queries": ["a"], "topk": True}, 400, "got true"),
    (b'{"queries": ["a"], "topk": NaN}', 400, "got NaN"),
    ({"queries": ["a"], "return_scores": "yes"}, 400, "return_scores must be true or false"),
    ({"queries": ["a"] * (serve.MAX_QUERIES + 1)}, 413, "too many queries"),
    ({"queries": ["a"] * 2000, "topk": 100}, 413, "batch too large"),
    (b" " * (serve.MAX_BODY_BYTES + 1), 413, "the body is"),
]


@pytest.mark.parametrize("body,status,reason", BAD, ids=[f"{s}-{r[:24]}" for _, s, r in BAD])
def test_bad_requests_get_a_4xx_with_one_line_and_the_server_keeps_answering(servers, body, status, reason):
    url, service = servers["dense"]
    got, answer = post(url, body)
    assert got == status, answer
    assert list(answer) == ["detail"] and reason in answer["detail"]
    assert "\n" not in answer["detail"] and len(answer["detail"]) < 300
    ok, result = post(url, {"queries": ["capital of Italy"], "topk": 2, "return_scores": True})
    assert ok == 200
    assert_same(result["result"], service.index, ["capital of Italy"], 2)


def test_wrong_method_path_and_a_chunked_oversized_body(servers):
    url = servers["bm25"][0]
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url + "/retrieve", timeout=30)  # GET
    assert e.value.code == 405
    assert post(url, {"queries": ["a"]}, path="/nope")[0] == 404
    # no Content-Length: the body is cut off at the limit while it streams in
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request("POST", "/retrieve", body=iter([b" " * (1 << 20)] * 9), encode_chunked=True,
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 413 and "the body is over" in json.loads(response.read())["detail"]
    conn.close()
    assert post(url, {"queries": ["Rome"], "topk": 1})[0] == 200


def test_a_failing_index_is_a_500_and_the_server_stays_up(recipe):
    service = serve.load_retriever(recipe, "dense", progress=False)
    real = service.index.search
    fail = [True]

    def flaky(queries, k):
        if fail[0]:
            raise RuntimeError("Error in faiss::Index::search\nat line 3")
        return real(queries, k)

    service.index.search = flaky
    with running(serve.create_app(service)) as url:
        status, answer = post(url, {"queries": ["Rome"]})
        assert status == 500 and "\n" not in answer["detail"] and "RuntimeError" in answer["detail"]
        fail[0] = False
        assert post(url, {"queries": ["Rome"]})[0] == 200


def test_cli_refuses_bad_input_in_one_line(recipe, tmp_path):
    runner = CliRunner()
    busy = free_socket()
    try:
        cases = [
            ([str(tmp_path / "missing.toml")], "no recipe file at"),
            ([str(tmp_path / "bad.toml")], "unknown key 'corpus.src'"),
            ([str(recipe), "--port", "0"], "port must be an integer from 1 to 65535, got 0"),
            ([str(recipe), "--port", "70000"], "got 70000"),
            ([str(recipe), "--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1:"),
            ([str(recipe), "--host", "no-such-host.invalid"], "cannot resolve host"),
            ([str(recipe), "--workers", "0"], "workers must be an integer >= 1"),
            ([str(recipe), "--retriever", "sparse"], "retriever must be one of ['dense', 'bm25', 'hybrid']"),
        ]
        (tmp_path / "bad.toml").write_text("[corpus]\nsrc = 1\n")
        for args, message in cases:
            result = runner.invoke(cli, ["serve", *args])
            assert result.exit_code == 2, (args, result.output)
            assert message in result.output and "Traceback" not in result.output, (args, result.output)
            assert len(result.output.strip().splitlines()) == 1, result.output
    finally:
        busy.close()


def test_the_command_serves_with_two_workers_sharing_the_mapped_index(recipe):
    """The real command in a subprocess: the parent builds, two uvicorn workers load the index
    memory-mapped from the cache and answer like the in-process search."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "searchgym.cli", "serve", str(recipe), "--port", str(port),
                             "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the server did not answer /health in 120 s"
            try:
                health = get(url)
                break
            except OSError:
                time.sleep(0.25)
        assert health["mmap"] is True and health["documents"] == 30
        index = load_corpus_recipe(recipe).build(progress=False)
        for _ in range(6):  # separate connections: requests reach both workers
            status, body = post(url, {"queries": QUERIES, "topk": 3, "return_scores": True})
            assert status == 200
            assert_same(body["result"], index, QUERIES, 3)
        assert post(url, {"queries": []})[0] == 400
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # uvicorn stops its workers and exits
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
    assert "with 2 workers" in out and out.count("Started server process") == 2, out
