"""The simulated engine over HTTP, against a real local server (StubSimServer) that answers or misbehaves:
request formats of the three transports, per-row conditioning, faults (each within its time budget, with
the right fallbacks and counts), a mixed pool, cooldown, the batch deadline, cache, per-document noise and
metrics. No HTTP mocks: every request crosses a real socket."""

from __future__ import annotations

import math
import socket
import time
from pathlib import Path

import pytest

from zerosearch.config.schema import CurriculumConfig, SimulationConfig
from zerosearch.testing.tiny_models import make_tiny_model
from zerosearch.search.simulated import SimulatedSearchEngine
from zerosearch.testing.stub_server import StubSimServer
from zerosearch.search.types import Document, SearchRequest

FALLBACK = "No information available."


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tokenizer with a ChatML template, for the transports that render the prompt client-side."""
    return make_tiny_model(tmp_path_factory.getbasetemp() / "tiny_model")  # shared across modules


def engine(*servers: StubSimServer | str, transport: str = "chat", family: str = "simulate_sft",
           timeout_s: float = 2.0, max_retries: int = 1, concurrency: int = 16, failure_limit: int = 3,
           cooldown_s: float = 30.0, cache: bool = False, noise: float = 0.0, granularity: str = "query",
           model_path: Path | None = None, model_name: str = "sim-model", topk: int = 5,
           **overrides: object) -> SimulatedSearchEngine:
    urls = ",".join(s.url if isinstance(s, StubSimServer) else s for s in servers)
    sim = SimulationConfig(servers=urls, transport=transport, model_name=model_name,
                           model_path=str(model_path) if model_path else None, prompt_family=family,
                           timeout_s=timeout_s, max_retries=max_retries, backoff_s=0.01, backoff_max_s=0.05,
                           max_concurrency=concurrency, server_failure_limit=failure_limit,
                           server_cooldown_s=cooldown_s, max_tokens=64)
    cur = CurriculumConfig(start_threshold=noise, end_threshold=noise, granularity=granularity)
    mode = "simulate_prompt" if family.startswith("simulate_prompt") else "simulate_sft"
    return SimulatedSearchEngine.from_config(sim, cur, mode=mode, topk=topk, total_steps=10, seed=1,
                                             cache=cache, **overrides)


def requests(n: int, prefix: str = "q", step: int = 0) -> list[SearchRequest]:
    return [SearchRequest(query=f"{prefix}{i} population of town {i}", row_id=f"row{i}",
                          question=f"How many people live in town {i}?", golden_answers=(f"{i}000", f"n{i}"),
                          step=step) for i in range(n)]


def prompt_of(path: str, body: dict) -> str:
    if path == "/v1/chat/completions":
        return body["messages"][-1]["content"]
    return body["prompt"] if path == "/v1/completions" else body["text"]


# ---------------------------------------------------------------------------------------------- transports
@pytest.mark.parametrize("transport", ["chat", "completions", "sglang"])
def test_transport_request_and_response_formats(transport: str, tiny_dir: Path) -> None:
    with StubSimServer() as srv, engine(srv, transport=transport, model_path=tiny_dir) as eng:
        reqs = requests(3)
        results = eng.search(reqs)
        assert [r.error for r in results] == [None] * 3
        assert all(len(r.documents) == 5 and not r.fallback for r in results)
        assert all(r.engine == "simulate_sft" and r.noisy is False for r in results)
        path = {"chat": "/v1/chat/completions", "completions": "/v1/completions", "sglang": "/generate"}[transport]
        assert srv.count(path) == 3 and srv.count() == 3
        for rec, req in zip(sorted(srv.requests, key=lambda r: prompt_of(r.path, r.json).split("Query: ")[1]), reqs):
            body = rec.json
            prompt = prompt_of(path, body)
            assert f"Query: {req.query}" in prompt
            if transport == "chat":
                # ZeroSearch's call: an explicit empty system message, then the prompt
                assert body["model"] == "sim-model" and body["messages"][0] == {"role": "system", "content": ""}
                assert body["messages"][1]["role"] == "user"
                assert body["max_tokens"] == 64 and body["temperature"] == 0.8 and body["stop"] == ["Doc 6"]
            elif transport == "completions":
                assert body["model"] == "sim-model"
                assert prompt.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
                assert prompt.endswith("<|im_start|>assistant\n")
            else:
                assert "model" not in body and body["sampling_params"]["max_new_tokens"] == 64
                assert body["sampling_params"]["stop"] == ["Doc 6"]
                assert prompt.startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")


def test_empty_model_name_is_left_out() -> None:
    with StubSimServer() as srv, engine(srv, model_name="") as eng:
        eng.search(requests(1))
        assert "model" not in srv.requests[0].json


def test_each_prompt_carries_its_own_rows_question_and_answers() -> None:
    """Rows 0 and 2 of a batch of 4 search; each prompt must hold its own row's question and *all* its
    gold answers (the original indexed by position in the filtered list and sent row 1's to row 2)."""
    rows = [dict(question=f"Question number {i} about river {i}?", answers=(f"answer{i}a", f"answer{i}b"))
            for i in range(4)]
    searching = [0, 2]
    reqs = [SearchRequest(query=f"river {i} length", row_id=f"r{i}", question=rows[i]["question"],
                          golden_answers=rows[i]["answers"]) for i in searching]
    # the all-answers families send every gold answer (the exact ZeroSearch ones only the first)
    for family in ("simulate_sft_all_answers", "simulate_prompt_all_answers"):
        with StubSimServer() as srv, engine(srv, family=family) as eng:
            eng.search(reqs)
            prompts = {prompt_of(r.path, r.json).split("Query: ")[-1].split("\n")[0]: prompt_of(r.path, r.json)
                       for r in srv.requests}
            assert set(prompts) == {"river 0 length", "river 2 length"}
            for i in searching:
                prompt = prompts[f"river {i} length"]
                assert rows[i]["question"] in prompt
                assert all(a in prompt for a in rows[i]["answers"])
                for j in set(range(4)) - {i}:
                    assert rows[j]["question"] not in prompt and f"answer{j}a" not in prompt


# ---------------------------------------------------------------------------------------------- faults
FAULTS = [  # behaviour, failure kind, retried?
    ("stall", "timeout", True),
    ("trickle", "timeout", True),
    ("reset", "connect", True),
    ("http_500", "http_5xx", True),
    ("http_503", "http_5xx", True),
    ("http_429", "http_429", True),
    ("garbage", "bad_response", True),
    ("wrong_shape", "bad_response", True),
    ("http_400", "http_4xx", False),
    ("empty", "empty_output", False),
]


@pytest.mark.parametrize("behaviour, kind, retried", FAULTS, ids=[f[0] for f in FAULTS])
def test_fault_gives_counted_fallbacks_within_budget(behaviour: str, kind: str, retried: bool) -> None:
    n = 6
    with StubSimServer(behaviour, stall_s=5.0, trickle_s=0.05) as srv, \
            engine(srv, timeout_s=0.3, max_retries=1) as eng:
        t0 = time.monotonic()
        results = eng.search(requests(n))
        wall = time.monotonic() - t0
        budget = eng.policy.worst_case_s()
        assert wall < budget + 0.5, (wall, budget)
        assert all(r.fallback and r.error == kind for r in results)
        assert all(r.documents == [Document("", FALLBACK)] for r in results)
        assert all(r.retries == (1 if retried else 0) for r in results)
        m = eng.pop_metrics()
        assert m[f"search/failures/{kind}"] == n and m["search/fallbacks"] == n
        assert m["search/failed_generations"] == n and "search/docs_per_result" not in m
        assert m["search/retries"] == (n if retried else 0)
        assert m["search/requests"] == n
        assert srv.count() == n * (2 if retried else 1)


def test_retries_then_success() -> None:
    with StubSimServer(script=["http_500", "reset", "http_429"]) as srv, engine(srv, max_retries=3) as eng:
        (r,) = eng.search(requests(1))
        assert r.error is None and not r.fallback and r.retries == 3 and len(r.documents) == 5
        m = eng.pop_metrics()
        assert m["search/retries"] == 3 and m["search/fallbacks"] == 0
        assert not any(k.startswith("search/failures/") for k in m)
        assert srv.behaviours == ["http_500", "reset", "http_429", "ok"]


def test_unreachable_server_never_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: nothing listens there
    with engine(f"127.0.0.1:{port}", timeout_s=0.5, max_retries=2) as eng:
        t0 = time.monotonic()
        results = eng.search(requests(4))
        assert time.monotonic() - t0 < eng.policy.worst_case_s()
        assert all(r.fallback and r.error == "connect" and r.retries == 2 for r in results)


@pytest.mark.parametrize("bad_behaviour", ["http_500", "reset", "stall"])
def test_mixed_pool_answers_everything_and_skips_the_bad_server(bad_behaviour: str) -> None:
    with StubSimServer(bad_behaviour, stall_s=5.0) as bad, StubSimServer() as good, \
            engine(bad, good, timeout_s=0.3, max_retries=2, concurrency=4, failure_limit=2) as eng:
        results = eng.search(requests(12))
        assert all(r.error is None and len(r.documents) == 5 for r in results)
        first = bad.count()
        assert 1 <= first <= 2 + 4          # at most the first wave plus failure_limit before it cools
        results = eng.search(requests(12, prefix="again"))
        assert all(r.error is None for r in results)
        assert bad.count() == first         # cooling: skipped entirely
        assert good.count() >= 24           # every request answered by the good server in the end
        m = eng.pop_metrics()
        assert m["search/server_skips"] >= 12 and m["search/fallbacks"] == 0


def test_cooled_server_is_tried_again_later() -> None:
    with StubSimServer("http_500") as bad, StubSimServer() as good, \
            engine(bad, good, max_retries=2, concurrency=1, failure_limit=1, cooldown_s=0.3) as eng:
        eng.search(requests(4))
        first = bad.count()
        assert first == 1
        eng.search(requests(4, prefix="b"))
        assert bad.count() == first
        time.sleep(0.35)
        eng.search(requests(4, prefix="c"))
        assert bad.count() == first + 1     # tried once more, failed, cooled again


def test_batch_deadline_cuts_off_unfinished_requests() -> None:
    with StubSimServer("stall", stall_s=5.0) as srv, \
            engine(srv, timeout_s=4.0, max_retries=0, batch_deadline_s=0.5) as eng:
        t0 = time.monotonic()
        results = eng.search(requests(5))
        assert time.monotonic() - t0 < 1.2
        assert all(r.fallback and r.error == "timeout" for r in results)
        m = eng.pop_metrics()
        assert m["search/deadline_hits"] == 1 and m["search/failures/timeout"] == 5
        assert m["search/latency_p95_s"] == pytest.approx(0.5)


def test_derived_batch_deadline() -> None:
    with engine("127.0.0.1:1", timeout_s=2.0, max_retries=1, concurrency=4) as eng:
        worst = eng.policy.worst_case_s()
        assert eng.client.batch_deadline_s(4) == pytest.approx(worst + 1.0)
        assert eng.client.batch_deadline_s(9) == pytest.approx(math.ceil(9 / 4) * worst + 1.0)


def test_concurrency_limit_and_one_pooled_client() -> None:
    with StubSimServer("stall", stall_s=0.1) as srv, engine(srv, concurrency=2) as eng:
        clients = eng.client.runner.clients
        t0 = time.monotonic()
        eng.search(requests(6))
        assert time.monotonic() - t0 >= 0.3 - 0.02        # 3 waves of 2
        eng.search(requests(6, prefix="b"))
        assert srv.max_in_flight == 2
        assert srv.connections <= 2                       # keep-alive connections reused across calls
        assert eng.client.runner.clients is clients


def test_all_queries_of_a_call_go_out_concurrently() -> None:
    with StubSimServer("stall", stall_s=0.3) as srv, engine(srv, concurrency=64) as eng:
        t0 = time.monotonic()
        results = eng.search(requests(20))
        assert time.monotonic() - t0 < 1.0                # not 20 x 0.3 s
        assert srv.max_in_flight == 20 and all(r.error is None for r in results)


# ---------------------------------------------------------------------------------------------- cache
def test_cache_reuses_documents() -> None:
    with StubSimServer() as srv, engine(srv, cache=True) as eng:
        reqs = requests(3)
        dup = SearchRequest(query=reqs[0].query.upper() + "  ", row_id="other", question=reqs[0].question,
                            golden_answers=reqs[0].golden_answers)
        first = eng.search([*reqs, dup])
        assert srv.count() == 3                           # the in-batch duplicate is not sent twice
        assert [r.cache_hit for r in first] == [False, False, False, True]
        assert first[3].documents == first[0].documents
        again = eng.search(reqs)
        assert srv.count() == 3 and all(r.cache_hit for r in again)
        assert [r.documents for r in again] == [r.documents for r in first[:3]]
        # the same query from another question is a different prompt, so not served from the cache
        other = SearchRequest(query=reqs[0].query, row_id="x", question="Another question?", golden_answers=("y",))
        assert not eng.search([other])[0].cache_hit and srv.count() == 4
        m = eng.pop_metrics()
        assert m["search/cache_hits"] == 4 and m["search/generations"] == 4 and m["search/requests"] == 8


def test_cache_off_sends_every_request_and_failures_are_not_cached() -> None:
    with StubSimServer() as srv, engine(srv, cache=False) as eng:
        eng.search(requests(2) * 2)
        assert srv.count() == 4
    with StubSimServer(script=["http_400"]) as srv, engine(srv, cache=True) as eng:
        assert eng.search(requests(1))[0].fallback
        r = eng.search(requests(1))[0]
        assert not r.fallback and not r.cache_hit and srv.count() == 2


# ---------------------------------------------------------------------------------------------- noise + metrics
def test_per_document_noise_mixes_useful_and_noisy_generations() -> None:
    with StubSimServer() as srv, engine(srv, noise=0.5, granularity="document") as eng:
        reqs = requests(20)
        results = eng.search(reqs)
        mixed = 0
        expected_generations = 0
        for r in results:
            assert r.noisy_docs is not None and len(r.noisy_docs) == len(r.documents) == 5
            expected_generations += len(set(r.noisy_docs))
            mixed += len(set(r.noisy_docs)) == 2
            # Doc 1 of each generation echoes its prompt: the first slot of each kind came from its own
            for flag, label in ((False, "Useful Output:"), (True, "Noisy Output:")):
                if flag in r.noisy_docs:
                    assert label in r.documents[r.noisy_docs.index(flag)].text
            assert r.noisy == all(r.noisy_docs)
        assert mixed >= 10 and srv.count() == expected_generations
        m = eng.pop_metrics()
        assert m["search/generations"] == expected_generations
        assert m["search/noise_share"] == pytest.approx(
            sum(sum(r.noisy_docs) for r in results) / 100)


def test_metrics_quality_signal_and_reset() -> None:
    # Zero-shot family: useful prompts hold the answers (the echoing stub repeats them), noisy ones do not.
    with StubSimServer() as srv, engine(srv, family="simulate_prompt", noise=0.5) as eng:
        results = eng.search(requests(30))
        n_noisy = sum(r.noisy for r in results)
        assert 0 < n_noisy < 30
        m = eng.pop_metrics()
        assert m["search/useful_has_answer"] == 1.0 and m["search/noisy_has_answer"] == 0.0
        assert m["search/noise_share"] == pytest.approx(n_noisy / 30)
        assert m["search/noise_prob"] == pytest.approx(0.5)
        assert 0 < m["search/latency_p50_s"] <= m["search/latency_p95_s"]
        assert m["search/requests"] == 30 and m["search/fallbacks"] == 0
        assert m["search/docs_per_result"] == 5.0 and m["search/failed_generations"] == 0
        assert eng.pop_metrics() == {}
        # a request's own noise_prob overrides the curriculum (validation at a fixed noise level)
        fixed = [SearchRequest(query=f"q{i}", row_id=f"v{i}", noise_prob=1.0) for i in range(5)]
        assert all(r.noisy for r in eng.search(fixed))
        assert eng.search([]) == []
    with pytest.raises(RuntimeError, match="closed"):    # a programming error, said plainly
        eng.search(requests(1))


def test_from_config_defaults_and_errors(tiny_dir: Path) -> None:
    with engine("10.1.2.3, 10.1.2.4:7000") as eng:
        assert eng.client.pool.servers == ["http://10.1.2.3:6001", "http://10.1.2.4:7000"]
        assert eng.name == "simulate_sft" and eng.topk == 5
    with pytest.raises(ValueError, match="model_path"):
        engine("127.0.0.1:1", transport="completions")
    with pytest.raises(ValueError, match="mode"):
        SimulatedSearchEngine.from_config(SimulationConfig(), CurriculumConfig(), mode="google", topk=5,
                                          total_steps=1, seed=0, cache=False)


def test_noise_prob_is_what_the_engine_drew_with() -> None:
    """search/noise_prob is the mean probability of this engine's own draws (the curriculum's at each
    request's step, or the request's fixed one), and search/noise_share the share its draws came out noisy."""
    sim = SimulationConfig(servers="", max_tokens=16, backoff_s=0.01)
    cur = CurriculumConfig(start_threshold=0.25, end_threshold=0.5)
    with StubSimServer() as srv:
        sim.servers = srv.url
        with SimulatedSearchEngine.from_config(sim, cur, mode="simulate_sft", topk=5, total_steps=1, seed=3,
                                               cache=False) as eng:
            first, last = requests(40, "a", step=0), requests(40, "b", step=1)
            fixed = [SearchRequest(query=f"v{i}", row_id=f"v{i}", noise_prob=1.0) for i in range(20)]
            results = eng.search(first + last + fixed)
            m = eng.pop_metrics()
            assert m["search/noise_prob"] == pytest.approx((40 * 0.25 + 40 * 0.5 + 20 * 1.0) / 100)
            assert m["search/noise_share"] == pytest.approx(sum(r.noisy for r in results) / 100)
            assert all(r.noisy for r in results[80:])
            eng.search(last)
            assert eng.pop_metrics()["search/noise_prob"] == pytest.approx(0.5)
