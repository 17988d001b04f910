"""The Search-R1 compatible server under uvicorn over the wiki-18 traces corpus, driven by the real client;
its limits; the client's fallbacks when a server is down or answers garbage."""

from __future__ import annotations

import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from retrieval_fixtures import wiki_corpus, wiki_index_dir
from zerosearch.search.index import open_index, parse_contents
from zerosearch.config.schema import RetrievalConfig
from zerosearch.search.retrieval import (
    RemoteRetrievalEngine, RetrievalEngine, parse_retrieve_urls, retrieval_engine_from_config)
from zerosearch.search.retrieval_server import ServerLimits, bind_socket, create_app
from zerosearch.search.types import SearchRequest
from zerosearch.testing.stub_server import StubSimServer

REPO = Path(__file__).resolve().parents[2]
QUESTIONS = [
    ("who told the story of the prodigal son", ("Jesus Christ",)),
    ("who played bat masterson in the movie tombstone", ("Mason Alan Dinehart",)),
    ("what is the name of the weapon the grim reaper carries", ("scythe",)),
    ("where is the tibia and fibula bone located", ("leg",)),
    ("who does the voice of the beast in the new movie", ("Dan Stevens",)),
]
FAST = dict(timeout_s=2.0, backoff_s=0.01, backoff_max_s=0.02)  # retry quickly in tests


@pytest.fixture(scope="module")
def wiki_index(tmp_path_factory, shared_data):
    idx = open_index(wiki_corpus(shared_data), "bm25", index_dir=wiki_index_dir(tmp_path_factory, shared_data))
    yield idx
    idx.close()


