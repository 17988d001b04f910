"""The shared HTTP core (zerosearch.search.http): server lists, wall-clock timeouts, the runner, the pool."""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from zerosearch.search.http import (
    AsyncRunner, HttpJob, RequestFailed, RetryPolicy, ServerPool, fetch_json, parse_servers)
from zerosearch.testing.stub_server import StubSimServer


@pytest.mark.parametrize("spec, expected", [
    ("localhost", ["http://localhost:6001"]),
    ("10.0.0.2:7000", ["http://10.0.0.2:7000"]),
    (" a:7000, b ,", ["http://a:7000", "http://b:6001"]),
    ("http://a:7000/", ["http://a:7000"]),
    ("[::1]:7000", ["http://[::1]:7000"]),
    ("[::1]", ["http://[::1]:6001"]),
    ("::1", ["http://[::1]:6001"]),
])
def test_parse_servers(spec: str, expected: list[str]) -> None:
    assert parse_servers(spec) == expected


@pytest.mark.parametrize("spec", ["", " , ", "a:b", ":7000", "http://a", "[::1]x"])
def test_parse_servers_errors(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_servers(spec)


def test_worst_case_bound() -> None:
    p = RetryPolicy(max_retries=2, backoff_s=0.5, backoff_max_s=0.75, timeout_s=2.0)
    assert p.worst_case_s() == pytest.approx(3 * 2.0 + (0.5 + 0.75) * 1.5)
    rng = random.Random(0)
    assert all(0.25 <= p.delay(0, rng) < 0.75 for _ in range(100))
    assert all(p.delay(5, rng) < 0.75 * 1.5 for _ in range(100))


def test_timeout_is_wall_clock_not_per_read() -> None:
    """A server that trickles its body a byte at a time never trips httpx's per-read timeout; the try
    must still end after timeout_s (worst_case_s would otherwise be a lie)."""
    runner = AsyncRunner(max_connections=4)
    policy = RetryPolicy(max_retries=0, timeout_s=0.4)
    try:
        with StubSimServer("trickle", trickle_s=0.05) as srv:
            pool = ServerPool([srv.url])
            t0 = time.monotonic()
            with pytest.raises(RequestFailed) as e:
                runner.run(lambda: fetch_json(runner.clients, pool, HttpJob("/v1/chat/completions",
                                                                            {"messages": []}), policy,
                                              random.Random(0)), timeout=10)
            assert time.monotonic() - t0 < 1.5
            assert e.value.kind == "timeout"
    finally:
        runner.close()


def test_runner_timeout_cancels_and_raises_builtin_timeout() -> None:
    runner = AsyncRunner()
    state = {}

    async def sleeper() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise

    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            runner.run(sleeper, timeout=0.2)
        assert time.monotonic() - t0 < 1.0
        deadline = time.monotonic() + 2
        while "cancelled" not in state and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state.get("cancelled")
        assert runner.run(lambda: asyncio.sleep(0, result=7), timeout=1) == 7   # still usable
    finally:
        runner.close()
    with pytest.raises(RuntimeError, match="closed"):
        runner.run(lambda: asyncio.sleep(0), timeout=1)
    runner.close()  # idempotent


def test_pool_cooldown_and_recovery() -> None:
    pool = ServerPool(["a", "b"], failure_limit=2, cooldown_s=0.2)
    assert [pool.pick() for _ in range(4)] == ["a", "b", "a", "b"]
    pool.report("a", False)
    assert "a" not in pool.cooling()
    pool.report("a", False)
    assert pool.cooling() == ["a"]
    assert [pool.pick() for _ in range(3)] == ["b", "b", "b"] and pool.skips >= 2
    time.sleep(0.25)
    assert "a" in [pool.pick() for _ in range(2)]            # tried again after the cooldown
    pool.report("a", True)
    assert pool.cooling() == []
    pool.report("a", False), pool.report("a", False), pool.report("b", False), pool.report("b", False)
    assert pool.pick() in ("a", "b")                         # all cooling: still answers, never fails


def test_client_pool_leases_and_keeps_connections_warm() -> None:
    """Leased clients (one request in flight each) reuse keep-alive connections, one per server, instead
    of churning them when requests alternate between servers."""
    from zerosearch.search.http import ClientPool

    runner = AsyncRunner(max_connections=1, connections_per_client=2)
    policy = RetryPolicy(max_retries=0, timeout_s=2.0)
    try:
        with StubSimServer() as a, StubSimServer() as b:
            pool = ServerPool([a.url, b.url])
            assert isinstance(runner.clients, ClientPool) and len(runner.clients.clients) == 1
            for _ in range(6):
                runner.run(lambda: fetch_json(runner.clients, pool, HttpJob("/generate", {"text": "x"}), policy,
                                              random.Random(0)), timeout=5)
            assert a.count() == b.count() == 3
            assert a.connections == b.connections == 1
    finally:
        runner.close()
