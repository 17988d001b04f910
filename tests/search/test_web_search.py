"""SerpApi web search against a real local HTTP server standing in for serpapi.com: the key policy (only
from the environment, never in errors, repr, metrics, logs or pickles), retries, parsing."""

from __future__ import annotations

import logging
import pickle

import pytest

from zerosearch.config.schema import WebSearchConfig
from zerosearch.search.types import SearchRequest
from zerosearch.search.web import MissingApiKeyError, SerpApiEngine, parse_serpapi_response, scrub
from zerosearch.testing.stub_server import StubSimServer

KEY = "sk-test-9f8e7d6c5b4a-SECRET"
# generous per-try timeout: these tests count retries exactly, and a loaded CI machine must not add one
FAST = dict(timeout_s=10.0, backoff_s=0.01, backoff_max_s=0.02)

SUCCESS = {
    "search_metadata": {"id": "abc", "status": "Success", "json_endpoint": "https://serpapi.com/searches/abc.json"},
    "search_parameters": {"engine": "google", "q": "prodigal son"},
    "organic_results": [
        {"position": 1, "title": "Parable of the Prodigal Son - Wikipedia", "link": "https://en.wikipedia.org/x",
         "snippet": "The Parable of the Prodigal Son is one of the parables of Jesus in the Bible."},
        {"position": 2, "title": "Luke 15", "link": "https://example.org/luke15"},  # no snippet
        {"position": 3, "title": "Third", "snippet": "third snippet"},
    ],
}
NO_RESULTS = {"search_metadata": {"status": "Success"}, "error": "Google hasn't returned any results for this query."}


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)


def echo_url(record):
    """A hostile server: its error page repeats the request URL, key included."""
    return 500, f"internal error while serving {record.raw_path}"


def everything_visible(eng, results, caplog) -> str:
    return "\n".join([repr(eng), str(vars(eng)), repr(results), str(eng.pop_metrics()), str(eng.last_error),
                      caplog.text, "\n".join(r.getMessage() for r in caplog.records)])


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_is_a_clear_startup_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("SERPAPI_API_KEY", value)
    with pytest.raises(MissingApiKeyError, match="SERPAPI_API_KEY") as e:
        SerpApiEngine()
    assert "environment" in str(e.value)


def test_key_not_in_config():
    assert not any("key" in f for f in WebSearchConfig.__dataclass_fields__)


def test_retries_429_and_500_then_parses(key_env, caplog):
    caplog.set_level(logging.DEBUG)  # httpx logs every request URL (with the key) at INFO
    caplog.set_level(logging.DEBUG, logger="httpx")  # importing vLLM sets httpx to WARNING
    with StubSimServer(replies=[(429, {"error": "throughput"}), echo_url, (200, SUCCESS)]) as srv:
        with SerpApiEngine(endpoint=srv.url + "/search.json", topk=2, location="Austin, Texas", **FAST) as eng:
            res = eng.search([SearchRequest("prodigal son", golden_answers=("Jesus",))])
            r = res[0]
            assert not r.fallback and r.error is None and r.retries == 2 and r.engine == "google"
            assert [(d.title, d.text) for d in r.documents] == [
                ("Parable of the Prodigal Son - Wikipedia", SUCCESS["organic_results"][0]["snippet"]),
                ("Luke 15", "")]
            params = srv.requests[-1].params
            assert srv.requests[-1].path == "/search.json" and srv.requests[-1].method == "GET"
            assert params == {"q": "prodigal son", "api_key": KEY, "engine": "google", "num": "2", "gl": "us",
                              "hl": "en", "location": "Austin, Texas"}
            assert any("HTTP Request" in rec.getMessage() for rec in caplog.records)  # httpx did log URLs
            seen = everything_visible(eng, res, caplog)
            assert KEY not in seen and "api_key=***" in seen
            # metrics counted before they were popped above
            res = eng.search([SearchRequest("prodigal son", golden_answers=("Jesus",))])
            m = eng.pop_metrics()
            assert m["search/requests"] == 1 and m["search/has_answer"] == 1.0


def test_failures_fall_back_and_never_leak_the_key(key_env, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")
    with StubSimServer(replies=[echo_url]) as srv, \
            SerpApiEngine(endpoint=srv.url + "/search.json", max_retries=2, **FAST) as eng:
        res = eng.search([SearchRequest("q1"), SearchRequest("q2")])
        assert all(r.fallback and r.error == "http_5xx" and r.retries == 2 for r in res)
        assert len(srv.requests) == 6
        assert eng.last_error and "internal error" in eng.last_error
        metrics = eng.pop_metrics()
        assert metrics["search/failures/http_5xx"] == 2
        seen = everything_visible(eng, res, caplog) + str(metrics)
        assert KEY not in seen
        with pytest.raises(TypeError, match="cannot be pickled") as e:
            pickle.dumps(eng)
        assert KEY not in str(e.value)
        with pytest.raises(TypeError):
            pickle.dumps(eng._key)
        assert KEY not in repr(eng._key)


def test_invalid_key_is_not_retried(key_env):
    with StubSimServer(replies=[(401, {"error": "Invalid API key. Your API key should be here: ..."})]) as srv, \
            SerpApiEngine(endpoint=srv.url, max_retries=3, **FAST) as eng:
        r = eng.search([SearchRequest("q")])[0]
        assert r.fallback and r.error == "http_4xx" and r.retries == 0 and len(srv.requests) == 1


def test_empty_results_and_error_payloads(key_env):
    with StubSimServer(replies=[(200, NO_RESULTS), (200, {"search_metadata": {"status": "Error"}, "error": "proxy"}),
                         (200, SUCCESS)]) as srv, SerpApiEngine(endpoint=srv.url, max_retries=0, **FAST) as eng:
        empty, error = eng.search([SearchRequest("nothing")])[0], eng.search([SearchRequest("err")])[0]
        assert empty.documents == [] and not empty.fallback and empty.error is None
        assert error.fallback and error.error == "bad_response"
        assert eng.pop_metrics()["search/empty_results"] == 1


def test_server_down_falls_back(key_env):
    with StubSimServer(replies=[(200, SUCCESS)]) as srv:
        url = srv.url
    with SerpApiEngine(endpoint=url, max_retries=1, **FAST) as eng:
        r = eng.search([SearchRequest("q")])[0]
        assert r.fallback and r.error == "connect" and r.retries == 1


def test_parse_and_scrub():
    assert [d.title for d in parse_serpapi_response(SUCCESS, topk=5)] == ["Parable of the Prodigal Son - Wikipedia",
                                                                         "Luke 15", "Third"]
    assert parse_serpapi_response(NO_RESULTS, topk=5) == []
    with pytest.raises(ValueError, match="Invalid API key"):
        parse_serpapi_response({"error": "Invalid API key"}, topk=5)
    with pytest.raises(ValueError):
        parse_serpapi_response(["not", "a", "dict"], topk=5)
    assert scrub("GET https://serpapi.com/search.json?q=x&api_key=abc123&num=5") == \
        "GET https://serpapi.com/search.json?q=x&api_key=***&num=5"


def test_from_config(key_env):
    cfg = WebSearchConfig(location="Berlin", gl="de", hl="de", max_retries=1)
    with SerpApiEngine.from_config(cfg, topk=3) as eng:
        assert eng.params == {"engine": "google", "gl": "de", "hl": "de", "num": 3, "location": "Berlin"}
        assert eng.policy.max_retries == 1 and KEY not in repr(eng)
    with pytest.raises(ValueError, match="provider"):
        SerpApiEngine.from_config(WebSearchConfig(provider="bing"), topk=3)
