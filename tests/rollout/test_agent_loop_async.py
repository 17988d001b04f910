"""`rollout.mode=async` against `sync`, and `rollout.on_eos_without_action`.

What is identical between the two drivers, for the same per-trajectory seeds with the HF engine: every
trajectory's response ids, response mask, response text, stats (turns, searches, invalid actions, stop
reason, truncation) and per-search has-answer flags, exactly. The log-probs are bitwise identical when the
engine computes each sequence on its own (`micro_batch_size=1`); when sequences share a generate call
they agree to float rounding (batch composition and left padding change the order of CPU float sums;
measured max |diff| ~1e-7 here, asserted < 1e-5), and the sampled ids still agree because each sequence
draws from its own seeded generator.

The world (an SFT'd tiny model with scripted good and bad turns, real BM25 search) is
tests/rollout/agent_world.py's (shared with test_agent_loop.py); sampling at temperature 1 makes the trajectories differ in length,
searches and stop reasons. The search engine here is the real BM25 engine behind a delay per query, so
searches return out of order and the asynchronous driver really interleaves.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Sequence

import pytest

from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import GenerationEngine, GenerationStream, SamplingParams
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.rollout.turns import union_seconds
from zerosearch.search.types import SearchEngine, SearchRequest, SearchResult

from agent_world import _items, _loop_cfg  # the world fixture: conftest.py

PROMPTS = ["Q1 search then answer?", "Q2 answer at once?", "Q3 unclosed tag?", "Q4 empty query?",
           "Q5 tags in query?", "Q6 search twice?"]


class DelayedSearch(SearchEngine):
    """The real engine, each call held back by a delay chosen from its first query (and logged)."""

    def __init__(self, inner: SearchEngine, delay_s):
        self.inner, self.delay_s = inner, delay_s
        self.log: list[tuple[str, str, float]] = []  # (event, row_id, time)
        self._lock = threading.Lock()

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        with self._lock:
            self.log += [("start", r.row_id, time.perf_counter()) for r in requests]
        time.sleep(max([self.delay_s(r) for r in requests]) if requests else 0.0)
        out = self.inner.search(requests)
        with self._lock:
            self.log += [("end", r.row_id, time.perf_counter()) for r in requests]
        return out


def _rollout(world, mode: str, search: SearchEngine, micro_batch_size: int, **cfg):
    engine = HFEngine(world["engine"].model, world["tok"], micro_batch_size=micro_batch_size)
    loop = AgentLoop(engine, search, world["tok"], _loop_cfg(mode=mode, **cfg))
    trajs = loop.run(_items(world["tok"], PROMPTS), 3, SamplingParams(temperature=1.0, seed=11))
    return trajs, loop.timing


def _delay(req: SearchRequest) -> float:
    # a few rows are slow, the rest fast: their searches come back in another order than they went out
    return 0.15 if req.row_id.endswith("#0") else 0.01


@pytest.mark.parametrize("batching", ["call", "continuous"])
@pytest.mark.parametrize("micro_batch_size", [1, 64])
def test_async_equals_sync_for_the_same_seeds(world, micro_batch_size, batching):
    sync, t_sync = _rollout(world, "sync", DelayedSearch(world["search"], _delay), micro_batch_size)
    delayed = DelayedSearch(world["search"], _delay)
    asyn, t_async = _rollout(world, "async", delayed, micro_batch_size, async_groups=2, async_batching=batching)
    assert [t.uid for t in asyn] == [t.uid for t in sync]
    kinds = {t.stats.stop_reason for t in sync}
    assert len(kinds) >= 2 and sum(t.stats.searches for t in sync) >= 4  # a varied batch, not one behaviour
    for a, s in zip(asyn, sync):
        assert a.response_ids == s.response_ids, a.uid
        assert a.response_mask == s.response_mask, a.uid
        assert a.response_text == s.response_text
        assert asdict(a.stats) == asdict(s.stats)
        assert a.search_has_answer == s.search_has_answer
        if micro_batch_size == 1:
            assert a.rollout_log_probs == s.rollout_log_probs  # bitwise: each sequence computed alone
        else:
            assert a.rollout_log_probs == pytest.approx(s.rollout_log_probs, abs=1e-5)
    # the same accounting in both modes
    assert t_async["searches"] == t_sync["searches"] == sum(t.stats.searches for t in sync)
    for t in (t_sync, t_async):
        assert 0.0 <= t["engine_idle_share"] <= 1.0 and t["gen"] > 0 and t["search"] > 0
        assert t["rollout"] >= t["gen"]


class NoStream(GenerationEngine):
    """The HF engine behind the plain `GenerationEngine` interface: whole generate calls, no stream (as the
    trainer's Ray worker group)."""

    def __init__(self, inner: HFEngine):
        self.inner = inner

    def generate(self, prompts, params, max_new_tokens=None, seeds=None):
        return self.inner.generate(prompts, params, max_new_tokens, seeds)

    def update_weights(self, state_dict):
        self.inner.update_weights(state_dict)


class LoggedStream(GenerationStream):
    """The HF engine's stream, logging when each sequence came out (to order it against search starts)."""

    def __init__(self, inner: GenerationStream, log: list):
        self.inner, self.log = inner, log

    def add(self, key, prompt, max_new_tokens, seed=None):
        self.inner.add(key, prompt, max_new_tokens, seed)

    def step(self):
        out = self.inner.step()
        self.log += [("finished", key, time.perf_counter()) for key, _ in out]
        return out

    @property
    def active(self):
        return self.inner.active

    def close(self):
        self.inner.close()


def test_continuous_batching_sends_a_search_before_the_longest_turn_ends(world):
    """With continuous batching a trajectory's search goes out the step its turn ends, while longer first
    turns of other trajectories are still decoding (a generate call would hold it until the longest ends)."""
    log: list = []

    class Logged(HFEngine):
        def open_stream(self, params):
            return LoggedStream(super().open_stream(params), log)

    engine = Logged(world["engine"].model, world["tok"])
    search = DelayedSearch(world["search"], lambda r: 0.0)
    loop = AgentLoop(engine, search, world["tok"], _loop_cfg(mode="async", async_batching="auto"))
    trajs = loop.run(_items(world["tok"], PROMPTS), 3, SamplingParams(temperature=1.0, seed=11))
    first_turn_end = {}
    for event, key, t in log:
        first_turn_end.setdefault(trajs[key].uid, t)
    first_search = min(t for event, _, t in search.log if event == "start")
    assert first_search < max(first_turn_end.values())
    # one engine step per decode step: at least as many as the most tokens one trajectory generated
    assert loop.timing["generate_calls"] >= max(sum(t.response_mask) for t in trajs)


def test_continuous_batching_needs_an_engine_with_a_stream(world):
    engine = NoStream(world["engine"])
    loop = AgentLoop(engine, world["search"], world["tok"], _loop_cfg(mode="async", async_batching="continuous"))
    with pytest.raises(ValueError, match="rollout.async_batching=continuous"):
        loop.run(_items(world["tok"], PROMPTS[:1]), 1, SamplingParams(temperature=0.0))
    # auto falls back to whole generate calls, with the same trajectories as the stream gives
    auto = AgentLoop(engine, world["search"], world["tok"], _loop_cfg(mode="async", async_batching="auto"))
    stream = AgentLoop(world["engine"], world["search"], world["tok"], _loop_cfg(mode="async"))
    a = auto.run(_items(world["tok"], PROMPTS), 2, SamplingParams(temperature=1.0, seed=3))
    b = stream.run(_items(world["tok"], PROMPTS), 2, SamplingParams(temperature=1.0, seed=3))
    assert [t.response_ids for t in a] == [t.response_ids for t in b]
    assert auto.timing["generate_calls"] < stream.timing["generate_calls"]


def test_async_generates_while_a_slow_search_is_in_flight(world):
    """A trajectory whose search returned goes back to generation (and searches again) while a slow search
    of another trajectory is still out. The slow search is held until the other trajectory's second search
    arrives (no timing margin involved): the turn-synchronous loop could never get there, since its turn 2
    starts only after every turn-1 search has ended, so there the hold would run out instead."""
    slow, other = "row5#0", "row5#1"  # "Q6 search twice?" x 2, the same greedy script: search, search, answer
    second_search_started = threading.Event()
    released: list[bool] = []

    def delay(req: SearchRequest) -> float:
        if req.row_id == slow and req.turn == 0:
            released.append(second_search_started.wait(timeout=120))
        if req.row_id == other and req.turn == 1:
            second_search_started.set()
        return 0.0

    engine = HFEngine(world["engine"].model, world["tok"])
    loop = AgentLoop(engine, DelayedSearch(world["search"], delay), world["tok"],
                     _loop_cfg(mode="async", async_groups=1, async_batch_wait_s=0.0))
    trajs = loop.run(_items(world["tok"], PROMPTS), 2, SamplingParams(temperature=0.0))
    assert released == [True]
    searches = {t.uid: t.stats.searches for t in trajs}
    assert searches[slow] == searches[other] == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_eos_without_action_end_or_continue(world, mode):
    prompt = ["Q3 unclosed tag?"]  # the model writes "<search> Alvora<|im_end|>": an eos without an action
    tok = world["tok"]
    loop = AgentLoop(world["engine"], world["search"], tok, _loop_cfg(mode=mode, max_turns=2))
    (t,) = loop.run(_items(tok, prompt), 1, SamplingParams(temperature=0.0))
    assert t.stats.stop_reason == "eos" and t.stats.turns == 1 and t.stats.invalid_actions == 0
    loop = AgentLoop(world["engine"], world["search"], tok,
                     _loop_cfg(mode=mode, max_turns=2, on_eos_without_action="continue"))
    (c,) = loop.run(_items(tok, prompt), 1, SamplingParams(temperature=0.0))
    # the original ZeroSearch: an invalid action; the notice follows the eos token and the agent goes on
    assert c.stats.turns == 3 and c.stats.invalid_actions >= 2
    assert c.stats.stop_reason == "no_answer_at_final_turn"
    first = len(t.response_ids)
    assert c.response_ids[:first] == t.response_ids and c.response_ids[first - 1] == tok.convert_tokens_to_ids("<|im_end|>")
    notice = tok.encode(_loop_cfg().invalid_action_text, add_special_tokens=False)
    assert c.response_ids[first:first + len(notice)] == notice
    assert c.response_mask[first:first + len(notice)] == [0] * len(notice)


def test_bad_on_eos_value_names_the_key(world):
    loop = AgentLoop(world["engine"], world["search"], world["tok"], _loop_cfg(on_eos_without_action="stop"))
    with pytest.raises(ValueError, match="rollout.on_eos_without_action"):
        loop.run(_items(world["tok"], PROMPTS[:1]), 1, SamplingParams(temperature=0.0))


def test_union_seconds_counts_overlap_once():
    assert union_seconds([(0.0, 1.0), (0.5, 2.0), (3.0, 4.0), (3.2, 3.5)]) == pytest.approx(3.0)
    assert union_seconds([]) == 0.0
