"""The one search-client core (zerosearch.search.client.SearchClient) under every HTTP engine: the reply-size
cap (`oversize`), the batch budget of a server that never answers (`batch_timeout_s`, one WARNING with the
counts), the per-try wall-clock timeout of the web engine, and the one metrics class. Real servers on
127.0.0.1 (StubSimServer), no mocks."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import pytest

from zerosearch.config.schema import CurriculumConfig, RetrievalConfig, SimulationConfig, WebSearchConfig
from zerosearch.search.client import SearchClient
from zerosearch.search.engine_metrics import SearchMetrics
from zerosearch.search.http import HttpJob, RetryPolicy
from zerosearch.search.retrieval import RemoteRetrievalEngine
from zerosearch.search.simulated import SimulatedSearchEngine
from zerosearch.search.types import Document, SearchRequest, SearchResult
from zerosearch.search.web import SerpApiEngine
from zerosearch.testing.stub_server import StubSimServer

KEY = "sk-core-test-key-0123456789"


def sim_engine(url: str, **sim: object) -> SimulatedSearchEngine:
    cfg = SimulationConfig(servers=url, model_name="m", backoff_s=0.01, backoff_max_s=0.02, max_tokens=32,
                           **sim)  # type: ignore[arg-type]
    return SimulatedSearchEngine.from_config(cfg, CurriculumConfig(), mode="simulate_sft", topk=5, total_steps=10,
                                             seed=0, cache=False)


def reqs(n: int) -> list[SearchRequest]:
    return [SearchRequest(query=f"q{i}", row_id=f"r{i}", question=f"Q{i}?", golden_answers=("a",)) for i in range(n)]


def test_every_http_engine_runs_on_the_one_core(monkeypatch) -> None:
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    engines = [sim_engine("127.0.0.1:1"), RemoteRetrievalEngine("127.0.0.1:1/retrieve"),
               RemoteRetrievalEngine("127.0.0.1:1", protocol="zerosearch"), SerpApiEngine()]
    try:
        assert all(isinstance(e.client, SearchClient) and isinstance(e.metrics, SearchMetrics) for e in engines)
    finally:
        for e in engines:
            e.close()


def test_a_flooding_simulator_costs_the_cap_not_the_flood() -> None:
    """A chunked reply with no Content-Length and 256 MB behind it: the client stops reading at
    max_reply_bytes and counts `oversize` (not retried); the server could send only a little past the cap
    before the client hung up. Without the cap the client reads the whole flood."""
    cap = 256 << 10
    with StubSimServer("flood") as srv, sim_engine(srv.url, max_reply_bytes=cap, timeout_s=20.0) as eng:
        t0 = time.monotonic()
        results = eng.search(reqs(2))
        assert time.monotonic() - t0 < 10
        assert all(r.fallback and r.error == "oversize" and r.retries == 0 for r in results)
        assert eng.pop_metrics()["search/failures/oversize"] == 2
        assert srv.bytes_sent < 2 * cap + (16 << 20), srv.bytes_sent   # socket buffers, not the 256 MB


@pytest.mark.parametrize("engine_kind", ["retrieval", "zerosearch", "web"])
def test_a_declared_oversize_reply_is_refused_by_every_engine(engine_kind: str, monkeypatch) -> None:
    big = {"result": [[{"contents": "x" * 5000}]]}
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    with StubSimServer(replies=[(200, big)]) as srv:
        if engine_kind == "web":
            eng = SerpApiEngine.from_config(WebSearchConfig(max_reply_bytes=1000, max_retries=2), topk=3,
                                            endpoint=srv.url + "/search.json")
        else:
            cfg = RetrievalConfig(url=srv.url + "/retrieve", max_reply_bytes=1000, max_retries=2,
                                  protocol="search_r1" if engine_kind == "retrieval" else "zerosearch")
            eng = RemoteRetrievalEngine.from_config(cfg, topk=3)
        with eng:
            r = eng.search([SearchRequest("q")])[0]
            assert r.fallback and r.error == "oversize" and len(srv.requests) == 1   # not retried
            assert eng.pop_metrics()["search/failures/oversize"] == 1


def test_a_server_that_never_answers_costs_the_batch_budget(caplog) -> None:
    """64 requests to a server that accepts and never answers: with timeout_s=2 and 3 retries one request
    may take 8+ s (the old bound, per wave); the batch ends after batch_timeout_s with no success, every
    request a counted timeout, and one WARNING with the counts and the key to change."""
    caplog.set_level(logging.WARNING, logger="zerosearch.search.client")
    with StubSimServer("stall", stall_s=30.0) as srv, \
            sim_engine(srv.url, timeout_s=2.0, max_retries=3, batch_timeout_s=0.6) as eng:
        assert eng.policy.worst_case_s() > 8
        t0 = time.monotonic()
        results = eng.search(reqs(64))
        wall = time.monotonic() - t0
        assert wall < 2.0, wall
        assert all(r.fallback and r.error == "timeout" for r in results)
        m = eng.pop_metrics()
        assert m["search/failures/timeout"] == 64 and m["search/deadline_hits"] == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(lines) == 1
    assert "64 of 64 requests failed (timeout: 64)" in lines[0]
    assert "search.simulation.batch_timeout_s" in lines[0]


def test_a_batch_that_keeps_succeeding_is_not_cut() -> None:
    """The budget counts time without a success: 3 waves of 0.3 s answers outlast batch_timeout_s=0.5 in
    total but never go 0.5 s without a reply."""
    with StubSimServer("stall", stall_s=0.3) as srv, \
            sim_engine(srv.url, max_concurrency=2, batch_timeout_s=0.5) as eng:
        t0 = time.monotonic()
        results = eng.search(reqs(6))
        assert time.monotonic() - t0 >= 0.85
        assert all(r.error is None for r in results) and eng.pop_metrics()["search/deadline_hits"] == 0


def test_web_search_has_a_wall_clock_timeout_per_try(monkeypatch) -> None:
    """A server trickling its reply a byte at a time never trips httpx's per-read timeout; the web engine's
    try still ends after timeout_s (it had its own retry loop without this bound)."""
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    with StubSimServer("trickle", trickle_s=0.05) as srv, \
            SerpApiEngine(endpoint=srv.url + "/v1/chat/completions", timeout_s=0.4, max_retries=0) as eng:
        t0 = time.monotonic()
        r = eng.search([SearchRequest("q")])[0]
        assert time.monotonic() - t0 < 1.5
        assert r.fallback and r.error == "timeout"
        assert srv.requests[0].method == "GET" and srv.requests[0].params["q"] == "q"


def test_client_core_get_params_and_outcomes_in_order() -> None:
    def answer(rec):
        return 200, {"echo": rec.params["i"]}

    with StubSimServer(replies=[answer]) as srv:
        client = SearchClient([srv.url], RetryPolicy(max_retries=0, timeout_s=2.0), max_concurrency=3)
        try:
            report = client.run([HttpJob("/x", method="GET", params={"i": str(i)}, parse=lambda d: d["echo"])
                                 for i in range(7)])
        finally:
            client.close()
        assert [o.value for o in report.outcomes] == [str(i) for i in range(7)]
        assert report.cut is None and not report.failures
        assert {r.method for r in srv.requests} == {"GET"} and {r.path for r in srv.requests} == {"/x"}


def test_one_metrics_class_common_and_engine_keys() -> None:
    m = SearchMetrics()
    rq = [SearchRequest("a", golden_answers=("paris",)), SearchRequest("b"), SearchRequest("c")]
    rs = [SearchResult([Document("Paris", "capital")], "x", latency_s=1.0, retries=1),
          SearchResult([], "x", latency_s=3.0),
          SearchResult([Document("", "fb")], "x", latency_s=2.0, error="oversize", fallback=True)]
    m.record(rq, rs)
    m.count("generations", 2)
    m.count("deadline_hits", 0)
    m.share("noise_prob", 0.75, 3)
    m.share("never", 0.0, 0)
    out = m.pop()
    assert out == {"search/requests": 3.0, "search/fallbacks": 1.0, "search/retries": 1.0,
                   "search/empty_results": 1.0, "search/docs_per_result": 0.5, "search/latency_p50_s": 2.0,
                   "search/latency_p95_s": pytest.approx(2.9), "search/failures/oversize": 1.0,
                   "search/has_answer": 1.0, "search/generations": 2.0, "search/deadline_hits": 0.0,
                   "search/noise_prob": 0.25}
    assert m.pop() == {}


def test_the_documented_example_engine_works() -> None:
    """docs/ARCHITECTURE.md shows a whole engine over the core in ~20 lines; run it as written."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "ARCHITECTURE.md").read_text()
    code = next(block for block in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "class HitsEngine" in block)
    assert len(code.strip().splitlines()) <= 25
    namespace: dict = {}
    exec(compile(code, "ARCHITECTURE.md", "exec"), namespace)

    def hits(rec):
        return 200, {"hits": [{"title": f"T{i}", "body": rec.params["q"]} for i in range(9)]}

    with StubSimServer(replies=[(503, "busy"), hits]) as srv, \
            namespace["HitsEngine"](srv.url.split("//")[1], topk=3) as eng:
        eng.client.policy.backoff_s = 0.01
        res = eng.search([SearchRequest("alpha", golden_answers=("alpha",)), SearchRequest("beta")])
        assert [[d.text for d in r.documents] for r in res] == [["alpha"] * 3, ["beta"] * 3]
        assert sum(r.retries for r in res) == 1 and srv.requests[-1].params["n"] == "3"
        m = eng.pop_metrics()
        assert m["search/requests"] == 2 and m["search/has_answer"] == 1.0 and m["search/retries"] == 1
