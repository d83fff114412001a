"""`searchgym serve CORPUS_RECIPE`: an HTTP retrieval service over a corpus recipe, in Search-R1's protocol.

Trainers that call a retriever over HTTP (Search-R1 and verl recipes built on it: ``retriever.url``) can
search any searchgym corpus (dense FAISS of every index type, BM25 or hybrid) without importing it:

    POST /retrieve  {"queries": ["who wrote the iliad", ...], "topk": 3, "return_scores": true}
    -> {"result": [[{"document": {"id": "...", "contents": "\\"Title\\"\\ntext"}, "score": 0.83}, ...], ...]}
    GET  /health    -> {"status": "ok", "documents": ..., "retriever": ..., ...}

The shapes are those of Search-R1's ``search_r1/search/retrieval_server.py``: one list per query, best
first; ``contents`` is the title in double quotes, a newline, then the text (how wiki-18 stores a passage
and how Search-R1's ``_passages2string`` splits it back); with ``"return_scores": false`` (Search-R1's
default) each list holds the documents themselves, without the ``{"document", "score"}`` wrapper. An
absent or null ``topk`` is 3 (Search-R1's ``--topk`` default). Unknown keys are ignored, as Search-R1's
pydantic model does.

A request's queries go to the index in one ``search(queries, k)`` call (one embedder call and one FAISS
call for the batch). A blank query gets an empty list rather than failing the request: an agent that
emits ``<search></search>`` must not stop every other rollout of its batch. Anything else malformed is a
4xx whose JSON body is ``{"detail": "<one line>"}``; the server never dies on input.

``--workers N`` starts N uvicorn worker processes; each loads the index from the cache that the parent
built first, so with ``mmap = true`` in the recipe's ``[index]`` they share one copy of the FAISS index
through the page cache (each still holds the corpus texts and its own small FAISS structures; BM25
indexes are loaded per worker). Needs the ``serve`` extra: ``pip install 'searchgym[serve]'``.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations (`request: Request`,
# imported inside create_app) at runtime and cannot resolve them as strings.
import json
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)

RETRIEVERS = ("dense", "bm25", "hybrid")
DEFAULT_TOPK = 3  # Search-R1's retrieval_server.py --topk default, used when a request gives none
MAX_TOPK = 100
MAX_QUERIES = 4096  # Search-R1 sends a whole rollout batch at once (train_batch_size x n_agent queries)
MAX_HITS = 100_000  # queries x topk per request: bounds the response (about 60 MB of wiki-18 passages)
MAX_BODY_BYTES = 8 << 20
DRAIN_BYTES = 4 * MAX_BODY_BYTES  # an oversized body up to this size is read (and dropped) before the 413
# What a worker process reads to rebuild the service (uvicorn starts workers by import string).
ENV_RECIPE, ENV_RETRIEVER = "SEARCHGYM_SERVE_RECIPE", "SEARCHGYM_SERVE_RETRIEVER"


class BadRequest(ValueError):
    """A request the service refuses: ``status`` is the HTTP code, the message one line."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes) -> tuple[list[str], int, bool]:
    """The queries, topk and return_scores of a ``/retrieve`` body, or `BadRequest` saying what is wrong.

    >>> parse_request(b'{"queries": ["a", "b"], "topk": 5, "return_scores": true}')
    (['a', 'b'], 5, True)
    >>> parse_request(b'{"queries": ["a"]}')
    (['a'], 3, False)
    >>> parse_request(b'{"queries": ["a"], "topk": 0}')
    Traceback (most recent call last):
    ...
    searchgym.serve.BadRequest: topk must be an integer from 1 to 100, got 0
    >>> parse_request(b'{"queries": "a"}')
    Traceback (most recent call last):
    ...
    searchgym.serve.BadRequest: queries must be a list of strings, got str; wrap one query: {"queries": ["..."]}
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = e.msg if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise BadRequest(f"the body is not valid JSON ({reason}); send "
                         '{"queries": ["..."], "topk": 3, "return_scores": true}') from None
    if not isinstance(data, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(data).__name__}")
    if "queries" not in data:
        raise BadRequest('queries is missing; send {"queries": ["..."], "topk": 3}')
    queries = data["queries"]
    if not isinstance(queries, list):
        raise BadRequest(f"queries must be a list of strings, got {type(queries).__name__}; wrap one query: "
                         '{"queries": ["..."]}')
    if not queries:
        raise BadRequest("queries is empty; send at least one query")
    if len(queries) > MAX_QUERIES:
        raise BadRequest(f"too many queries: {len(queries)}; at most {MAX_QUERIES} per request", 413)
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise BadRequest(f"queries[{i}] must be a string, got {type(q).__name__}")
    topk = data.get("topk")
    if topk is None:
        topk = DEFAULT_TOPK
    # bool is an int in Python, and 3.0 would silently truncate elsewhere: both refused
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= MAX_TOPK:
        raise BadRequest(f"topk must be an integer from 1 to {MAX_TOPK}, got {json.dumps(topk)[:40]}")
    if len(queries) * topk > MAX_HITS:
        raise BadRequest(f"batch too large: {len(queries)} queries x topk {topk} = {len(queries) * topk} hits; "
                         f"at most {MAX_HITS} per request (split the batch)", 413)
    return_scores = data.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise BadRequest(f"return_scores must be true or false, got {json.dumps(return_scores)[:40]}")
    return queries, topk, return_scores


def contents(title: str, text: str) -> str:
    """A passage as Search-R1's wiki-18 stores it and its agents read it: quoted title, newline, text.

    >>> contents("Aaron", "Aaron is a prophet.")
    '"Aaron"\\nAaron is a prophet.'
    """
    return f'"{title}"\n{text}'


class Retriever:
    """An index (`SearchIndex`, `LexicalIndex` or `HybridIndex`) answering Search-R1 requests."""

    def __init__(self, index, retriever: str = "dense", recipe: str | None = None):
        self.index, self.retriever, self.recipe = index, retriever, recipe
        self.corpus = index.corpus

    def retrieve(self, queries: list[str], topk: int, return_scores: bool) -> dict:
        """``{"result": [...]}`` for checked queries: the non-blank ones in one index call."""
        asked = [i for i, q in enumerate(queries) if q.strip()]
        found = self.index.search([queries[i] for i in asked], topk) if asked else []
        hits: list[list] = [[] for _ in queries]
        for i, row in zip(asked, found):
            hits[i] = row
        result = []
        for row in hits:
            docs = []
            for h in row:
                d = self.corpus[h.doc_id]  # the full text: a Hit carries only a snippet
                doc = {"id": d.id, "contents": contents(d.title, d.text)}
                docs.append({"document": doc, "score": float(h.score)} if return_scores else doc)
            result.append(docs)
        return {"result": result}

    def health(self) -> dict:
        index = self.index.dense if self.retriever == "hybrid" else self.index
        return {"status": "ok", "corpus": self.corpus.name, "documents": len(self.corpus),
                "retriever": self.retriever, "recipe": self.recipe,
                "embedder": getattr(getattr(index, "embedder", None), "id", None),
                "index": str(index.spec) if hasattr(index, "spec") else "bm25",
                "mmap": bool(getattr(index, "mmap", False))}


def load_retriever(recipe_path: str | os.PathLike, retriever: str = "dense", progress: bool = True) -> Retriever:
    """Build (or load from the cache) the index a corpus recipe describes, ranked by ``retriever``."""
    from searchgym.corpus.corpus_recipe import load_corpus_recipe

    check_retriever(retriever)
    recipe = load_corpus_recipe(recipe_path)
    return Retriever(retriever_index(recipe, retriever, progress), retriever, str(recipe_path))


def retriever_index(recipe, retriever: str, progress: bool = True):
    """``recipe``'s index for ``retriever``: its FAISS index (mmap as the recipe says), BM25 over its
    documents, or both fused (corpus.hybrid's defaults: RRF k=60, top 50 of each)."""
    from searchgym.corpus.hybrid import HybridIndex
    from searchgym.corpus.lexical import build_lexical_index
    from searchgym.util.config_schema import ConfigError

    if retriever == "bm25":  # no embedding: the recipe's [embedder] and [index] are not used
        corpus = recipe.load_corpus()
        try:
            return build_lexical_index(corpus, progress=progress)
        except ValueError as e:
            raise ConfigError(f"{recipe.path or 'recipe'}: {e}") from None
    dense = recipe.build(progress=progress)
    if retriever == "dense":
        return dense
    try:
        return HybridIndex(dense, build_lexical_index(dense.corpus, progress=progress))
    except ValueError as e:
        raise ConfigError(f"{recipe.path or 'recipe'}: {e}") from None


def check_retriever(retriever: object) -> None:
    if retriever not in RETRIEVERS:
        raise ValueError(f"retriever must be one of {list(RETRIEVERS)}, got {retriever!r:.40}")


def create_app(service: Retriever):
    """The FastAPI app over one loaded index.

    The body is parsed by hand rather than by a pydantic model: FastAPI's 422 answers are multi-line
    lists of validation errors, and a client (or a person with curl) should get one line that says what
    to change. Searches run in Starlette's thread pool so the event loop keeps accepting requests while
    FAISS (which releases the GIL) or BM25 works; the index is only read, so threads share it.
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="searchgym retrieval", docs_url=None, redoc_url=None, openapi_url=None)

    def error(message: str, status: int) -> JSONResponse:
        return JSONResponse({"detail": message}, status_code=status)

    def answer(queries: list[str], topk: int, return_scores: bool) -> bytes:
        # JSON encoding in the worker thread too: for a large batch it costs as much as the search
        return json.dumps(service.retrieve(queries, topk, return_scores), ensure_ascii=False).encode()

    @app.post("/retrieve")
    async def retrieve(request: Request):
        # An oversized body is read to its end (and dropped) before the 413, up to DRAIN_BYTES: a client
        # still sending when the server closes gets a connection reset instead of the reason. Past that,
        # or when the declared length is past it, the 413 goes out at once and the connection closes.
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > DRAIN_BYTES:
            return error(f"the body is {int(declared)} bytes; at most {MAX_BODY_BYTES} per request", 413)
        body, size = bytearray(), 0
        async for chunk in request.stream():  # bounded even when no length is declared (chunked)
            size += len(chunk)
            if size <= MAX_BODY_BYTES:
                body += chunk
            elif size > DRAIN_BYTES:
                break
        if size > MAX_BODY_BYTES:
            return error(f"the body is over {MAX_BODY_BYTES} bytes; at most {MAX_BODY_BYTES} per request "
                         "(split the batch)", 413)
        try:
            queries, topk, return_scores = parse_request(bytes(body))
            content = await run_in_threadpool(answer, queries, topk, return_scores)
        except BadRequest as e:
            return error(str(e), e.status)
        except (ValueError, TypeError) as e:  # the index's own checks (check_search)
            return error(" ".join(str(e).split())[:300], 400)
        except Exception as e:  # a bug or a broken index: one request fails, the server stays up
            log.exception("retrieve failed")
            return error(f"search failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}", 500)
        return Response(content, media_type="application/json")

    @app.get("/health")
    def health():
        return service.health()

    return app


def app_from_env():
    """The app of one uvicorn worker process (``--workers N``): the recipe and retriever come from the
    environment the parent set; the index is loaded from the cache the parent built (mmap'd if the
    recipe says so), so workers start fast and, memory-mapped, share one copy."""
    return create_app(load_retriever(os.environ[ENV_RECIPE], os.environ.get(ENV_RETRIEVER, "dense"),
                                     progress=False))


def check_address(host: str, port: int) -> None:
    """Refuse a port outside 1..65535 or an address that cannot be listened on now (in use, not ours).

    >>> check_address("127.0.0.1", 0)
    Traceback (most recent call last):
    ...
    ValueError: port must be an integer from 1 to 65535, got 0
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    if not host or not host.strip():
        raise ValueError("host is empty; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ValueError(f"cannot resolve host {host!r} ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets: TIME_WAIT is no conflict
        try:
            s.bind(address)
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None


def serve_command(recipe: Path, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
                  retriever: str = "dense") -> None:
    """Check everything that can be checked cheaply, build the index, then serve until interrupted."""
    check_retriever(retriever)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise ValueError(f"searchgym serve needs FastAPI and uvicorn ({e.name} is missing): "
                         "pip install 'searchgym[serve]'") from None
    from searchgym.corpus.corpus_recipe import load_corpus_recipe

    check_address(host, port)  # a busy or bad port stops here, before a build that may take hours
    recipe = Path(recipe).resolve()
    load_corpus_recipe(recipe)  # so does a bad recipe
    service = load_retriever(recipe, retriever)  # builds once; workers then load from the cache
    health = service.health()
    print(f"serving {health['corpus']} ({health['documents']:,} documents, {retriever}, index "
          f"{health['index']}{', memory-mapped' if health['mmap'] else ''}) on http://{host}:{port}/retrieve"
          f" with {workers} worker{'s' if workers > 1 else ''}", flush=True)
    if workers == 1:
        uvicorn.run(create_app(service), host=host, port=port, access_log=False, log_level="info")
        return
    del service, health  # the supervisor serves nothing: do not hold a copy of the index in it
    os.environ[ENV_RECIPE], os.environ[ENV_RETRIEVER] = str(recipe), retriever
    uvicorn.run("searchgym.serve:app_from_env", factory=True, host=host, port=port, workers=workers,
                access_log=False, log_level="info")
