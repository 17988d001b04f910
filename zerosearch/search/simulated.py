"""Simulated search (SEARCH_MODE simulate_sft | simulate_prompt): a simulation LLM writes the documents.

One call of `search(requests)`:

1. **Draw noise.** For each request, the curriculum probability of its step (or the request's fixed
   `noise_prob`) and the seeded draw of (seed, step, row_id, turn) decide whether its documents are
   useful or noisy (one flag per query, or per document slot at granularity "document").
2. **Plan generations.** Each request needs one generation (all useful or all noisy) or two (a mix: the
   useful and the noisy document sets are generated separately and interleaved by slot). A generation's
   prompt is rendered from the family's template with *the issuing row's* question and all its gold
   answers. With the cache on, a generation already made this run (or planned earlier in the same batch)
   is reused and the result marked `cache_hit`.
3. **Generate.** HTTP transports: the generations are one batch of the search-client core
   (`zerosearch.search.client.SearchClient`): concurrency cap, per-try wall-clock timeout, reply-size cap,
   bounded retries with backoff and jitter, server rotation and cool-down, and the batch's budget (cut off
   when no reply succeeded for `batch_timeout_s`, at the latest after `batch_deadline_s`); what has not
   finished by then counts as a `timeout`. In-process transport: one batched `generate`.
4. **Parse** each text into at most top-k documents (`sim_parsing`); an output with no usable document is
   an `empty_output` failure.
5. **Answer** one `SearchResult` per request, in order. A request whose generation failed gets the single
   fallback document (`fallback_text`), `fallback=True` and the failure kind in `error`. `search()` never
   raises because a request failed.

`pop_metrics()` returns the step's counters under `search/` (see `SimulatedSearchEngine.pop_metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from zerosearch.search.curriculum import NoiseSchedule
from zerosearch.search.client import SearchClient
from zerosearch.search.engine_metrics import SearchMetrics
from zerosearch.search.http import HttpJob, RetryPolicy, parse_servers
from zerosearch.search.sim_parsing import parse_documents
from zerosearch.search.sim_prompts import PromptSet, SimPrompt
from zerosearch.generation.types import SamplingParams
from zerosearch.search.sim_transports import HttpTransport, InProcessTransport, make_http_transport
from zerosearch.search.types import (
    Document, SearchEngine, SearchRequest, SearchResult, documents_contain_answer)
from zerosearch.utils.seeding import stable_seed

if TYPE_CHECKING:
    from zerosearch.config.schema import CurriculumConfig, SimulationConfig

log = logging.getLogger(__name__)

MODES = ("simulate_sft", "simulate_prompt")
DEFAULT_PORT = 6001


@dataclass(frozen=True)
class _Outcome:
    """What one generation produced. Assigned to its job in one step, so a batch cut off by its deadline
    sees each job either finished or not, never half-written."""

    docs: tuple[Document, ...] | None
    error: str | None
    retries: int
    latency_s: float
    detail: str = ""


@dataclass
class _Job:
    """One simulator generation: a prompt, useful or noisy, and (when cached) its cache key."""

    prompt: str
    noisy: bool
    key: tuple | None
    outcome: _Outcome | None = None
    from_cache: bool = False
    seed: int = 0  # from the cache key, or from the request when uncached: a regenerated job samples the same


class SimulatedSearchEngine(SearchEngine):
    """A search engine whose documents a simulation LLM writes, useful or noisy by the curriculum.

    Args:
        mode: simulate_sft | simulate_prompt; the engine's name (SearchResult.engine).
        prompts: the useful/noisy templates (PromptSet.load(family, prompt_dir)).
        schedule: the noise curriculum and its seeded draw.
        transport: an HttpTransport (needs `servers`) or an InProcessTransport.
        servers: base URLs (parse_servers) for HTTP transports.
        topk: documents per search.
        words_per_doc: the word count asked for in the prompt.
        sampling: simulator sampling settings.
        policy: per-request timeout and bounded retries.
        max_concurrency: requests in flight at once (also the size of the connection pool).
        failure_limit, cooldown_s: a server failing failure_limit times in a row is skipped cooldown_s.
        fallback_text: the document of a failed request.
        cache: reuse a generation for the same (query, mode, noisy, conditioning) within this run.
        cache_max_entries: oldest entries are dropped beyond this.
        batch_deadline_s: overall deadline of one call's HTTP work; None = derived from the policy.
        batch_timeout_s: cut a call's HTTP work off when no reply succeeded for this long; None = off.
        max_reply_bytes: the most bytes of a simulator reply read (`oversize` beyond).
        seed: seeds retry jitter (the noise draw is seeded by the schedule).
    """

    def __init__(
        self,
        *,
        mode: str,
        prompts: PromptSet,
        schedule: NoiseSchedule,
        transport: HttpTransport | InProcessTransport,
        servers: Sequence[str] = (),
        topk: int = 5,
        words_per_doc: int = 30,
        sampling: SamplingParams | None = None,
        policy: RetryPolicy | None = None,
        max_concurrency: int = 64,
        failure_limit: int = 3,
        cooldown_s: float = 30.0,
        fallback_text: str = "No information available.",
        cache: bool = False,
        cache_max_entries: int = 200_000,
        batch_deadline_s: float | None = None,
        batch_timeout_s: float | None = None,
        max_reply_bytes: int = 1 << 20,
        seed: int = 0,
    ):
        if mode not in MODES:
            raise ValueError(f"simulated search mode {mode!r}: must be one of {', '.join(MODES)}")
        if topk < 1:
            raise ValueError(f"topk must be >= 1, got {topk}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.name = mode
        self.mode, self.prompts, self.schedule, self.transport = mode, prompts, schedule, transport
        self.topk, self.words_per_doc = topk, words_per_doc
        self.sampling = sampling or SamplingParams(temperature=0.8, max_new_tokens=600, stop_strings=(f"Doc {topk + 1}",))
        self.policy = policy or RetryPolicy()
        self.max_concurrency = max_concurrency
        self.fallback = Document(title="", text=fallback_text)
        self.cache_enabled, self.cache_max_entries = cache, cache_max_entries
        self._cache: OrderedDict[tuple, tuple[Document, ...]] = OrderedDict()
        self.metrics = SearchMetrics()
        self._lock = threading.Lock()
        self.seed = seed
        self._uses_question = {
            noisy: bool({"question", "answers"} & set((prompts.noisy if noisy else prompts.useful).names))
            for noisy in (False, True)}
        self.client: SearchClient | None = None
        if isinstance(transport, HttpTransport):
            if not servers:
                raise ValueError("an HTTP simulation transport needs at least one server")
            self.client = SearchClient(
                servers, self.policy, max_concurrency=max_concurrency, failure_limit=failure_limit,
                cooldown_s=cooldown_s, max_reply_bytes=max_reply_bytes, stall_timeout_s=batch_timeout_s,
                deadline_s=batch_deadline_s, name=mode, budget_key="search.simulation.batch_timeout_s", seed=seed)
        self._closed = False

    # ------------------------------------------------------------------ construction from config
    @classmethod
    def from_config(cls, sim: "SimulationConfig", curriculum: "CurriculumConfig", *, mode: str, topk: int,
                    total_steps: int, seed: int, cache: bool, **overrides: Any) -> "SimulatedSearchEngine":
        """Build the engine of `search.simulation` + `curriculum`. `mode` is the search mode
        (simulate_sft | simulate_prompt); `sim.prompt_family`, when set, picks the templates instead."""
        if mode not in MODES:
            raise ValueError(f"simulated search mode {mode!r}: must be one of {', '.join(MODES)}")
        family = sim.prompt_family or mode
        prompts = PromptSet.load(family, sim.prompt_dir)
        schedule = NoiseSchedule(start=curriculum.start_threshold, end=curriculum.end_threshold,
                                 total_steps=total_steps, base=curriculum.base,
                                 granularity=curriculum.granularity, seed=seed)
        sampling = SamplingParams(temperature=sim.temperature, top_p=sim.top_p, max_new_tokens=sim.max_tokens,
                                  stop_strings=(f"Doc {topk + 1}",))
        policy = RetryPolicy(max_retries=sim.max_retries, backoff_s=sim.backoff_s,
                             backoff_max_s=sim.backoff_max_s, timeout_s=sim.timeout_s)
        transport: HttpTransport | InProcessTransport
        servers: list[str] = []
        if sim.transport == "inprocess":
            transport = InProcessTransport(sim.model_path or "", seed=seed)
        else:
            transport = make_http_transport(sim.transport, sim.model_name, sim.model_path)
            servers = parse_servers(sim.servers, default_port=DEFAULT_PORT)
        kwargs: dict[str, Any] = dict(
            mode=mode, prompts=prompts, schedule=schedule, transport=transport, servers=servers, topk=topk,
            words_per_doc=sim.words_per_doc, sampling=sampling, policy=policy,
            max_concurrency=sim.max_concurrency, failure_limit=sim.server_failure_limit,
            cooldown_s=sim.server_cooldown_s, fallback_text=sim.fallback_text, cache=cache, seed=seed,
            batch_timeout_s=sim.batch_timeout_s, max_reply_bytes=sim.max_reply_bytes)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ------------------------------------------------------------------ the interface
    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """One result per request, in order; never raises for a failed request."""
        if self._closed:
            raise RuntimeError(f"{self.name} engine is closed")
        if not requests:
            return []
        # 1-2. draw noise and plan the generations (deduplicated through the cache when it is on)
        flags: list[list[bool]] = []
        needs: list[dict[bool, _Job]] = []
        new_jobs: list[_Job] = []
        planned: dict[tuple, _Job] = {}
        probs: list[float] = []
        with self._lock:
            for req in requests:
                p = self.schedule.probability(req.step) if req.noise_prob is None else float(req.noise_prob)
                probs.append(p)
                f = self.schedule.draw(req.step, req.row_id, req.turn, self.topk, p)
                flags.append(f)
                jobs: dict[bool, _Job] = {}
                for noisy in sorted(set(f)):
                    key = self._cache_key(req, noisy) if self.cache_enabled else None
                    if key is not None and key in self._cache:
                        self._cache.move_to_end(key)
                        job = _Job("", noisy, key, _Outcome(self._cache[key], None, 0, 0.0), from_cache=True)
                    elif key is not None and key in planned:
                        job = planned[key]
                    else:
                        seed = stable_seed(self.seed, key) if key is not None else stable_seed(
                            self.seed, req.step, req.row_id, req.turn, noisy)
                        job = _Job(self._render(req, noisy), noisy, key, seed=seed)
                        new_jobs.append(job)
                        if key is not None:
                            planned[key] = job
                    jobs[noisy] = job
                needs.append(jobs)
        # 3-4. generate and parse
        cut, skips = False, 0
        if new_jobs:
            if self.client is not None:
                cut, skips = self._run_http(new_jobs)
            else:
                self._run_inprocess(new_jobs)
        # 5. assemble results and count
        results = self._assemble(requests, flags, needs, new_jobs)
        self._count(requests, results, flags, probs, new_jobs, cut, skips)
        return results

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call (then reset):

        search/requests          search requests answered
        search/generations       simulator generations issued (cache hits and in-batch duplicates excluded)
        search/failures/<kind>   requests answered with the fallback, by the kind of the last failure
                                 (timeout, connect, http_429, http_5xx, http_4xx, bad_response, oversize,
                                 empty_output, client_error, inprocess_error); they sum to fallbacks
        search/fallbacks         results that carry the fallback document
        search/failed_generations  simulator generations that failed (two per request can, per document)
        search/docs_per_result   mean documents per non-fallback result
        search/retries           retries spent
        search/latency_p50_s, search/latency_p95_s   per-generation wall time (retries included)
        search/cache_hits        results served from the cache (or from a duplicate in the same batch)
        search/deadline_hits     calls cut off by their budget (batch_timeout_s or the batch deadline)
        search/server_skips      times a cooling server was passed over
        search/noise_prob        mean noise probability the requests were drawn with (the curriculum's at
                                 their step, or their own fixed noise_prob)
        search/noise_share       share of document slots drawn noisy (the draws themselves)
        search/empty_results, search/has_answer   as every engine (engine_metrics)
        search/useful_has_answer share of useful results (non-fallback) containing a gold answer
        search/noisy_has_answer  share of noisy results containing a gold answer (should stay low)
        """
        return self.metrics.pop()

    def close(self) -> None:
        self._closed = True
        if self.client is not None:
            self.client.close()
            self.client = None
        if isinstance(self.transport, InProcessTransport):
            self.transport.close()

    # ------------------------------------------------------------------ planning
    def _render(self, req: SearchRequest, noisy: bool) -> SimPrompt:  # system message + user message
        return self.prompts.prompt(noisy=noisy, query=req.query, question=req.question,
                                   answers=req.golden_answers, topk=self.topk, words=self.words_per_doc)

    def _cache_key(self, req: SearchRequest, noisy: bool) -> tuple:
        """(normalised query, mode, noisy) and, when the template conditions on them, the row's question and
        answers: a useful result written towards one question's answer is not served to another question
        that happens to issue the same query."""
        query = " ".join(req.query.lower().split())
        cond: tuple = ()
        if self._uses_question[noisy]:
            cond = (" ".join(req.question.lower().split()), tuple(sorted(set(req.golden_answers))))
        return (query, self.mode, noisy, cond)

    # ------------------------------------------------------------------ generation
    def _parse(self, data: Any) -> tuple[Document, ...]:
        """A simulator reply -> its documents (an empty tuple is an `empty_output`, not retried)."""
        assert isinstance(self.transport, HttpTransport)
        return tuple(parse_documents(self.transport.extract(data), self.topk))

    def _run_http(self, jobs: list[_Job]) -> tuple[bool, int]:
        """Every job as one batch of the client core; (whether its budget cut it off, server skips)."""
        assert self.client is not None and isinstance(self.transport, HttpTransport)
        path, payload = self.transport.path, self.transport.payload
        report = self.client.run([HttpJob(path, json=payload(j.prompt, self.sampling, j.seed), parse=self._parse)
                                  for j in jobs])
        for j, o in zip(jobs, report.outcomes):
            error = o.error if o.error is not None else (None if o.value else "empty_output")
            j.outcome = _Outcome(o.value or None, error, o.retries, o.latency_s, o.detail)
        return report.cut is not None, report.server_skips

    def _run_inprocess(self, jobs: list[_Job]) -> None:
        assert isinstance(self.transport, InProcessTransport)
        t0 = time.monotonic()
        try:
            texts = self.transport.generate([j.prompt for j in jobs], self.sampling, [j.seed for j in jobs])
        except Exception as e:  # noqa: BLE001 - report as failed generations, never raise out of search()
            log.exception("simulated search: in-process generation failed")
            for j in jobs:
                j.outcome = _Outcome(None, "inprocess_error", 0, time.monotonic() - t0, f"{type(e).__name__}: {e}")
            return
        dt = time.monotonic() - t0
        for j, text in zip(jobs, texts):
            docs = parse_documents(text, self.topk)
            j.outcome = _Outcome(tuple(docs) if docs else None, None if docs else "empty_output", 0, dt)

    # ------------------------------------------------------------------ results
    def _assemble(self, requests: Sequence[SearchRequest], flags: list[list[bool]],
                  needs: list[dict[bool, _Job]], new_jobs: list[_Job]) -> list[SearchResult]:
        results: list[SearchResult] = []
        with self._lock:
            for j in new_jobs:
                o = j.outcome
                if o is not None and o.error is None and self.cache_enabled and j.key is not None:
                    self._cache[j.key] = o.docs  # type: ignore[assignment]
                    while len(self._cache) > self.cache_max_entries:
                        self._cache.popitem(last=False)
        new_ids = {id(j) for j in new_jobs}
        seen_new: set[int] = set()
        for req, f, jobs in zip(requests, flags, needs):
            # A generation is a cache hit for every request but the first that used it.
            hit = True
            for j in jobs.values():
                if id(j) in new_ids and id(j) not in seen_new:
                    seen_new.add(id(j))
                    hit = False
            results.append(self._result(f, {noisy: j.outcome for noisy, j in jobs.items()}, hit))
        return results

    def _result(self, f: list[bool], got: dict[bool, _Outcome | None], hit: bool) -> SearchResult:
        per_doc = self.schedule.granularity == "document"
        noisy_all = all(f)
        retries = 0 if hit else sum(o.retries for o in got.values() if o)
        latency = 0.0 if hit else max((o.latency_s for o in got.values() if o), default=0.0)
        failed = [o for o in got.values() if o is None or o.error is not None]
        if failed:
            error = (failed[0].error if failed[0] is not None else None) or "timeout"
            return SearchResult(documents=[self.fallback], engine=self.name, noisy=noisy_all,
                                noisy_docs=[noisy_all] if per_doc else None, latency_s=latency,
                                cache_hit=False, error=error, retries=retries, fallback=True)
        sources = {noisy: iter(o.docs or ()) for noisy, o in got.items() if o is not None}
        docs: list[Document] = []
        doc_flags: list[bool] = []
        for slot_noisy in f:
            d = next(sources[slot_noisy], None)
            if d is not None:
                docs.append(d)
                doc_flags.append(slot_noisy)
        return SearchResult(documents=docs, engine=self.name, noisy=noisy_all,
                            noisy_docs=doc_flags if per_doc else None, latency_s=latency, cache_hit=hit,
                            retries=retries)

    def _count(self, requests: Sequence[SearchRequest], results: list[SearchResult], flags: list[list[bool]],
               probs: list[float], new_jobs: list[_Job], cut: bool, skips: int) -> None:
        """The engine's own counters on top of every engine's (engine_metrics): what was drawn, generated,
        served from the cache, and whether useful/noisy documents hold the answer."""
        m = self.metrics
        m.record(requests, results, latencies=[j.outcome.latency_s for j in new_jobs if j.outcome is not None])
        m.count("generations", len(new_jobs))
        m.count("failed_generations", sum(1 for j in new_jobs if j.outcome is None or j.outcome.error is not None))
        m.count("cache_hits", sum(1 for r in results if r.cache_hit))
        m.count("deadline_hits", int(cut))
        m.count("server_skips", skips)
        m.share("noise_prob", sum(probs), len(probs))
        m.share("noise_share", sum(sum(f) for f in flags), sum(len(f) for f in flags))
        for req, r in zip(requests, results):
            if r.fallback or not req.golden_answers:
                continue
            doc_flags = r.noisy_docs if r.noisy_docs is not None else [bool(r.noisy)] * len(r.documents)
            for noisy in (False, True):
                group = [d for d, n in zip(r.documents, doc_flags) if n == noisy]
                if group:
                    m.share("noisy_has_answer" if noisy else "useful_has_answer",
                            float(documents_contain_answer(group, req.golden_answers)), 1.0)
