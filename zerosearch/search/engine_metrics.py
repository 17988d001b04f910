"""Counters every engine keeps between two `pop_metrics()` calls (one training step, or one validation).

Keys (all under `search/`):
    requests            requests answered
    failures/<kind>     requests that ended in a fallback, by the kind of the last failure (timeout, connect,
                        http_429, http_5xx, http_4xx, bad_response, internal, ...)
    fallbacks           requests answered with the fallback document
    retries             retries spent
    empty_results       successful requests that found no document
    docs_per_result     mean documents per result
    latency_p50_s, latency_p95_s   request wall time percentiles (a batched request counts its batch's time)
    has_answer          share of results (of requests that carry gold answers) with a document containing
                        one of the row's gold answers (normalised containment); absent when no request had any
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Sequence

import numpy as np

from zerosearch.search.types import SearchRequest, SearchResult


class SearchMetrics:
    """Thread-safe accumulator; `record` after each batch, `pop` once a step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.requests = 0
        self.failures: Counter[str] = Counter()
        self.fallbacks = 0
        self.retries = 0
        self.empty = 0
        self.docs = 0
        self.latencies: list[float] = []
        self.with_gold = 0
        self.has_answer = 0

    def record(self, requests: Sequence[SearchRequest], results: Sequence[SearchResult]) -> None:
        with self._lock:
            for req, res in zip(requests, results):
                self.requests += 1
                self.retries += res.retries
                self.latencies.append(res.latency_s)
                if res.fallback:
                    self.fallbacks += 1
                    self.failures[res.error or "unknown"] += 1
                else:
                    self.docs += len(res.documents)
                    self.empty += not res.documents
                if req.golden_answers:
                    self.with_gold += 1
                    self.has_answer += res.has_answer(req.golden_answers)

    def pop(self) -> dict[str, float]:
        with self._lock:
            if not self.requests:
                self._reset()
                return {}
            answered = self.requests - self.fallbacks
            out: dict[str, float] = {
                "search/requests": float(self.requests),
                "search/fallbacks": float(self.fallbacks),
                "search/retries": float(self.retries),
                "search/empty_results": float(self.empty),
                "search/docs_per_result": self.docs / answered if answered else 0.0,
                "search/latency_p50_s": float(np.percentile(self.latencies, 50)),
                "search/latency_p95_s": float(np.percentile(self.latencies, 95)),
            }
            for kind, n in sorted(self.failures.items()):
                out[f"search/failures/{kind}"] = float(n)
            if self.with_gold:
                out["search/has_answer"] = self.has_answer / self.with_gold
            self._reset()
            return out
