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
3. **Generate.** HTTP transports: every generation goes out concurrently (at most `max_concurrency` in
   flight) over one pooled client on the engine's event loop, spread over the servers; each try has a
   wall-clock timeout, retryable failures (connection, timeout, 429, 5xx, malformed body) back off
   exponentially with jitter, and a server that fails `failure_limit` times in a row is skipped for
   `cooldown_s`. The whole batch has a deadline (`RetryPolicy.worst_case_s()` per wave of
   `max_concurrency` requests, or `batch_deadline_s`) enforced by `AsyncRunner.run`; what has not finished
   by then counts as a `timeout`. In-process transport: one batched `generate`.
4. **Parse** each text into at most top-k documents (`sim_parsing`); an output with no usable document is
   an `empty_output` failure.
5. **Answer** one `SearchResult` per request, in order. A request whose generation failed gets the single
   fallback document (`fallback_text`), `fallback=True` and the failure kind in `error`. `search()` never
   raises because a request failed.

`pop_metrics()` returns the step's counters under `search/` (see `SimulatedSearchEngine.pop_metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import threading
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from zerosearch.search.curriculum import NoiseSchedule
from zerosearch.search.http import AsyncRunner, RequestFailed, RetryPolicy, ServerPool, parse_servers, post_json
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


@dataclass
class _Stats:
    """Counters since the last pop_metrics()."""

    requests: int = 0
    generations: int = 0
    failures: Counter = field(default_factory=Counter)
    failed_generations: int = 0
    docs: int = 0
    fallbacks: int = 0
    retries: int = 0
    cache_hits: int = 0
    deadline_hits: int = 0
    latencies: list[float] = field(default_factory=list)
    noise_flags: int = 0
    noise_slots: int = 0
    noise_prob_sum: float = 0.0
    useful_checked: int = 0
    useful_has_answer: int = 0
    noisy_checked: int = 0
    noisy_has_answer: int = 0


