"""HTTP plumbing below the one search-client core (`zerosearch.search.client.SearchClient`): server lists,
bounded retries, a health-aware pool, one request with a wall-clock timeout and a reply-size cap
(`fetch_json`), and one event loop per engine running a pool of leased `httpx.AsyncClient`s.

Why a loop in a background thread: the rollout is synchronous, but a turn's queries must go out
concurrently and the connection pool must outlive a call (the original built a client per request and
retried forever with a bare except). `AsyncRunner.run` submits a coroutine to the engine's loop and waits
with a hard deadline, so a stalled server can never hang training.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar, Union

import httpx

T = TypeVar("T")

RETRYABLE = frozenset({"timeout", "connect", "http_429", "http_5xx", "bad_response"})


class RequestFailed(Exception):
    """A request failed after its tries. `kind` is one of timeout, connect, http_429, http_5xx, http_4xx,
    bad_response, oversize; `retries` how many retries were spent."""

    def __init__(self, kind: str, detail: str = "", retries: int = 0):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind, self.detail, self.retries = kind, detail, retries


def parse_servers(spec: str, default_port: int = 6001, scheme: str = "http") -> list[str]:
    """'a', 'a:7000', 'http://a:7000' or a comma list of them -> base URLs without a trailing slash.

    >>> parse_servers("localhost, 10.0.0.2:7000, [::1]:7001")
    ['http://localhost:6001', 'http://10.0.0.2:7000', 'http://[::1]:7001']
    """
    out = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if "://" in part:
            url = part.rstrip("/")
            host_port = url.split("://", 1)[1].split("/", 1)[0]
            if ":" not in host_port.split("]")[-1]:
                raise ValueError(f"server {part!r}: a URL must name its port (e.g. http://host:{default_port})")
            out.append(url)
            continue
        if part.startswith("["):  # IPv6 literal: [::1] or [::1]:7000
            host, _, rest = part.partition("]")
            host += "]"
            if rest and not rest.startswith(":"):
                raise ValueError(f"server {part!r}: expected [ipv6]:port")
            port = rest[1:]
        elif part.count(":") > 1:  # a bare IPv6 literal has no port
            host, port = f"[{part}]", ""
        else:
            host, _, port = part.partition(":")
        if not host or host == "[]":
            raise ValueError(f"server {part!r}: no host")
        if port and not port.isdigit():
            raise ValueError(f"server {part!r}: port {port!r} is not a number")
        if port and not 0 < int(port) < 65536:
            raise ValueError(f"server {part!r}: port {port} is outside 1..65535")
        out.append(f"{scheme}://{host}:{port or default_port}")
    if not out:
        raise ValueError(f"no server in {spec!r}: give host, host:port or a comma list of them")
    return out


@dataclass
class RetryPolicy:
    """Bounded retries with exponential backoff and full jitter."""

    max_retries: int = 3
    backoff_s: float = 0.5
    backoff_max_s: float = 8.0
    timeout_s: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (0-based): uniform in [0.5, 1.5) x base x 2^retry."""
        return min(self.backoff_max_s, self.backoff_s * (2 ** retry)) * (0.5 + rng.random())

    def worst_case_s(self) -> float:
        """Longest one request can take: every try times out and every backoff is at its maximum."""
        waits = sum(min(self.backoff_max_s, self.backoff_s * 2 ** r) * 1.5 for r in range(self.max_retries))
        return (self.max_retries + 1) * self.timeout_s + waits


class ServerPool:
    """Spreads requests over servers round-robin, skipping a server that failed `failure_limit` times in a
    row for `cooldown_s` seconds (then it is tried again). When every server is cooling down, the one
    whose cooldown ends first is used rather than failing outright."""

    def __init__(self, servers: list[str], failure_limit: int = 3, cooldown_s: float = 30.0):
        if not servers:
            raise ValueError("ServerPool needs at least one server")
        self.servers = list(servers)
        self.failure_limit, self.cooldown_s = failure_limit, cooldown_s
        self._next = 0
        self._fails = {s: 0 for s in servers}
        self._until = {s: 0.0 for s in servers}
        self._lock = threading.Lock()
        self.skips = 0  # times a cooling server was passed over

    def pick(self) -> str:
        with self._lock:
            now = time.monotonic()
            n = len(self.servers)
            for i in range(n):
                s = self.servers[(self._next + i) % n]
                if self._until[s] <= now:
                    self._next = (self._next + i + 1) % n
                    self.skips += i
                    return s
            self.skips += n
            return min(self.servers, key=lambda s: self._until[s])

    def report(self, server: str, ok: bool) -> None:
        with self._lock:
            if ok:
                self._fails[server] = 0
                self._until[server] = 0.0
                return
            self._fails[server] += 1
            if self._fails[server] >= self.failure_limit:
                self._until[server] = time.monotonic() + self.cooldown_s

    def cooling(self) -> list[str]:
        now = time.monotonic()
        return [s for s in self.servers if self._until[s] > now]


