"""The one search-client core: every engine that talks HTTP (simulated, retrieval server, web) sends its
requests through `SearchClient.run(jobs)`; `HttpSearchEngine` turns the outcomes into results, fallbacks
and metrics, so an engine over it is only its request and parse functions (the simulated engine, which
plans generations, draws noise and caches, uses `SearchClient` directly).

What `run` guarantees for a batch of `HttpJob`s:

- at most `max_concurrency` requests in flight, over pooled keep-alive connections on the engine's loop;
- each try bounded by `policy.timeout_s` of wall time (not only per read), and the reply read at most
  `max_reply_bytes` (a larger reply is the failure kind `oversize`, never buffered whole);
- retryable failures (connect, timeout, 429, 5xx, malformed reply) retried `policy.max_retries` times with
  exponential backoff and jitter, spread over the servers, a server failing `failure_limit` times in a row
  skipped for `cooldown_s`;
- a batch deadline: the batch ends when no reply has succeeded for `stall_timeout_s` (a server that never
  answers costs that long, not the retries' worst case of every wave), or at the latest after
  `deadline_s` (default: `policy.worst_case_s()` per wave of `max_concurrency`). What has not finished then
  counts as a `timeout`. A batch with failures is logged as one WARNING with the counts by kind.

`run` never raises for a failed request: each job gets a `JobOutcome` (value or failure kind).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

from zerosearch.search.engine_metrics import SearchMetrics
from zerosearch.search.http import (
    DEFAULT_MAX_REPLY_BYTES, AsyncRunner, HttpJob, RequestFailed, RetryPolicy, ServerPool, fetch_json)
from zerosearch.search.types import Document, SearchEngine, SearchRequest, SearchResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobOutcome:
    """What one job produced: `value` (the job's parse result) or `error` (the failure kind), the retries
    spent, its wall time (retries included) and a one-line `detail` of the failure."""

    value: Any = None
    error: str | None = None
    retries: int = 0
    latency_s: float = 0.0
    detail: str = ""


@dataclass
class BatchReport:
    """One `run`: an outcome per job, in order; `cut` says why unfinished jobs were cut off ("stalled",
    "deadline") or None; `server_skips` how often a cooling server was passed over."""

    outcomes: list[JobOutcome]
    cut: str | None = None
    wall_s: float = 0.0
    server_skips: int = 0
    failures: Counter = field(default_factory=Counter)


class SearchClient:
    """Runs batches of HTTP jobs against a pool of servers (see the module docstring).

    Args:
        servers: base URLs (`http.parse_servers`), e.g. ["http://127.0.0.1:6001"].
        policy: per-try timeout and bounded retries with backoff.
        max_concurrency: requests in flight at once (also the number of pooled clients).
        failure_limit, cooldown_s: a server failing failure_limit times in a row is skipped cooldown_s.
        max_reply_bytes: the most bytes of a reply read (`oversize` beyond).
        stall_timeout_s: end the batch when no reply succeeded for this long; None = only the deadline.
        deadline_s: the batch's overall bound; None = policy.worst_case_s() per wave, plus 1 s.
        name: the engine's name, in log lines and the loop thread's name.
        budget_key: the config key of `stall_timeout_s`, named in the WARNING of a cut batch.
        scrub: applied to every failure detail before it leaves the core (the web engine removes its key).
        headers: sent with every request.
        seed: seeds the retry jitter.
    """

    def __init__(self, servers: Sequence[str], policy: RetryPolicy, *, max_concurrency: int = 64,
                 failure_limit: int = 3, cooldown_s: float = 30.0,
                 max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES, stall_timeout_s: float | None = None,
                 deadline_s: float | None = None, name: str = "search", budget_key: str = "batch_timeout_s",
                 scrub: Callable[[str], str] | None = None, headers: dict[str, str] | None = None,
                 seed: int = 0):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if max_reply_bytes < 1:
            raise ValueError(f"max_reply_bytes must be >= 1, got {max_reply_bytes}")
        self.policy, self.max_concurrency, self.max_reply_bytes = policy, max_concurrency, max_reply_bytes
        self.stall_timeout_s, self.deadline_s = stall_timeout_s, deadline_s
        self.name, self.budget_key, self.headers = name, budget_key, headers
        self._scrub = scrub or (lambda text: text)
        self.pool = ServerPool(list(servers), failure_limit=failure_limit, cooldown_s=cooldown_s)
        self._rng = random.Random(seed)
        # one leased client per request in flight, each keeping a connection to every server (up to 8)
        self.runner = AsyncRunner(max_connections=max_concurrency, name=f"zerosearch-{name}",
                                  connections_per_client=min(len(self.pool.servers), 8))

    def batch_deadline_s(self, n_jobs: int) -> float:
        """The overall bound of a batch of n_jobs."""
        if self.deadline_s is not None:
            return self.deadline_s
        return math.ceil(n_jobs / self.max_concurrency) * self.policy.worst_case_s() + 1.0

    def run(self, jobs: Sequence[HttpJob]) -> BatchReport:
        """Send every job; one outcome per job, in order. Never raises for a failed request."""
        if not jobs:
            return BatchReport([])
        deadline = self.batch_deadline_s(len(jobs))
        skips0, t0 = self.pool.skips, time.monotonic()
        try:
            outcomes, cut = self.runner.run(lambda: self._batch(list(jobs), deadline), timeout=deadline + 5.0)
        except Exception as e:  # noqa: BLE001 - the loop itself failed, overran or is closed: lose time, not the run
            kind = "timeout" if isinstance(e, TimeoutError) else "client_error"
            outcomes = [JobOutcome(error=kind, latency_s=time.monotonic() - t0,
                                   detail=self._scrub(f"{type(e).__name__}: {e}"))] * len(jobs)
            cut = "deadline" if kind == "timeout" else None
        report = BatchReport(outcomes, cut, time.monotonic() - t0, self.pool.skips - skips0,
                             Counter(o.error for o in outcomes if o.error is not None))
        if report.failures:
            self._warn(report, len(jobs))
        return report

    def close(self) -> None:
        self.runner.close()

    # ------------------------------------------------------------------ on the loop
    async def _one(self, job: HttpJob) -> JobOutcome:
        t0 = time.monotonic()
        try:
            value, retries = await fetch_json(self.runner.clients, self.pool, job, self.policy, self._rng,
                                              headers=self.headers, max_reply_bytes=self.max_reply_bytes)
        except RequestFailed as e:
            return JobOutcome(error=e.kind, retries=e.retries, latency_s=time.monotonic() - t0,
                              detail=self._scrub(e.detail))
        except Exception as e:  # noqa: BLE001 - a bug in one parse must not sink the batch
            return JobOutcome(error="client_error", latency_s=time.monotonic() - t0,
                              detail=self._scrub(f"{type(e).__name__}: {e}")[:300])
        return JobOutcome(value=value, retries=retries, latency_s=time.monotonic() - t0)

    async def _batch(self, jobs: list[HttpJob], deadline_s: float) -> tuple[list[JobOutcome], str | None]:
        loop = asyncio.get_running_loop()
        start = last_success = loop.time()
        sem = asyncio.Semaphore(self.max_concurrency)
        outcomes: list[JobOutcome | None] = [None] * len(jobs)

        async def one(i: int) -> None:
            nonlocal last_success
            async with sem:
                outcomes[i] = out = await self._one(jobs[i])
            if out.error is None:
                last_success = loop.time()

        pending = {asyncio.ensure_future(one(i)) for i in range(len(jobs))}
        cut: str | None = None
        while pending:
            now = loop.time()
            left = start + deadline_s - now
            quiet = (last_success + self.stall_timeout_s - now) if self.stall_timeout_s is not None else math.inf
            if left <= 0 or quiet <= 0:
                cut = "deadline" if left <= 0 else "stalled"
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, quiet))
        for task in pending:
            task.cancel()
        if pending:  # let the cancelled requests hand their clients back to the pool
            await asyncio.gather(*pending, return_exceptions=True)
        elapsed = deadline_s if cut == "deadline" else loop.time() - start
        why = (f"batch deadline {deadline_s:.1f}s" if cut == "deadline"
               else f"no reply succeeded for {self.stall_timeout_s}s ({self.budget_key})")
        return [o if o is not None else JobOutcome(error="timeout", latency_s=elapsed, detail=f"cut off: {why}")
                for o in outcomes], cut

    def _warn(self, report: BatchReport, n: int) -> None:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(report.failures.items()))
        first = next((o.detail for o in report.outcomes if o.error is not None and o.detail), "")
        cut = ""
        if report.cut == "stalled":
            cut = (f"; cut off after {report.wall_s:.1f}s: no reply succeeded for {self.stall_timeout_s}s "
                   f"(set by {self.budget_key})")
        elif report.cut == "deadline":
            cut = f"; cut off by the batch deadline after {report.wall_s:.1f}s"
        log.warning("%s: %d of %d requests failed (%s) in %.1fs%s; servers cooling: %d of %d; first: %s",
                    self.name, sum(report.failures.values()), n, kinds, report.wall_s, cut,
                    len(self.pool.cooling()), len(self.pool.servers), first[:300])


class HttpSearchEngine(SearchEngine):
    """A search engine over the core: a subclass gives its request (`job`, or `jobs` for a batched API) and
    parse functions, nothing else. Failed requests get the fallback document with `error` set, everything
    is counted in `metrics` (`engine_metrics.SearchMetrics`, plus `deadline_hits` and `server_skips`), and
    `last_error` keeps the latest failure's (scrubbed) detail.

    Args:
        client: the engine's `SearchClient` (its servers, policy and budgets).
        fallback_text: the document of a failed request.
    """

    name = "http"

    def __init__(self, client: SearchClient, fallback_text: str = "No information available."):
        self.client, self.fallback_text = client, fallback_text
        self.metrics = SearchMetrics()
        self.last_error: str | None = None

    def job(self, request: SearchRequest) -> HttpJob:
        """The request answering one search; its `parse` returns that search's documents."""
        raise NotImplementedError(f"{type(self).__name__} must define job() or jobs()")

    def jobs(self, requests: Sequence[SearchRequest]) -> list[tuple[HttpJob, int]]:
        """The requests answering `requests`, in order, each with how many consecutive searches it answers
        (its `parse` then returns that many document lists). Default: one `job` per search."""
        out = []
        for r in requests:
            j = self.job(r)
            out.append((replace(j, parse=lambda data, p=j.parse: [p(data) if p else data]), 1))
        return out

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        if not requests:
            return []
        planned = self.jobs(requests)
        report = self.client.run([j for j, _ in planned])
        results: list[SearchResult] = []
        for (_, n), o in zip(planned, report.outcomes):
            if o.error is None:
                results += [SearchResult(documents=list(d), engine=self.name, latency_s=o.latency_s,
                                         retries=o.retries) for d in o.value]
            else:
                self.last_error = f"{o.error}: {o.detail}"
                results += [SearchResult(documents=[Document(title="", text=self.fallback_text)], engine=self.name,
                                         latency_s=o.latency_s, error=o.error, retries=o.retries, fallback=True)
                            for _ in range(n)]
        self.metrics.record(requests, results)
        self.metrics.count("deadline_hits", int(report.cut is not None))
        self.metrics.count("server_skips", report.server_skips)
        return results

    def pop_metrics(self) -> dict[str, float]:
        return self.metrics.pop()

    def close(self) -> None:
        self.client.close()