def _percentile(values: list[float], q: float) -> float:
    """Nearest-rank-with-interpolation percentile (q in [0, 1]) of a non-empty list."""
    s = sorted(values)
    pos = (len(s) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


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
        self.batch_deadline_s = batch_deadline_s
        self._cache: OrderedDict[tuple, tuple[Document, ...]] = OrderedDict()
        self._stats = _Stats()
        self._lock = threading.Lock()
        self.seed = seed
        self._rng = random.Random(seed)
        self._uses_question = {
            noisy: bool({"question", "answers"} & set((prompts.noisy if noisy else prompts.useful).names))
            for noisy in (False, True)}
        self.pool: ServerPool | None = None
        self.runner: AsyncRunner | None = None
        if isinstance(transport, HttpTransport):
            if not servers:
                raise ValueError("an HTTP simulation transport needs at least one server")
            self.pool = ServerPool(list(servers), failure_limit=failure_limit, cooldown_s=cooldown_s)
            # one leased client per request in flight, each keeping a connection to every server
            self.runner = AsyncRunner(max_connections=max_concurrency, name=f"zerosearch-{mode}",
                                      connections_per_client=min(len(servers), 8))
        self._skips_seen = 0
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
            cooldown_s=sim.server_cooldown_s, fallback_text=sim.fallback_text, cache=cache, seed=seed)
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
        deadline_hit: float | None = None
        if new_jobs:
            if self.runner is not None:
                deadline_hit = self._run_http(new_jobs)
            else:
                self._run_inprocess(new_jobs)
        # 5. assemble results and count
        return self._assemble(requests, flags, needs, new_jobs, probs, deadline_hit)

    def pop_metrics(self) -> dict[str, float]:
        """Counters since the last call (then reset):

        search/requests          search requests answered
        search/generations       simulator generations issued (cache hits and in-batch duplicates excluded)
        search/failures/<kind>   requests answered with the fallback, by the kind of the last failure
                                 (timeout, connect, http_429, http_5xx, http_4xx, bad_response,
                                 empty_output, client_error, inprocess_error); they sum to fallbacks
        search/fallbacks         results that carry the fallback document
        search/failed_generations  simulator generations that failed (two per request can, per document)
        search/docs_per_result   mean documents per non-fallback result
        search/retries           retries spent
        search/latency_p50_s, search/latency_p95_s   per-generation wall time (retries included)
        search/cache_hits        results served from the cache (or from a duplicate in the same batch)
        search/deadline_hits     calls cut off by the batch deadline
        search/server_skips      times a cooling server was passed over
        search/noise_prob        mean curriculum probability of noise asked for
        search/noise_share       share of document slots drawn noisy
        search/useful_has_answer share of useful results (non-fallback) containing a gold answer
        search/noisy_has_answer  share of noisy results containing a gold answer (should stay low)
        """
        with self._lock:
            s, self._stats = self._stats, _Stats()
            skips = self.pool.skips if self.pool is not None else 0
            skip_delta, self._skips_seen = skips - self._skips_seen, skips
        if not s.requests:
            return {}
        m: dict[str, float] = {
            "search/requests": float(s.requests),
            "search/generations": float(s.generations),
            "search/fallbacks": float(s.fallbacks),
            "search/failed_generations": float(s.failed_generations),
            "search/retries": float(s.retries),
            "search/cache_hits": float(s.cache_hits),
            "search/deadline_hits": float(s.deadline_hits),
            "search/server_skips": float(skip_delta),
            "search/noise_prob": s.noise_prob_sum / s.requests,
            "search/noise_share": s.noise_flags / max(1, s.noise_slots),
        }
        if s.requests > s.fallbacks:
            m["search/docs_per_result"] = s.docs / (s.requests - s.fallbacks)
        for kind, n in sorted(s.failures.items()):
            m[f"search/failures/{kind}"] = float(n)
        if s.latencies:
            m["search/latency_p50_s"] = _percentile(s.latencies, 0.50)
            m["search/latency_p95_s"] = _percentile(s.latencies, 0.95)
        if s.useful_checked:
            m["search/useful_has_answer"] = s.useful_has_answer / s.useful_checked
        if s.noisy_checked:
            m["search/noisy_has_answer"] = s.noisy_has_answer / s.noisy_checked
        return m

    def close(self) -> None:
        self._closed = True
        if self.runner is not None:
            self.runner.close()
            self.runner = None
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
    def _deadline_s(self, n_jobs: int) -> float:
        if self.batch_deadline_s is not None:
            return self.batch_deadline_s
        waves = math.ceil(n_jobs / self.max_concurrency)
        return waves * self.policy.worst_case_s() + 1.0

    def _run_http(self, jobs: list[_Job]) -> float | None:
        """Run every job on the engine's loop; the deadline (s) when it cut the batch off, else None."""
        assert self.runner is not None and isinstance(self.transport, HttpTransport)
        runner, pool, transport, policy = self.runner, self.pool, self.transport, self.policy
        assert pool is not None
        sampling, topk, rng = self.sampling, self.topk, self._rng
        payloads = [transport.payload(j.prompt, sampling, j.seed) for j in jobs]

        async def one(job: _Job, payload: dict[str, Any], sem: asyncio.Semaphore) -> None:
            async with sem:
                t0 = time.monotonic()
                try:
                    text, retries = await post_json(runner.clients, pool, transport.path, payload, policy, rng,
                                                    validate=transport.extract)
                except RequestFailed as e:
                    job.outcome = _Outcome(None, e.kind, e.retries, time.monotonic() - t0, e.detail)
                    return
                except Exception as e:  # noqa: BLE001 - one broken request must not sink the batch
                    job.outcome = _Outcome(None, "client_error", 0, time.monotonic() - t0,
                                           f"{type(e).__name__}: {e}"[:300])
                    return
                docs = parse_documents(text, topk)
                job.outcome = _Outcome(tuple(docs) if docs else None, None if docs else "empty_output",
                                       retries, time.monotonic() - t0)

        async def batch() -> None:
            sem = asyncio.Semaphore(self.max_concurrency)
            await asyncio.gather(*(one(j, p, sem) for j, p in zip(jobs, payloads)))

        deadline = self._deadline_s(len(jobs))
        try:
            runner.run(batch, timeout=deadline)
            return None
        except TimeoutError:
            log.warning("simulated search: batch of %d generations cut off by its %.1fs deadline",
                        len(jobs), deadline)
            return deadline
        except RuntimeError as e:  # the runner is closed
            for j in jobs:
                if j.outcome is None:
                    j.outcome = _Outcome(None, "client_error", 0, 0.0, str(e))
            return None

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
                  needs: list[dict[bool, _Job]], new_jobs: list[_Job], probs: list[float],
                  deadline_hit: float | None) -> list[SearchResult]:
        # Snapshot each new job's outcome once: after a deadline the loop may still be finishing some.
        cut = _Outcome(None, "timeout", 0, deadline_hit or 0.0, "batch deadline")
        outcomes = {id(j): j.outcome or cut for j in new_jobs}
        results: list[SearchResult] = []
        with self._lock:
            st = self._stats
            st.requests += len(requests)
            st.generations += len(new_jobs)
            st.deadline_hits += int(deadline_hit is not None)
            for j in new_jobs:
                o = outcomes[id(j)]
                st.retries += o.retries
                st.latencies.append(o.latency_s)
                if o.error is not None:
                    st.failed_generations += 1
                elif self.cache_enabled and j.key is not None:
                    self._cache[j.key] = o.docs  # type: ignore[assignment]
                    while len(self._cache) > self.cache_max_entries:
                        self._cache.popitem(last=False)
            new_ids = set(outcomes)
            seen_new: set[int] = set()
            for req, f, jobs, p in zip(requests, flags, needs, probs):
                st.noise_prob_sum += p
                st.noise_flags += sum(f)
                st.noise_slots += len(f)
                # A generation is a cache hit for every request but the first that used it.
                hit = True
                for j in jobs.values():
                    if id(j) in new_ids and id(j) not in seen_new:
                        seen_new.add(id(j))
                        hit = False
                got = {noisy: (outcomes[id(j)] if id(j) in outcomes else j.outcome) for noisy, j in jobs.items()}
                results.append(self._result(req, f, got, hit, st))
        return results

    def _result(self, req: SearchRequest, f: list[bool], got: dict[bool, _Outcome | None], hit: bool,
                st: _Stats) -> SearchResult:
        per_doc = self.schedule.granularity == "document"
        noisy_all = all(f)
        retries = 0 if hit else sum(o.retries for o in got.values() if o)
        latency = 0.0 if hit else max((o.latency_s for o in got.values() if o), default=0.0)
        failed = [o for o in got.values() if o is None or o.error is not None]
        if failed:
            st.fallbacks += 1
            error = (failed[0].error if failed[0] is not None else None) or "timeout"
            st.failures[error] += 1
            return SearchResult(documents=[self.fallback], engine=self.name, noisy=noisy_all,
                                noisy_docs=[noisy_all] if per_doc else None, latency_s=latency,
                                cache_hit=False, error=error, retries=retries, fallback=True)
        if hit:
            st.cache_hits += 1
        sources = {noisy: iter(o.docs or ()) for noisy, o in got.items() if o is not None}
        docs: list[Document] = []
        doc_flags: list[bool] = []
        for slot_noisy in f:
            d = next(sources[slot_noisy], None)
            if d is not None:
                docs.append(d)
                doc_flags.append(slot_noisy)
        st.docs += len(docs)
        if req.golden_answers:
            for noisy in (False, True):
                group = [d for d, n in zip(docs, doc_flags) if n == noisy]
                if not group:
                    continue
                has = documents_contain_answer(group, req.golden_answers)
                if noisy:
                    st.noisy_checked += 1
                    st.noisy_has_answer += int(has)
                else:
                    st.useful_checked += 1
                    st.useful_has_answer += int(has)
        return SearchResult(documents=docs, engine=self.name, noisy=noisy_all,
                            noisy_docs=doc_flags if per_doc else None, latency_s=latency, cache_hit=hit,
                            retries=retries)
