"""Real retrieval engines: a local index in this process, or a `/retrieve` server (Search-R1's protocol or
ZeroSearch's wiki retriever).

    RetrievalEngine(corpus_path, method="bm25")          the index of zerosearch.search.index
    RemoteRetrievalEngine("http://127.0.0.1:8000/retrieve")   POST {"queries", "topk", "return_scores"}
    RemoteRetrievalEngine("127.0.0.1:6002", protocol="zerosearch")   POST {"query", "top_k"} -> [{"text"}]

Both answer a whole batch of requests in one go (one bm25s call, or one POST per chunk of queries), never
raise from `search()` (a failure gives the fallback document and `error` set) and count what happened
(zerosearch.search.engine_metrics).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence
from urllib.parse import urlsplit

from zerosearch.search.engine_metrics import SearchMetrics
from zerosearch.search.client import HttpSearchEngine, SearchClient
from zerosearch.search.http import HttpJob, RetryPolicy
from zerosearch.search.index import LocalIndex, open_index, parse_contents
from zerosearch.search.types import Document, SearchEngine, SearchRequest, SearchResult

log = logging.getLogger(__name__)

DEFAULT_FALLBACK_TEXT = "No information available."


def _fallback(engine: str, text: str, kind: str, latency_s: float, retries: int = 0) -> SearchResult:
    return SearchResult(documents=[Document(title="", text=text)], engine=engine, latency_s=latency_s,
                        error=kind, retries=retries, fallback=True)


class RetrievalEngine(SearchEngine):
    """Top-k documents from a local BM25 or dense index (built on first use, then loaded from disk).

    Args:
        corpus_path: jsonl corpus `{"id", "contents"}`.
        method: "bm25" or "dense" (the `dense` extra).
        index_dir: where the index is kept; None = `<corpus>.<method>/`.
        topk: documents per request.
        rebuild: rebuild the index even when fresh.
        fallback_text: the document returned if the index fails on a batch.
        index: an already opened index (shared with a server, or by tests); the other index args are ignored.
        settings: index settings (bm25: k1, b; dense: dense_model).
    """

    def __init__(self, corpus_path: str | None = None, *, method: str = "bm25", index_dir: str | None = None,
                 topk: int = 5, rebuild: bool = False, fallback_text: str = DEFAULT_FALLBACK_TEXT,
                 index: LocalIndex | None = None, **settings: Any):
        if index is None:
            if corpus_path is None:
                raise ValueError("RetrievalEngine needs corpus_path (search.retrieval.corpus_path) or an index")
            index = open_index(corpus_path, method, index_dir=index_dir, rebuild=rebuild, **settings)
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        self.index = index
        self.name = index.method
        self.topk = topk
        self.fallback_text = fallback_text
        self.metrics = SearchMetrics()

    @classmethod
    def from_config(cls, cfg: Any, topk: int, **kwargs: Any) -> "RetrievalEngine":
        """From a `RetrievalConfig` (search.retrieval) and `search.topk`."""
        settings = {"dense_model": cfg.dense_model} if cfg.method == "dense" else {}
        return cls(cfg.corpus_path, method=cfg.method, index_dir=cfg.index_dir, topk=topk, **settings, **kwargs)

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        if not requests:
            return []
        t0 = time.perf_counter()
        try:
            hits = self.index.search([r.query for r in requests], self.topk)
            docs = [[self.index.store.document(i) for i, _ in h] for h in hits]
        except Exception as e:  # noqa: BLE001 - search() never raises; the failure is counted
            log.warning("%s retrieval failed for a batch of %d: %s: %s", self.name, len(requests), type(e).__name__, e)
            latency = time.perf_counter() - t0
            results = [_fallback(self.name, self.fallback_text, "internal", latency) for _ in requests]
        else:
            latency = time.perf_counter() - t0
            results = [SearchResult(documents=d, engine=self.name, latency_s=latency) for d in docs]
        self.metrics.record(requests, results)
        return results

    def pop_metrics(self) -> dict[str, float]:
        return self.metrics.pop()

    def close(self) -> None:
        self.index.close()

    def __repr__(self) -> str:
        return f"RetrievalEngine(method={self.name!r}, docs={len(self.index)}, index_dir='{self.index.index_dir}')"


# ------------------------------------------------------------------------------------------ remote


def parse_retrieve_urls(spec: str, default_port: int = 8000) -> tuple[list[str], str]:
    """'http://h:8000/retrieve' (or a comma list, or bare 'h[:port]') -> (base URLs, path).

    >>> parse_retrieve_urls("http://127.0.0.1:8000/retrieve, 10.0.0.2:8001")
    (['http://127.0.0.1:8000', 'http://10.0.0.2:8001'], '/retrieve')
    """
    bases, paths = [], set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        parts = urlsplit(part if "://" in part else "http://" + part)
        if not parts.hostname:
            raise ValueError(f"retrieval server {part!r}: no host")
        if parts.path not in ("", "/"):
            paths.add(parts.path.rstrip("/"))
        try:
            port = parts.port
        except ValueError as e:
            raise ValueError(f"retrieval server {part!r}: {e}") from e
        netloc = parts.netloc if port is not None else f"{parts.netloc}:{default_port}"
        bases.append(f"{parts.scheme}://{netloc}")
    if not bases:
        raise ValueError(f"no retrieval server in {spec!r}: give e.g. http://127.0.0.1:8000/retrieve")
    if len(paths) > 1:
        raise ValueError(f"retrieval servers {spec!r} name different paths {sorted(paths)}; use one path for all")
    return bases, paths.pop() if paths else "/retrieve"


def parse_retrieve_response(data: Any, n_queries: int, topk: int) -> list[list[Document]]:
    """Documents per query from a /retrieve response; ValueError when it is not one (counted bad_response).

    Accepts Search-R1's two shapes, `[{"document": {...}, "score": s}, ...]` and `[{...}, ...]`, and a
    document either as `{"contents": '"Title"\\ntext'}` or as `{"title", "text"}`.
    """
    if not isinstance(data, dict) or not isinstance(data.get("result"), list):
        raise ValueError("response is not an object with a 'result' list")
    result = data["result"]
    if len(result) != n_queries:
        raise ValueError(f"'result' has {len(result)} entries for {n_queries} queries")
    out = []
    for hits in result:
        if not isinstance(hits, list):
            raise ValueError("a query's result is not a list")
        docs = []
        for item in hits[:topk]:
            doc = item.get("document", item) if isinstance(item, dict) else None
            if not isinstance(doc, dict):
                raise ValueError("a hit is not an object")
            if isinstance(doc.get("contents"), str):
                title, text = parse_contents(doc["contents"])
            elif isinstance(doc.get("text"), str):
                title, text = str(doc.get("title") or ""), doc["text"]
            else:
                raise ValueError("a document has neither 'contents' nor 'text'")
            docs.append(Document(title=title, text=text))
        out.append(docs)
    return out


def parse_zerosearch_response(data: Any, topk: int) -> list[Document]:
    """Documents of ZeroSearch's wiki retriever reply, a JSON list of `{"text": ...}` (the text is kept as the
    retriever wrote it, title included, as the original formats it: `Doc i: {text}`)."""
    if not isinstance(data, list):
        raise ValueError("response is not a JSON list of {'text': ...}")
    docs = []
    for item in data[:topk]:
        if not isinstance(item, dict) or not isinstance(item.get("text"), str):
            raise ValueError("a hit is not an object with a 'text' string")
        docs.append(Document(title="", text=item["text"]))
    return docs


PROTOCOLS = ("search_r1", "zerosearch")
ZEROSEARCH_DEFAULT = "127.0.0.1:6002"  # the original's retriever: http://{ip}:6002/retrieve


class RemoteRetrievalEngine(HttpSearchEngine):
    """Client of a retrieval server (ours: `python -m zerosearch.search.retrieval_server`, which speaks both).

    Two protocols (`search.retrieval.protocol`):
        search_r1    POST /retrieve {"queries": [...], "topk": k, "return_scores": true} -> {"result": [[hit]]};
                     the batch goes out as POSTs of at most `max_batch` queries
        zerosearch   POST /retrieve {"query": "...", "top_k": k} -> [{"text": ...}], one query a POST
                     (ZeroSearch's wiki retriever; default server 127.0.0.1:6002)

    The requests are one batch of the search-client core (`client.SearchClient`: concurrency cap, per-try
    timeout, reply cap, bounded retries, server rotation, batch budget); a request that still fails gets the
    fallback document. `search()` never raises.

    Args:
        url: `http://host:port/retrieve`, or a comma list of servers sharing the path.
        topk: documents per request.
    """

    name = "retrieval"

    def __init__(self, url: str, *, topk: int = 5, timeout_s: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0, max_batch: int = 256,
                 max_concurrency: int = 8, fallback_text: str = DEFAULT_FALLBACK_TEXT, seed: int = 0,
                 server_failure_limit: int = 3, server_cooldown_s: float = 30.0, protocol: str = "search_r1",
                 batch_timeout_s: float | None = 30.0, max_reply_bytes: int = 32 << 20):
        if topk < 1 or max_batch < 1 or max_concurrency < 1:
            raise ValueError(f"topk, max_batch and max_concurrency must be >= 1 (got {topk}, {max_batch}, {max_concurrency})")
        if protocol not in PROTOCOLS:
            raise ValueError(f"search.retrieval.protocol={protocol!r}: must be one of {', '.join(PROTOCOLS)}")
        bases, self.path = parse_retrieve_urls(url, default_port=6002 if protocol == "zerosearch" else 8000)
        self.url, self.protocol = url, protocol
        self.topk, self.max_batch = topk, max_batch if protocol == "search_r1" else 1
        self.policy = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, backoff_max_s=backoff_max_s,
                                  timeout_s=timeout_s)
        super().__init__(SearchClient(bases, self.policy, max_concurrency=max_concurrency,
                                      failure_limit=server_failure_limit, cooldown_s=server_cooldown_s,
                                      max_reply_bytes=max_reply_bytes, stall_timeout_s=batch_timeout_s,
                                      name=f"retrieval-{protocol}", budget_key="search.retrieval.batch_timeout_s",
                                      seed=seed), fallback_text)

    @classmethod
    def from_config(cls, cfg: Any, topk: int, **kwargs: Any) -> "RemoteRetrievalEngine":
        """From a `RetrievalConfig` whose `url` is set (or whose protocol is zerosearch), and `search.topk`."""
        url = cfg.url or (ZEROSEARCH_DEFAULT if cfg.protocol == "zerosearch" else None)
        if not url:
            raise ValueError("search.retrieval.url is not set: give the /retrieve server's URL")
        return cls(url, topk=topk, timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, protocol=cfg.protocol,
                   batch_timeout_s=cfg.batch_timeout_s, max_reply_bytes=cfg.max_reply_bytes, **kwargs)

    def job(self, request: SearchRequest) -> HttpJob:
        """ZeroSearch's protocol: one query a POST."""
        return HttpJob(self.path, json={"query": request.query, "top_k": self.topk},
                       parse=lambda data: parse_zerosearch_response(data, self.topk))

    def jobs(self, requests: Sequence[SearchRequest]) -> list[tuple[HttpJob, int]]:
        """Search-R1's protocol: POSTs of at most max_batch queries."""
        if self.protocol == "zerosearch":
            return super().jobs(requests)
        out = []
        for i in range(0, len(requests), self.max_batch):
            queries = [r.query for r in requests[i:i + self.max_batch]]
            out.append((HttpJob(self.path, json={"queries": queries, "topk": self.topk, "return_scores": True},
                                parse=lambda data, n=len(queries): parse_retrieve_response(data, n, self.topk)),
                        len(queries)))
        return out

    def __repr__(self) -> str:
        return f"RemoteRetrievalEngine(url={self.url!r}, protocol={self.protocol!r}, topk={self.topk})"


def retrieval_engine_from_config(cfg: Any, topk: int, **kwargs: Any) -> SearchEngine:
    """The engine a `RetrievalConfig` describes: the server at `url` when set, else the local index of
    `corpus_path` (ZeroSearch's protocol is a server's only: its url defaults to 127.0.0.1:6002). Fails at
    start-up (not at the first search) when neither is given."""
    if cfg.url or cfg.protocol == "zerosearch":
        return RemoteRetrievalEngine.from_config(cfg, topk, **kwargs)
    if not cfg.corpus_path:
        raise ValueError("search.retrieval needs url (a /retrieve server) or corpus_path (a jsonl corpus for a "
                         "local index)")
    return RetrievalEngine.from_config(cfg, topk, **kwargs)
