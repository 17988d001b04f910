"""A Search-R1 compatible retrieval server over a local index.

    python -m zerosearch.search.retrieval_server --corpus ../shared/data/corpus/wiki18_passages_searchr1_traces.jsonl

builds the BM25 index beside the corpus on first start (`--index-dir` to put it elsewhere), then serves

    POST /retrieve   {"queries": ["..."], "topk": 3, "return_scores": true}          (Search-R1's shape)
                  -> {"result": [[{"document": {"id", "contents"}, "score": 12.3}, ...], ...]}
                     (without scores: {"result": [[{"id", "contents"}, ...], ...]})
    POST /retrieve   {"query": "...", "top_k": 5}                      (ZeroSearch's wiki retriever shape)
                  -> [{"id", "text"}, ...]   (`text` is the passage's `contents`, title line included)
    GET  /health  -> {"status": "ok", "method", "num_docs", "limits"}

The two shapes share the path (a body with `query` and no `queries` is ZeroSearch's), so ZeroSearch's
original client works against `--port 6002` unchanged.

Requests beyond the limits get a 4xx whose JSON `detail` names the limit and its value
(`{"limit": "max_queries", "value": 512, "got": 600, "message": ...}`): 413 for too many queries, a query
too long or a body too large; 422 for a top-k out of range. The body limit holds for the bytes actually
read (a chunked body without Content-Length included): reading stops at the limit. `--port 0` picks a free
port; the first line printed says where the server listens.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import sys
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Body, FastAPI, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from zerosearch.search.index import LocalIndex, open_index

log = logging.getLogger(__name__)


class RetrieveRequest(BaseModel):
    """Search-R1's request body."""

    queries: list[str]
    topk: int | None = None  # None = the server's --topk
    return_scores: bool = False


class WikiRetrieveRequest(BaseModel):
    """ZeroSearch's wiki retriever body: one query a call."""

    query: str
    top_k: int | None = None  # None = the server's --topk


@dataclass
class ServerLimits:
    """What one request may ask for."""

    max_queries: int = 512  # queries in one request
    max_query_chars: int = 4096  # characters of one query
    max_topk: int = 100  # documents per query
    default_topk: int = 3  # top-k when the request gives none (Search-R1's default)

    @property
    def max_body_bytes(self) -> int:
        """The largest JSON body the other limits allow (12 bytes a character covers \\uXXXX escapes of
        surrogate pairs), plus room for the rest of the object."""
        return self.max_queries * (self.max_query_chars * 12 + 8) + 4096


def _limit_error(status: int, limit: str, value: int, got: int, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail={"limit": limit, "value": value, "got": got,
                                                     "message": message})


class BodyLimit:
    """ASGI middleware: a request body over `max_body_bytes` gets a 413 naming the limit, decided on the
    bytes actually received (a declared Content-Length over the limit is refused before reading; a chunked
    body is read only up to the limit), so a large upload never grows the server past the limit. A body
    within the limit is buffered once and handed on unchanged."""

    def __init__(self, app: Any, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return await self._refuse(send, f"request body of {declared} bytes (Content-Length)")
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._refuse(send, f"request body passed {self.max_body_bytes} bytes while reading")
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect, as the server would

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any, got: str) -> None:
        content = json.dumps({"detail": {
            "limit": "max_body_bytes", "value": self.max_body_bytes, "got": got,
            "message": f"{got} is over max_body_bytes={self.max_body_bytes} "
                       "(set by --max-queries and --max-query-chars)"}}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content})


def _parse_body(body: Any) -> RetrieveRequest | WikiRetrieveRequest:
    """Search-R1's shape, or ZeroSearch's when the body has `query` and no `queries`; a 422 naming the
    field otherwise (as FastAPI reports its own validation errors)."""
    wiki = isinstance(body, dict) and "query" in body and "queries" not in body
    try:
        return (WikiRetrieveRequest if wiki else RetrieveRequest).model_validate(body)
    except ValidationError as e:
        raise RequestValidationError([{**err, "loc": ("body", *err["loc"])} for err in e.errors()]) from None


