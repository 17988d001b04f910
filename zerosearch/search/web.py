"""Web search through SerpApi's Google endpoint (`SEARCH_ENGINE google`), how the paper evaluates.

    GET https://serpapi.com/search.json?q=...&api_key=...&engine=google&num=5&gl=us&hl=en[&location=...]
    -> {"search_metadata": {"status": "Success", ...}, "organic_results": [{"title", "snippet", "link", ...}]}

Documents are the organic results' (title, snippet), best first. SerpApi answers an empty result page
with HTTP 200 and an `error` message ("Google hasn't returned any results for this query."): that is an
empty result, not a failure. 429 (throughput or credits) and 5xx are retried a bounded number of times.

The key policy: the API key is read ONLY from the environment variable SERPAPI_API_KEY, at construction,
which fails at once with a clear message when it is missing. The key is never taken from or written to a
config, never part of `repr`, metrics or results, and scrubbed from every log line and error text (httpx
logs request URLs, which carry the key, at INFO: a filter on its loggers redacts them). The engine refuses
to be pickled, so it cannot end up in a checkpoint.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from typing import Any
from urllib.parse import urlsplit

from zerosearch.search.client import HttpSearchEngine, SearchClient
from zerosearch.search.http import HttpJob, RetryPolicy
from zerosearch.search.types import Document, SearchRequest

log = logging.getLogger(__name__)

SERPAPI_ENDPOINT = "https://serpapi.com/search.json"
API_KEY_ENV = "SERPAPI_API_KEY"
API_KEY_ENVS = (API_KEY_ENV, "SER_API_KEY")  # SER_API_KEY: the original ZeroSearch's name, also accepted
REDACTED = "***"
_KEY_PARAM = re.compile(r"(api_key=)[^&\s\"'<>]+", re.IGNORECASE)
_NO_RESULTS = "hasn't returned any results"


class MissingApiKeyError(RuntimeError):
    """The web search engine was asked for but its API key is not in the environment."""


class _Secret:
    """Holds the key; shows as *** and cannot be pickled (so it never reaches a checkpoint)."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        raise TypeError("the SerpApi key cannot be pickled: rebuild the engine from the environment instead")


# Every key an engine of this process holds; the log filter redacts all of them.
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def scrub(text: str) -> str:
    """Remove API keys from text: known keys anywhere, and any `api_key=...` URL parameter."""
    text = _KEY_PARAM.sub(r"\1" + REDACTED, text)
    with _SECRETS_LOCK:
        secrets = list(_SECRETS)
    for s in secrets:
        if s in text:
            text = text.replace(s, REDACTED)
    return text


