"""The asynchronous driver of the agent loop (`rollout.mode=async`) over a blocking generation engine.

The turn-synchronous loop makes every trajectory wait for the slowest search of its turn, and the engine
idles while any search runs. Here the main thread owns the engine and the searches run on a thread pool:

  * a trajectory whose search returned is *ready* and goes back to generation while others still wait;
  * a generate call takes the ready trajectories (longest waiting first), at most ceil(live / groups) of
    them (`rollout.async_groups`, default 1): with 2 groups one half's searches run while the other half
    generates, which hides a fixed search latency behind generation where half a batch generates in about
    half the time; on CPU at toy sizes it does not (benchmarks/bench_agent_loop.py), so 1 is the default;
  * with searches in flight and fewer ready trajectories than a group, it waits up to
    `rollout.async_batch_wait_s` for more before starting a call (results of one wave arrive together;
    a call for the first of them alone would make the rest wait a whole call);
  * `rollout.async_search_unit`: `request` sends each search as its own `search()` call (up to
    `async_max_searches` in flight), so one slow request delays only its own trajectory; `batch` sends the
    searches of one generate call as one call, one call at a time (the in-process simulator, which
    generates a batch at once on one model); `auto` picks batch for the in-process simulator.

How the engine batches (`rollout.async_batching`):
  * `continuous` (auto's choice for the HF and vLLM engines in this process; on the trainer's Ray workers,
    through `trainer.dispatch.WorkerGroupStream`, only when asked for: see `stream_by_default`): one
    `GenerationStream` for the rollout; each step decodes one token for every running sequence (over Ray:
    up to 8 per call, until one finishes), a finished turn's search is sent at once, and a trajectory whose
    search returned joins the running batch at the next step, so no sequence waits for the longest of a call;
  * `call`: whole `generate` calls over the ready trajectories, as above (groups, batch wait).

The turn rules are `turns.TurnRules`, shared with the synchronous loop; with per-trajectory seeds the
trajectories come out the same (the generation engine seeds each sequence on its own).
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Sequence

from zerosearch.config.schema import RolloutConfig
from zerosearch.generation.types import GenerationEngine, GenerationStream, SamplingParams
from zerosearch.rollout.turns import RolloutTiming, TurnRules, is_live, union_seconds
from zerosearch.search.types import SearchEngine, SearchRequest, SearchResult

def resolve_search_unit(cfg: RolloutConfig, search: SearchEngine) -> str:
    """`request` or `batch` for `rollout.async_search_unit` (auto: batch for the in-process simulator, whose
    one model generates a whole batch at once and must not be called from several threads)."""
    if cfg.async_search_unit in ("request", "batch"):
        return cfg.async_search_unit
    if cfg.async_search_unit != "auto":
        raise ValueError(f"rollout.async_search_unit={cfg.async_search_unit!r}: must be auto, request or batch")
    from zerosearch.search.sim_transports import InProcessTransport

    return "batch" if isinstance(getattr(search, "transport", None), InProcessTransport) else "request"


class AsyncScheduler:
    """Drives `TurnRules` with each trajectory on its own clock.

    Args:
        engine: the generation engine (called from this thread only).
        search: the search engine (called from a thread pool).
        cfg: the rollout config (`async_*` keys).
    """

    def __init__(self, engine: GenerationEngine, search: SearchEngine, cfg: RolloutConfig):
        self.engine, self.search, self.cfg = engine, search, cfg
        self.unit = resolve_search_unit(cfg, search)
        if cfg.async_batching not in ("auto", "continuous", "call"):
            raise ValueError(f"rollout.async_batching={cfg.async_batching!r}: must be auto, continuous or call")
        if cfg.async_groups < 1:
            raise ValueError(f"rollout.async_groups={cfg.async_groups}: must be >= 1")
        # kept across rollouts: starting threads anew for every rollout showed as overhead with instant searches
        workers = cfg.async_max_searches if self.unit == "request" else 1
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zerosearch-rollout-search")

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _call(self, rows: list[int], requests: list[SearchRequest]) -> tuple[list[int], list[SearchResult], float, float]:
        t0 = time.perf_counter()
        results = self.search.search(requests)
        return rows, results, t0, time.perf_counter()

    def _submit(self, inflight: set[Future], rows: list[int], requests: list[SearchRequest]) -> None:
        """Send searches: one `search()` call each (unit request) or all of them in one call (unit batch)."""
        if self.unit == "request":
            inflight.update(self.pool.submit(self._call, [i], [r]) for i, r in zip(rows, requests))
        elif requests:
            inflight.add(self.pool.submit(self._call, rows, requests))

    @staticmethod
    def _harvest(rules: TurnRules, trajs: Sequence, inflight: set[Future], done: set[Future],
                 intervals: list[tuple[float, float]]) -> list[int]:
        """Append the observations of returned searches; returns the trajectories that are live again."""
        live: list[int] = []
        for fut in done:
            inflight.discard(fut)
            rows, results, t0, t1 = fut.result()  # engines never raise for a failed request: a raise is a bug
            intervals.append((t0, t1))
            for i, res in zip(rows, results):
                rules.after_search(trajs[i], res)
                if is_live(trajs[i]):
                    live.append(i)
        return live

    def run(self, rules: TurnRules, trajs: Sequence, params: SamplingParams) -> RolloutTiming:
        inflight: set[Future] = set()
        intervals: list[tuple[float, float]] = []
        gen_calls: list[float] = []
        mode = self.cfg.async_batching
        use_stream = mode == "continuous" or (mode == "auto" and self.engine.stream_by_default)
        stream = self.engine.open_stream(params) if use_stream else None
        if stream is None and self.cfg.async_batching == "continuous":
            raise ValueError(f"rollout.async_batching=continuous: the {type(self.engine).__name__} engine has no "
                             "continuous batching; use auto or call")
        timing = RolloutTiming()
        try:
            if stream is not None:
                timing.searches = self._run_stream(stream, rules, trajs, params, inflight, intervals, gen_calls)
            else:
                timing.searches = self._run_calls(rules, trajs, params, inflight, intervals, gen_calls)
        finally:  # never leave a search of this rollout running into the next (after an error in generate)
            for fut in inflight:
                fut.cancel()
            wait(inflight)
            if stream is not None:
                stream.close()
        timing.gen, timing.generate_calls = sum(gen_calls), len(gen_calls)
        timing.search = union_seconds(intervals)
        return timing

    def _run_stream(self, stream: GenerationStream, rules: TurnRules, trajs: Sequence, params: SamplingParams,
                    inflight: set[Future], intervals: list[tuple[float, float]], gen_calls: list[float]) -> int:
        """Continuous batching: every trajectory is in the stream, in a search, or finished."""
        searches = 0

        def admit(i: int) -> None:
            cap = rules.generation_cap(trajs[i])
            if cap > 0:
                stream.add(i, trajs[i].prompt_ids + trajs[i].response_ids, cap, rules.seed(params, trajs[i]))

        def harvest_and_admit() -> None:
            for i in self._harvest(rules, trajs, inflight, {f for f in inflight if f.done()}, intervals):
                admit(i)

        for i in range(len(trajs)):
            admit(i)
        while stream.active or inflight:
            idle = not stream.active
            harvest_and_admit()
            if not stream.active:
                if inflight:
                    wait(inflight, return_when=FIRST_COMPLETED)
                continue
            if idle and inflight:
                # the engine was idle: results of one wave arrive within milliseconds of each other, and
                # each start of the stream from idle is a prefill, so wait briefly for the rest of the wave
                deadline = time.perf_counter() + self.cfg.async_batch_wait_s
                while inflight and (left := deadline - time.perf_counter()) > 0:
                    wait(inflight, timeout=left, return_when=FIRST_COMPLETED)
                    harvest_and_admit()
            t0 = time.perf_counter()
            finished = stream.step()
            gen_calls.append(time.perf_counter() - t0)
            rows: list[int] = []
            requests: list[SearchRequest] = []
            for i, out in finished:
                req = rules.after_generation(trajs[i], out)
                if req is not None:
                    rows.append(i)
                    requests.append(req)
                elif is_live(trajs[i]):
                    admit(i)  # an invalid action: straight back to generation
            searches += len(requests)
            self._submit(inflight, rows, requests)
        return searches

    def _run_calls(self, rules: TurnRules, trajs: Sequence, params: SamplingParams, inflight: set[Future],
                   intervals: list[tuple[float, float]], gen_calls: list[float]) -> int:
        """Whole generate calls over the ready trajectories (groups, batch wait)."""
        groups = self.cfg.async_groups
        ready: deque[int] = deque(range(len(trajs)))

        def harvest(done: set[Future]) -> None:
            ready.extend(self._harvest(rules, trajs, inflight, done, intervals))

        def n_live() -> int:
            return sum(1 for t in trajs if is_live(t))

        searches = 0
        while ready or inflight:
            self._gather(ready, inflight, harvest, lambda: math.ceil(n_live() / groups))
            cap = math.ceil(n_live() / groups)
            batch: list[tuple[int, int]] = []  # (trajectory, token cap)
            while ready and len(batch) < cap:
                i = ready.popleft()
                c = rules.generation_cap(trajs[i])
                if c > 0:
                    batch.append((i, c))
            if not batch:
                continue
            seeds = None if params.seed is None else [rules.seed(params, trajs[i]) for i, _ in batch]
            t0 = time.perf_counter()
            outs = self.engine.generate([trajs[i].prompt_ids + trajs[i].response_ids for i, _ in batch],
                                        params, [c for _, c in batch], seeds)
            gen_calls.append(time.perf_counter() - t0)
            rows: list[int] = []
            requests: list[SearchRequest] = []
            for (i, _), out in zip(batch, outs):
                req = rules.after_generation(trajs[i], out)
                if req is not None:
                    rows.append(i)
                    requests.append(req)
                elif is_live(trajs[i]):
                    ready.append(i)  # an invalid action: straight back to generation
            searches += len(requests)
            self._submit(inflight, rows, requests)
        return searches

    def _gather(self, ready: deque, inflight: set[Future], harvest, group_size) -> None:
        """Collect returned searches; block while nothing is ready, and wait up to `async_batch_wait_s` for a
        fuller call while fewer than a group are ready and searches are still in flight."""
        deadline: float | None = None
        while inflight:
            done = {f for f in inflight if f.done()}
            harvest(done)
            if not inflight or len(ready) >= group_size():
                return
            if not ready:
                wait(inflight, return_when=FIRST_COMPLETED)
                continue
            now = time.perf_counter()
            if deadline is None:
                deadline = now + self.cfg.async_batch_wait_s
            if now >= deadline:
                return
            wait(inflight, timeout=deadline - now, return_when=FIRST_COMPLETED)
