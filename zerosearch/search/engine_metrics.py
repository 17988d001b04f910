"""The one metrics class of every engine: counters kept between two `pop_metrics()` calls (one training
step, or one validation).

Keys every engine reports (all under `search/`):
    requests            requests answered
    failures/<kind>     requests that ended in a fallback, by the kind of the last failure (timeout, connect,
                        http_429, http_5xx, http_4xx, bad_response, oversize, internal, empty_output, ...);
                        they sum to fallbacks
    fallbacks           requests answered with the fallback document
    retries             retries spent
    empty_results       successful requests that found no document
    docs_per_result     mean documents per non-fallback result (absent when every request fell back)
    latency_p50_s, latency_p95_s   request wall time percentiles (a batched request counts its batch's time;
                        the simulated engine gives per-generation times)
    has_answer          share of results (of requests that carry gold answers) with a document containing
                        one of the row's gold answers (normalised containment); absent when no request had any

Engine-specific keys are added with `count(key, n)` (summed) and `share(key, num, den)` (sum(num) / sum(den),
absent while den is 0); the HTTP engines count `deadline_hits` and `server_skips` from the client core, the
simulated engine its generations, cache hits and noise draws.
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
        self.counts: dict[str, float] = {}
        self.shares: dict[str, list[float]] = {}

    def record(self, requests: Sequence[SearchRequest], results: Sequence[SearchResult],
               latencies: Sequence[float] | None = None) -> None:
        """Count a batch; `latencies` replaces the results' own latencies in the percentiles (the simulated
        engine gives one per generation, not one per result)."""
        with self._lock:
            for req, res in zip(requests, results):
                self.requests += 1
                self.retries += res.retries
                if res.fallback:
                    self.fallbacks += 1
                    self.failures[res.error or "unknown"] += 1
                else:
                    self.docs += len(res.documents)
                    self.empty += not res.documents
                if req.golden_answers:
                    self.with_gold += 1
                    self.has_answer += res.has_answer(req.golden_answers)
            self.latencies.extend(latencies if latencies is not None else (r.latency_s for r in results))

    def count(self, key: str, n: float = 1.0) -> None:
        """Add n to the counter search/<key> (reported even when 0 once counted)."""
        with self._lock:
            self.counts[key] = self.counts.get(key, 0.0) + n

    def share(self, key: str, num: float, den: float) -> None:
        """Add to the ratio search/<key> = sum(num) / sum(den) (absent while sum(den) is 0)."""
        with self._lock:
            acc = self.shares.setdefault(key, [0.0, 0.0])
            acc[0] += num
            acc[1] += den

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
            }
            if answered:
                out["search/docs_per_result"] = self.docs / answered
            if self.latencies:
                out["search/latency_p50_s"] = float(np.percentile(self.latencies, 50))
                out["search/latency_p95_s"] = float(np.percentile(self.latencies, 95))
            for kind, n in sorted(self.failures.items()):
                out[f"search/failures/{kind}"] = float(n)
            if self.with_gold:
                out["search/has_answer"] = self.has_answer / self.with_gold
            for key, n in self.counts.items():
                out[f"search/{key}"] = float(n)
            for key, (num, den) in self.shares.items():
                if den:
                    out[f"search/{key}"] = num / den
            self._reset()
            return out