def classify_status(status: int) -> str | None:
    """None for success, else the failure kind of an HTTP status."""
    if status < 400:
        return None
    if status == 429:
        return "http_429"
    return "http_5xx" if status >= 500 else "http_4xx"


async def _with_deadline(aw: Awaitable[T], seconds: float) -> T:
    """Await `aw` for at most `seconds` of wall time (asyncio.TimeoutError after). httpx's own timeout is
    per phase (connect, write, and each read), so a server that trickles bytes would never trip it."""
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await aw
    return await asyncio.wait_for(aw, seconds)  # pragma: no cover - Python 3.10


class ClientPool:
    """Many `httpx.AsyncClient`s with a connection or two each, leased one request at a time.

    Why not one client with a big pool: httpcore re-scans every connection against every queued request
    on each request event, so one client with 64 connections spends 2-3 ms of CPU per request at 64 in
    flight (measured here: 426 requests/s on one core, against 1,458 with this pool; see
    docs/PERFORMANCE.md). A leased client has one request in flight and keeps at most
    `connections_per_client` keep-alive connections (one per server is enough), so the scan is O(1).
    Leases are LIFO, so a lightly loaded engine keeps reusing the same few warm connections.

    Create and use it on the event loop that runs the requests.
    """

    def __init__(self, size: int, connections_per_client: int = 1, timeout_s: float = 60.0):
        if size < 1:
            raise ValueError("ClientPool needs size >= 1")
        limits = httpx.Limits(max_connections=connections_per_client,
                              max_keepalive_connections=connections_per_client)
        ssl_context = httpx.create_ssl_context()  # one context for all (each costs milliseconds to build)
        self.clients = [httpx.AsyncClient(limits=limits, trust_env=False, verify=ssl_context, timeout=timeout_s)
                        for _ in range(size)]
        self._free: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        for c in reversed(self.clients):
            self._free.put_nowait(c)

    @contextlib.asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        client = await self._free.get()
        try:
            yield client
        finally:
            self._free.put_nowait(client)

    async def aclose(self) -> None:
        for c in self.clients:
            await c.aclose()


DEFAULT_MAX_REPLY_BYTES = 8 << 20


@dataclass(frozen=True)
class HttpJob:
    """One HTTP request of a batch: `method` to `<server><path>` with a JSON body (`json`) or query parameters
    (`params`); `parse(reply_json) -> value` reads the answer (raising ValueError, KeyError, TypeError or
    IndexError for a malformed one, which counts as bad_response and is retried)."""

    path: str = ""
    json: Any = None
    params: dict[str, Any] | None = None
    method: str = "POST"
    parse: Callable[[Any], Any] | None = None


class _Oversize(Exception):
    pass


async def _read_capped(client: httpx.AsyncClient, url: str, job: HttpJob, headers: dict[str, str] | None,
                       timeout_s: float, max_reply_bytes: int) -> tuple[int, bytes]:
    """(status, body) of one try, reading at most `max_reply_bytes` of (decoded) body: a declared
    Content-Length over the cap fails before any byte is read, and a streamed body stops being read at the cap,
    so a runaway server costs the client the cap and no more (raises _Oversize)."""
    async with client.stream(job.method, url, json=job.json, params=job.params, headers=headers,
                             timeout=timeout_s) as resp:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_reply_bytes:
            raise _Oversize(f"reply declares {declared} bytes; max_reply_bytes={max_reply_bytes}")
        body = bytearray()
        async for chunk in resp.aiter_bytes():
            body += chunk
            if len(body) > max_reply_bytes:
                raise _Oversize(f"reply passed max_reply_bytes={max_reply_bytes} while streaming")
        return resp.status_code, bytes(body)