class _RedactFilter(logging.Filter):
    """Rewrites a record whose message carries a key (httpx logs 'HTTP Request: GET <url with api_key>')."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is not ours to fix
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = _RedactFilter()


def _install_log_filter() -> None:
    for name in ("httpx", "httpcore", __name__):
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def parse_serpapi_response(data: Any, topk: int) -> list[Document]:
    """(title, snippet) of the organic results; [] when Google found nothing. ValueError for an error
    payload or a malformed one (counted as bad_response, retried)."""
    if not isinstance(data, dict):
        raise ValueError("response is not a JSON object")
    status = (data.get("search_metadata") or {}).get("status")
    organic = data.get("organic_results")
    if organic is None:
        error = str(data.get("error", ""))
        if _NO_RESULTS in error or (status == "Success" and not error):
            return []
        raise ValueError(f"SerpApi error (status {status}): {error[:200] or 'no organic_results'}")
    if not isinstance(organic, list):
        raise ValueError("organic_results is not a list")
    docs = []
    for item in organic:
        if not isinstance(item, dict):
            continue
        title, snippet = str(item.get("title") or ""), str(item.get("snippet") or "")
        if title or snippet:
            docs.append(Document(title=title, text=snippet))
        if len(docs) == topk:
            break
    return docs


class SerpApiEngine(HttpSearchEngine):
    """Google search through SerpApi. The key comes from SERPAPI_API_KEY only (see the module doc).

    Args:
        topk: documents per request (SerpApi's `num`).
        engine, gl, hl, location: SerpApi parameters (WebSearchConfig).
        timeout_s, max_retries, backoff_s, backoff_max_s: the bounded retry policy.
        max_concurrency: requests in flight at once.
        batch_timeout_s: cut a search call off when no reply succeeded for this long.
        max_reply_bytes: the most bytes of one reply read (`oversize` beyond).
        endpoint: SerpApi's URL; tests point it at a local server.

    The requests are GETs of one batch of the search-client core (`client.SearchClient`), whose failure
    details pass through `scrub` before they leave it.
    """

    name = "google"

    def __init__(self, *, topk: int = 5, engine: str = "google", gl: str = "us", hl: str = "en",
                 location: str | None = None, timeout_s: float = 30.0, max_retries: int = 3,
                 backoff_s: float = 0.5, backoff_max_s: float = 8.0, max_concurrency: int = 8,
                 endpoint: str = SERPAPI_ENDPOINT, fallback_text: str = "No information available.",
                 seed: int = 0, batch_timeout_s: float | None = 30.0, max_reply_bytes: int = 8 << 20):
        key = next((os.environ[n].strip() for n in API_KEY_ENVS if os.environ.get(n, "").strip()), "")
        if not key:
            raise MissingApiKeyError(
                f"web search (search engine 'google', SerpApi) needs an API key in the environment variable "
                f"{API_KEY_ENV}; it is read only from the environment, never from a config file. "
                f"Set it with: export {API_KEY_ENV}=<your key>  (or evaluate offline with SEARCH_ENGINE wiki / "
                "search.eval_engine=retrieval)")
        if topk < 1 or max_concurrency < 1:
            raise ValueError(f"topk and max_concurrency must be >= 1 (got {topk}, {max_concurrency})")
        self._key = _Secret(key)
        with _SECRETS_LOCK:
            _SECRETS.add(key)
        _install_log_filter()
        self.topk, self.endpoint = topk, endpoint
        self.params = {"engine": engine, "gl": gl, "hl": hl, "num": topk}
        if location:
            self.params["location"] = location
        self.policy = RetryPolicy(max_retries=max_retries, backoff_s=backoff_s, backoff_max_s=backoff_max_s,
                                  timeout_s=timeout_s)
        parts = urlsplit(endpoint)
        self._path = parts.path
        # every failure detail is scrubbed in the core, last_error included
        super().__init__(SearchClient([f"{parts.scheme}://{parts.netloc}"], self.policy,
                                      max_concurrency=max_concurrency, max_reply_bytes=max_reply_bytes,
                                      stall_timeout_s=batch_timeout_s, name="serpapi",
                                      budget_key="search.web.batch_timeout_s", scrub=scrub, seed=seed), fallback_text)

    @classmethod
    def from_config(cls, cfg: Any, topk: int, **kwargs: Any) -> "SerpApiEngine":
        """From a `WebSearchConfig` (search.web) and `search.topk`."""
        if cfg.provider != "serpapi":
            raise ValueError(f"search.web.provider={cfg.provider!r}: only 'serpapi' is supported")
        return cls(topk=topk, engine=cfg.engine, gl=cfg.gl, hl=cfg.hl, location=cfg.location,
                   timeout_s=cfg.timeout_s, max_retries=cfg.max_retries, batch_timeout_s=cfg.batch_timeout_s,
                   max_reply_bytes=cfg.max_reply_bytes, **kwargs)

    def job(self, request: SearchRequest) -> HttpJob:
        params = {"q": request.query, **self.params, "api_key": self._key.reveal()}
        return HttpJob(self._path, method="GET", params=params,
                       parse=lambda data: parse_serpapi_response(data, self.topk))

    def __repr__(self) -> str:
        return f"SerpApiEngine(endpoint={self.endpoint!r}, params={self.params!r}, api_key={REDACTED})"

    def __reduce__(self) -> Any:
        raise TypeError("SerpApiEngine cannot be pickled (it holds an API key); build it from the environment")