def create_app(index: LocalIndex, limits: ServerLimits | None = None) -> FastAPI:
    """The FastAPI app serving `index` under `limits`."""
    limits = limits or ServerLimits()
    app = FastAPI(title="zerosearch retrieval server", version="1")
    app.add_middleware(BodyLimit, max_body_bytes=limits.max_body_bytes)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "method": index.method, "num_docs": len(index),
                "limits": {**asdict(limits), "max_body_bytes": limits.max_body_bytes}}

    @app.post("/retrieve")
    def retrieve(body: Any = Body(...)) -> Any:
        # a plain def: FastAPI runs it in its thread pool, so a long batch never blocks the event loop
        req = _parse_body(body)
        if isinstance(req, WikiRetrieveRequest):
            hits = search(RetrieveRequest(queries=[req.query], topk=req.top_k))[0]
            return [{"id": doc["id"], "text": doc["contents"]} for doc, _ in hits]
        rows = search(req)
        if req.return_scores:
            return {"result": [[{"document": doc, "score": score} for doc, score in r] for r in rows]}
        return {"result": [[doc for doc, _ in r] for r in rows]}

    def search(req: RetrieveRequest) -> list[list[tuple[dict[str, Any], float]]]:
        """(row, score) of the top-k of each query, after the limits are checked."""
        topk = limits.default_topk if req.topk is None else req.topk
        if len(req.queries) > limits.max_queries:
            raise _limit_error(413, "max_queries", limits.max_queries, len(req.queries),
                               f"{len(req.queries)} queries in one request; max_queries={limits.max_queries} "
                               "(--max-queries): send smaller batches")
        for i, q in enumerate(req.queries):
            if len(q) > limits.max_query_chars:
                raise _limit_error(413, "max_query_chars", limits.max_query_chars, len(q),
                                   f"query {i} has {len(q)} characters; max_query_chars={limits.max_query_chars} "
                                   "(--max-query-chars)")
        if not 1 <= topk <= limits.max_topk:
            raise _limit_error(422, "max_topk", limits.max_topk, topk,
                               f"topk={topk} is out of range: it must be between 1 and max_topk={limits.max_topk} "
                               "(--max-topk)")
        hits = index.search(req.queries, topk)
        return [[(index.store.row(i), s) for i, s in h] for h in hits]

    return app


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0 = a free one), IPv4 or IPv6 as the host says."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m zerosearch.search.retrieval_server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", required=True, help="jsonl corpus, {id, contents} a line (title on the first line)")
    p.add_argument("--method", default="bm25", choices=("bm25", "dense"), help="index kind (dense needs the dense extra)")
    p.add_argument("--index-dir", default=None, help="index folder; default <corpus>.<method>/ beside the corpus")
    p.add_argument("--dense-model", default="intfloat/e5-base-v2", help="sentence-transformers model (method dense)")
    p.add_argument("--rebuild", action="store_true", help="rebuild the index even when it is fresh")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (printed at start)")
    p.add_argument("--topk", type=int, default=ServerLimits.default_topk, help="top-k when a request gives none")
    p.add_argument("--max-queries", type=int, default=ServerLimits.max_queries, help="queries per request")
    p.add_argument("--max-query-chars", type=int, default=ServerLimits.max_query_chars, help="characters per query")
    p.add_argument("--max-topk", type=int, default=ServerLimits.max_topk, help="largest top-k a request may ask")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (info logs every request)")
    args = p.parse_args(argv)

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    limits = ServerLimits(max_queries=args.max_queries, max_query_chars=args.max_query_chars,
                          max_topk=args.max_topk, default_topk=args.topk)
    for name, value in asdict(limits).items():
        if value < 1:
            p.error(f"--{name.replace('_', '-').replace('default-topk', 'topk')} must be >= 1, got {value}")
    settings = {"dense_model": args.dense_model} if args.method == "dense" else {}
    index = open_index(args.corpus, args.method, index_dir=args.index_dir, rebuild=args.rebuild, **settings)
    sock = bind_socket(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"zerosearch retrieval server: {len(index)} documents ({index.method}, index {index.index_dir}) "
          f"at http://{shown}:{port}/retrieve", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(index, limits), log_level=args.log_level))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        index.close()


if __name__ == "__main__":
    sys.exit(main())