async def _one_try(client: Union[httpx.AsyncClient, ClientPool], url: str, job: HttpJob,
                   headers: dict[str, str] | None, timeout_s: float, max_reply_bytes: int) -> tuple[int, bytes]:
    if isinstance(client, ClientPool):
        async with client.lease() as c:
            return await _with_deadline(_read_capped(c, url, job, headers, timeout_s, max_reply_bytes), timeout_s)
    return await _with_deadline(_read_capped(client, url, job, headers, timeout_s, max_reply_bytes), timeout_s)


async def fetch_json(
    client: Union[httpx.AsyncClient, ClientPool],
    pool: ServerPool,
    job: HttpJob,
    policy: RetryPolicy,
    rng: random.Random,
    headers: dict[str, str] | None = None,
    max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
) -> tuple[Any, int]:
    """Send `job` to a server of `pool`, retrying retryable failures. Returns (value, retries), where value is
    `job.parse(json)` (or the json). Raises RequestFailed after the last try; never retries 4xx other than
    429, nor a reply over `max_reply_bytes` (kind `oversize`: the server would most likely send it again).

    Each try is bounded by `policy.timeout_s` of wall time in total (not only per read), so one request
    never takes longer than `policy.worst_case_s()`. Waiting for a free connection counts towards it: keep
    requests in flight within the client's connections (a `ClientPool` lease guarantees it). The detail of
    a failure names the server and path, never the query parameters (they may carry an API key)."""
    kind, detail = "connect", ""
    for attempt in range(policy.max_retries + 1):
        if attempt:
            await asyncio.sleep(policy.delay(attempt - 1, rng))
        server = pool.pick()
        where = f"{server}{job.path}"
        try:
            status, body = await _one_try(client, where, job, headers, policy.timeout_s, max_reply_bytes)
            kind = classify_status(status)
            if kind is None:
                try:
                    data = json.loads(body)
                    value = job.parse(data) if job.parse else data
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    kind, detail = "bad_response", f"{type(e).__name__}: {e}"[:200]
                else:
                    pool.report(server, True)
                    return value, attempt
            else:
                detail = f"HTTP {status} from {where}: {body[:200].decode('utf-8', 'replace')}"
        except _Oversize as e:
            kind, detail = "oversize", f"{e} ({where})"
        except (httpx.TimeoutException, asyncio.TimeoutError) as e:
            kind, detail = "timeout", f"{type(e).__name__} after {policy.timeout_s}s from {where}"
        except httpx.TransportError as e:  # connection refused/reset, protocol errors
            kind, detail = "connect", f"{type(e).__name__}: {e} ({where})"
        pool.report(server, kind == "http_4xx")  # a 4xx is our request's fault, not the server's health
        if kind not in RETRYABLE:
            break
    raise RequestFailed(kind, detail, retries=attempt)


class AsyncRunner:
    """An event loop in a daemon thread, with `clients`, a `ClientPool` of `max_connections` leased
    `httpx.AsyncClient`s living on it (one request in flight each). Connections are opened on first use.

    `run(coro_factory, timeout)` calls `coro_factory()` (a function of no arguments returning a coroutine;
    it reaches the clients as `runner.clients`) on the loop and waits at most `timeout` seconds; on timeout
    the coroutine is cancelled and the builtin `TimeoutError` raised (on every Python version: before
    3.11, concurrent.futures raised its own TimeoutError class, which `except TimeoutError` missed).
    """

    def __init__(self, max_connections: int = 64, name: str = "zerosearch-http", connections_per_client: int = 1):
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._max_connections = max_connections
        self._connections_per_client = connections_per_client
        self._thread.start()
        self._ready.wait()
        self.clients: ClientPool = self.run(self._make_pool, timeout=10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._ready.set)
        self._loop.run_forever()

    async def _make_pool(self) -> ClientPool:
        return ClientPool(self._max_connections, self._connections_per_client)

    def run(self, coro_factory: Callable[[], Awaitable[T]], timeout: float) -> T:
        if self._loop.is_closed() or not self._thread.is_alive():
            raise RuntimeError("AsyncRunner is closed")
        fut = asyncio.run_coroutine_threadsafe(coro_factory(), self._loop)  # type: ignore[arg-type]
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"coroutine did not finish within {timeout}s (cancelled)") from None

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.run(self.clients.aclose, timeout=5)
        except Exception:  # noqa: BLE001 - best effort on shutdown
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():  # closing a loop that still runs raises; leave it to the daemon
            self._loop.close()