@pytest.fixture(scope="module")
def server(wiki_index):
    """uvicorn serving the app in a thread, on a free port of 127.0.0.1; small limits to test them."""
    limits = ServerLimits(max_queries=8, max_query_chars=200, max_topk=10, default_topk=3)
    sock = bind_socket("127.0.0.1", 0)
    srv = uvicorn.Server(uvicorn.Config(create_app(wiki_index, limits), log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def post(url: str, body: dict) -> httpx.Response:
    return httpx.post(url + "/retrieve", json=body, timeout=10, trust_env=False)


def test_health_and_both_response_shapes(server, wiki_index):
    h = httpx.get(server + "/health", trust_env=False).json()
    assert h["status"] == "ok" and h["method"] == "bm25" and h["num_docs"] == len(wiki_index) == 9560
    assert h["limits"]["max_queries"] == 8
    queries = [q for q, _ in QUESTIONS[:2]]
    scored = post(server, {"queries": queries, "topk": 4, "return_scores": True}).json()["result"]
    assert len(scored) == 2 and all(len(r) == 4 for r in scored)
    for r in scored:
        assert set(r[0]) == {"document", "score"} and set(r[0]["document"]) == {"id", "contents"}
        assert [h["score"] for h in r] == sorted((h["score"] for h in r), reverse=True)
    plain = post(server, {"queries": queries, "topk": 4}).json()["result"]
    assert plain == [[h["document"] for h in r] for r in scored]
    default_k = post(server, {"queries": queries[:1]}).json()["result"]
    assert len(default_k[0]) == 3  # the server's --topk
    assert post(server, {"queries": []}).json() == {"result": []}


@pytest.mark.parametrize("body, status, limit, value", [
    ({"queries": ["q"] * 9}, 413, "max_queries", 8),
    ({"queries": ["ok", "x" * 201]}, 413, "max_query_chars", 200),
    ({"queries": ["q"], "topk": 11}, 422, "max_topk", 10),
    ({"queries": ["q"], "topk": 0}, 422, "max_topk", 10),
])
def test_limits_answer_4xx_naming_the_limit(server, body, status, limit, value):
    r = post(server, body)
    assert r.status_code == status
    detail = r.json()["detail"]
    assert detail["limit"] == limit and detail["value"] == value
    assert f"{limit}={value}" in detail["message"]


def test_body_limit_and_malformed_requests(server):
    too_big = ServerLimits(max_queries=8, max_query_chars=200).max_body_bytes + 1
    r = httpx.post(server + "/retrieve", content=b" " * too_big, headers={"content-type": "application/json"},
                   trust_env=False)
    assert r.status_code == 413 and r.json()["detail"]["limit"] == "max_body_bytes"
    r = post(server, {"queries": [1, {"a": 2}]})
    assert r.status_code == 422  # pydantic names the field
    assert r.json()["detail"][0]["loc"][:2] == ["body", "queries"]
    assert post(server, {"topk": 3}).status_code == 422


def test_client_matches_the_local_engine(server, wiki_index):
    reqs = [SearchRequest(q, golden_answers=a) for q, a in QUESTIONS]
    local_engine = RetrievalEngine(index=wiki_index, topk=3)
    local = local_engine.search(reqs)
    with RemoteRetrievalEngine(server + "/retrieve", topk=3, max_batch=2, **FAST) as remote:
        res = remote.search(reqs)  # 3 POSTs of <= 2 queries, in order
        assert [r.documents for r in res] == [r.documents for r in local]
        assert all(r.error is None and r.engine == "retrieval" and len(r.documents) == 3 for r in res)
        assert not res[0].documents[0].title.startswith('"')  # the quotes of the title line are stripped
        m = remote.pop_metrics()
        assert m["search/requests"] == 5 and "search/fallbacks" in m and m["search/fallbacks"] == 0
        assert m["search/has_answer"] == local_engine.pop_metrics()["search/has_answer"] > 0
        assert remote.search([]) == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_client_falls_back_when_the_server_is_down():
    reqs = [SearchRequest("anything"), SearchRequest("else")]
    with RemoteRetrievalEngine(f"http://127.0.0.1:{free_port()}/retrieve", max_retries=2, **FAST) as eng:
        t0 = time.perf_counter()
        res = eng.search(reqs)
        assert time.perf_counter() - t0 < 5
        assert all(r.fallback and r.error == "connect" and r.retries == 2 for r in res)
        assert res[0].documents[0].text == "No information available."
        m = eng.pop_metrics()
        assert m["search/failures/connect"] == 2 and m["search/fallbacks"] == 2


@pytest.mark.parametrize("reply, kind", [
    ((200, "<html>not json</html>"), "bad_response"),
    ((200, {"result": [[{"document": {"id": "1", "contents": "t\nx"}}]]}), "bad_response"),  # 1 list for 2 queries
    ((200, {"result": [[{"id": "1"}], []]}), "bad_response"),  # a document without contents
    ((200, {"answer": 42}), "bad_response"),
    ((503, "overloaded"), "http_5xx"),
    ((400, "bad request"), "http_4xx"),
])
def test_client_falls_back_on_garbage(reply, kind):
    with StubSimServer(replies=[reply]) as srv, RemoteRetrievalEngine(srv.url + "/retrieve", max_retries=1, **FAST) as eng:
        res = eng.search([SearchRequest("a"), SearchRequest("b")])
        assert all(r.fallback and r.error == kind for r in res)
        assert len(srv.requests) == (1 if kind == "http_4xx" else 2)  # 4xx is not retried
        assert eng.pop_metrics()[f"search/failures/{kind}"] == 2


def test_client_retries_then_succeeds_with_either_shape():
    ok_plain = {"result": [[{"id": "7", "contents": '"Title"\nSome text'}], [{"title": "T2", "text": "x"}]]}
    with StubSimServer(replies=[(500, "boom"), (429, "slow down"), (200, ok_plain)]) as srv, \
            RemoteRetrievalEngine(srv.url + "/retrieve", max_retries=3, topk=2, **FAST) as eng:
        res = eng.search([SearchRequest("a"), SearchRequest("b")])
        assert [r.documents[0].title for r in res] == ["Title", "T2"] and res[0].documents[0].text == "Some text"
        assert all(r.retries == 2 and not r.fallback for r in res)
        assert srv.requests[-1].path == "/retrieve"
        assert srv.requests[-1].json == {"queries": ["a", "b"], "topk": 2, "return_scores": True}


def test_parse_retrieve_urls():
    assert parse_retrieve_urls("http://127.0.0.1:8000/retrieve") == (["http://127.0.0.1:8000"], "/retrieve")
    assert parse_retrieve_urls("h1:9000,h2") == (["http://h1:9000", "http://h2:8000"], "/retrieve")
    with pytest.raises(ValueError, match="different paths"):
        parse_retrieve_urls("http://a:1/retrieve,http://b:2/search")
    with pytest.raises(ValueError, match="no retrieval server"):
        parse_retrieve_urls(" , ")


def test_the_one_command(tmp_path_factory, shared_data):
    """`python -m zerosearch.search.retrieval_server --corpus ... --port 0` serves, and its limit flags apply."""
    cmd = [sys.executable, "-m", "zerosearch.search.retrieval_server", "--corpus", str(wiki_corpus(shared_data)),
           "--index-dir", str(wiki_index_dir(tmp_path_factory, shared_data)), "--port", "0", "--max-queries", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "retrieval server" not in line:
            assert time.monotonic() < deadline and proc.poll() is None, f"server did not start: {line}"
            line = proc.stdout.readline()
        url = line.rsplit(" at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/retrieve")
        with RemoteRetrievalEngine(url, topk=2, **FAST) as eng:
            res = eng.search([SearchRequest(QUESTIONS[0][0], golden_answers=QUESTIONS[0][1])])
            assert res[0].error is None and len(res[0].documents) == 2
        r = httpx.post(url, json={"queries": ["a", "b", "c"]}, trust_env=False)
        assert r.status_code == 413 and r.json()["detail"]["value"] == 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _chunked_upload(url: str, total: int, chunk: int = 64 << 10) -> tuple[int, int, bytes]:
    """POST /retrieve a chunked body (no Content-Length) of `total` bytes over a raw socket, watching for the
    server's answer after every chunk. Returns (bytes sent before the answer came, status, answer body)."""
    host, port = url.split("://")[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n")
    sent = 0
    piece = b" " * chunk
    try:
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            sent += len(piece)
        else:
            sock.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered and closed while we were still sending
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer.split(b"\r\n\r\n", 1)[1]) < int(
            re.search(rb"content-length: (\d+)", answer.lower()).group(1) if b"content-length" in answer.lower() else 0):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return sent, int(head.split(b" ")[1]), body


def test_body_limit_holds_for_a_chunked_upload(server):
    """A chunked body carries no Content-Length: the server must count the bytes it reads and answer 413 at
    the limit, not read (and hold) 200 MB first."""
    limit = ServerLimits(max_queries=8, max_query_chars=200).max_body_bytes
    sent, status, body = _chunked_upload(server, 200 << 20)
    assert status == 413 and json.loads(body)["detail"]["limit"] == "max_body_bytes"
    assert sent < limit + (8 << 20), sent   # the limit plus socket buffers, not the 200 MB
    # a chunked body within the limit is served as usual
    r = httpx.post(server + "/retrieve", content=iter([b'{"queries": ["prodigal son"],', b' "topk": 2}']),
                   headers={"content-type": "application/json"}, trust_env=False)
    assert r.status_code == 200 and len(r.json()["result"][0]) == 2


def test_zerosearch_wiki_shape_on_the_same_path(server, wiki_index):
    """ZeroSearch's retriever contract: POST /retrieve {"query", "top_k"} -> [{"text"}], one query a call."""
    q = QUESTIONS[0][0]
    hits = post(server, {"query": q, "top_k": 4}).json()
    assert isinstance(hits, list) and len(hits) == 4 and all(isinstance(h["text"], str) for h in hits)
    r1 = post(server, {"queries": [q], "topk": 4}).json()["result"][0]
    assert [h["text"] for h in hits] == [d["contents"] for d in r1]      # the same passages, contents as text
    assert len(post(server, {"query": q}).json()) == 3                   # the server's --topk
    assert post(server, {"query": q, "top_k": 11}).status_code == 422   # the limits hold for this shape too
    bad = post(server, {"query": 5})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"][:2] == ["body", "query"]


def test_zerosearch_client_against_our_server(server, wiki_index):
    reqs = [SearchRequest(q, golden_answers=a) for q, a in QUESTIONS]
    local = RetrievalEngine(index=wiki_index, topk=3).search(reqs)
    cfg = RetrievalConfig(url=server + "/retrieve", protocol="zerosearch", timeout_s=5.0)
    with retrieval_engine_from_config(cfg, topk=3) as eng:
        assert isinstance(eng, RemoteRetrievalEngine) and eng.protocol == "zerosearch"
        res = eng.search(reqs)   # one POST per query
        assert all(r.error is None and len(r.documents) == 3 for r in res)
        # the text is the passage as the retriever wrote it: title line and text
        assert [[parse_contents(d.text) for d in r.documents] for r in res] == [
            [(d.title, d.text) for d in r.documents] for r in local]
        assert all(d.title == "" for r in res for d in r.documents)
        assert eng.pop_metrics()["search/requests"] == 5
    # unset url: ZeroSearch's default retriever address
    with retrieval_engine_from_config(RetrievalConfig(protocol="zerosearch"), topk=3) as eng:
        assert eng.client.pool.servers == ["http://127.0.0.1:6002"] and eng.path == "/retrieve"


@pytest.mark.parametrize("reply", [[{"id": 1}], {"result": []}, ["text"]])
def test_zerosearch_client_garbage_is_bad_response(reply):
    with StubSimServer(replies=[(200, reply)]) as srv, \
            RemoteRetrievalEngine(srv.url + "/retrieve", protocol="zerosearch", max_retries=0, **FAST) as eng:
        r = eng.search([SearchRequest("a")])[0]
        assert r.fallback and r.error == "bad_response"
        assert srv.requests[0].json == {"query": "a", "top_k": 5}
