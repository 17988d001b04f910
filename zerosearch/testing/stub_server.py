"""The one test server: a real HTTP/1.1 server on 127.0.0.1 that speaks the simulator APIs with canned
documents and misbehaves on demand, or answers any method and path from a script. For tests, the client
benchmark and smoke runs without a model (no mocked transport anywhere).

Simulator mode (default): it answers `POST /v1/chat/completions`, `POST /v1/completions` (OpenAI-compatible
shapes) and sglang's `POST /generate`, and `GET /health`, `GET /v1/models` (with `served_model_name`, OpenAI's
model list, and a vLLM-like 404 for requests naming another model).

Scripted mode (`replies=[...]`): every request, any method and path, takes the next reply, the last one
repeating; a reply is `(status, body)` (a dict or list is sent as JSON, anything else as text) or a callable
`record -> (status, body)`:

    with StubSimServer(replies=[(500, "oops"), (200, {"result": []})]) as srv:
        srv.url            # http://127.0.0.1:<port>
        srv.requests       # what arrived: Received(method, path, raw_path, params, json)

It records every request it received (simulator mode: all but the health and model probes), so tests can
check what the client really sent. Simulator behaviours (`mode`, or a per-request `script` consumed first):

    ok           answer normally
    stall        wait `stall_s` seconds, then answer (a hung server, from the client's point of view)
    trickle      send headers, then the body one byte every `trickle_s` (never trips a per-read timeout)
    reset        read the request, then reset the connection (TCP RST, no response)
    http_500, http_503, http_429, http_400   that status with a short JSON error
    garbage      200 with a body that is not JSON
    wrong_shape  200 with JSON of the wrong shape
    empty        200 with an empty generation
    flood        200 with a chunked body (no Content-Length) of `flood_bytes` bytes, sent as fast as the
                 client reads (`bytes_sent` counts what left); a client without a reply cap reads it all

The reply text is `reply` (a string, or a function of the prompt text); by default it echoes: Doc 1 holds
the prompt itself (so documents asked for with the answer contain it), the others name the query.

In a thread: `with StubSimServer(mode="ok") as srv: ... srv.url`. As a process (what the benchmark does,
so the server does not share the client's core): `python -m zerosearch.testing.stub_server --port 0`
prints `PORT <n>` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import struct
import sys
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Union
from urllib.parse import parse_qs, urlsplit

BEHAVIOURS = ("ok", "stall", "trickle", "reset", "http_500", "http_503", "http_429", "http_400", "garbage",
              "wrong_shape", "empty", "flood")
_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 413: "Content Too Large",
            422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass(frozen=True)
class Received:
    """One request as it arrived: method, path (without the query), the raw request target, the query
    parameters (last value of each) and the JSON body (None when the body is empty or not JSON)."""

    method: str
    path: str
    raw_path: str
    params: dict[str, str]
    json: Any


Reply = Union[tuple[int, Any], Callable[[Received], tuple[int, Any]]]


def echo_reply(prompt: str, topk: int = 5) -> str:
    """Doc 1 repeats the prompt; Doc 2..k name the query (the last `Query:` line of the prompt)."""
    queries = re.findall(r"Query:\s*(.*)", prompt)
    query = queries[-1].strip() if queries else prompt[-80:]
    flat = re.sub(r"(?i)\bdoc", "Entry", " ".join(prompt.split()))  # the prompt's own "Doc 1:" examples
    docs = [f"Doc 1: {flat}"] + [f"Doc {i}: Stub document {i} about {query}." for i in range(2, topk + 1)]
    return "\n".join(docs)


class StubSimServer:
    """A misbehaving-on-demand simulator server on 127.0.0.1 (see the module docstring)."""

    def __init__(self, mode: str = "ok", *, script: list[str] | None = None,
                 reply: str | Callable[[str], str] | None = None, replies: list[Reply] | None = None,
                 topk: int = 5, stall_s: float = 30.0, trickle_s: float = 0.05, flood_bytes: int = 256 << 20,
                 host: str = "127.0.0.1", port: int = 0, record: bool = True,
                 served_model_name: str | None = None):
        if mode not in BEHAVIOURS:
            raise ValueError(f"unknown behaviour {mode!r}; known: {', '.join(BEHAVIOURS)}")
        if replies is not None and not replies:
            raise ValueError("replies, when given, needs at least one reply")
        self.mode, self.script = mode, deque(script or ())
        self.replies = list(replies) if replies is not None else None
        self.flood_bytes = flood_bytes
        self.bytes_sent = 0                         # body bytes of flood replies that left the server
        self.reply, self.topk, self.stall_s, self.trickle_s = reply, topk, stall_s, trickle_s
        self.host, self.port = host, port
        self.record = record
        # set: /v1/models lists it (OpenAI's shape) and other names get vLLM's 404; None: any name is answered
        self.served_model_name = served_model_name
        self.requests: list[Received] = []          # every request received (see the module docstring)
        self.behaviours: list[str] = []             # the behaviour each request got
        self.connections = 0                        # TCP connections accepted
        self.in_flight = 0                          # simulator requests being answered now
        self.max_in_flight = 0                      # the most at once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "StubSimServer":
        ready = threading.Event()
        errors: list[BaseException] = []

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._start())
            except BaseException as e:  # noqa: BLE001 - reported to the starting thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name=f"stub-sim-{self.mode}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def __enter__(self) -> "StubSimServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, path: str | None = None) -> int:
        """Requests received (to `path`, when given)."""
        return sum(1 for r in self.requests if path is None or r.path == path)

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = (lines[0].split(" ") + ["", ""])[:3]
                headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = headers.get("connection", "").lower() != "close"
                if not await self._respond(method, target, body, writer):
                    return
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if task is not None:
                self._tasks.discard(task)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _respond(self, method: str, target: str, raw: bytes, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection is gone (reset)."""
        parts = urlsplit(target)
        path = parts.path
        try:
            body = json.loads(raw) if raw.strip() else None
        except ValueError:
            body = None
        received = Received(method, path, target, {k: v[-1] for k, v in parse_qs(parts.query).items()}, body)
        if self.replies is not None:
            return await self._scripted(received, writer)
        if method == "GET" and path == "/v1/models" and self.served_model_name:
            listing = {"object": "list", "data": [{"id": self.served_model_name, "object": "model"}]}
            await self._send(writer, 200, json.dumps(listing).encode())
            return True
        if method == "GET" and path in ("/health", "/v1/models"):
            await self._send(writer, 200, b'{"status": "ok"}')
            return True
        if not raw:
            body = {}
        if self.record:
            self.requests.append(received)
        if path not in ("/v1/chat/completions", "/v1/completions", "/generate") or not isinstance(body, dict):
            await self._send(writer, 404 if isinstance(body, dict) else 400, b'{"error": "not found"}')
            return True
        if self.served_model_name and body.get("model") not in (None, "", self.served_model_name):
            await self._send(writer, 404, json.dumps({"error": {"message": f"The model `{body['model']}` does not exist."}}).encode())
            return True
        behaviour = self.script.popleft() if self.script else self.mode
        self.behaviours.append(behaviour)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._behave(behaviour, path, body, writer)
        finally:
            self.in_flight -= 1

    async def _scripted(self, received: Received, writer: asyncio.StreamWriter) -> bool:
        assert self.replies is not None
        self.requests.append(received)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        status, body = reply(received) if callable(reply) else reply
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else str(body).encode()
        await self._send(writer, status, data)
        return True

    async def _behave(self, behaviour: str, path: str, body: dict, writer: asyncio.StreamWriter) -> bool:
        if behaviour == "reset":
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if behaviour == "stall":
            await asyncio.sleep(self.stall_s)
        if behaviour.startswith("http_"):
            code = int(behaviour[5:])
            await self._send(writer, code, json.dumps({"error": f"stub {behaviour}"}).encode())
            return True
        if behaviour == "garbage":
            await self._send(writer, 200, b"<html>this is not json", content_type="text/html")
            return True
        if behaviour == "wrong_shape":
            await self._send(writer, 200, b'{"result": [1, 2, 3]}')
            return True
        if behaviour == "flood":
            return await self._flood(writer)
        text = "" if behaviour == "empty" else self._text(path, body)
        payload = json.dumps(self._shape(path, body, text)).encode()
        if behaviour == "trickle":
            await self._send(writer, 200, payload, trickle=True)
        else:
            await self._send(writer, 200, payload)
        return True

    def _text(self, path: str, body: dict) -> str:
        if isinstance(self.reply, str):
            return self.reply
        if path == "/v1/chat/completions":
            msgs = body.get("messages") or [{}]
            prompt = str(msgs[-1].get("content", ""))
        elif path == "/v1/completions":
            prompt = str(body.get("prompt", ""))
        else:
            prompt = str(body.get("text", ""))
        return self.reply(prompt) if callable(self.reply) else echo_reply(prompt, self.topk)

    @staticmethod
    def _shape(path: str, body: dict, text: str) -> dict:
        model = body.get("model", "stub")
        if path == "/v1/chat/completions":
            return {"id": "stub", "object": "chat.completion", "model": model, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
        if path == "/v1/completions":
            return {"id": "stub", "object": "text_completion", "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop"}]}
        return {"text": text, "meta_info": {"finish_reason": {"type": "stop"}}}

    async def _flood(self, writer: asyncio.StreamWriter) -> bool:
        """A chunked 200 of flood_bytes bytes (a JSON string that never ends), written as fast as it drains."""
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"text": "' + b"x" * (64 * 1024 - 10)
        try:
            while self.bytes_sent < self.flood_bytes:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
                self.bytes_sent += len(chunk)
                chunk = b"x" * len(chunk)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def _send(self, writer: asyncio.StreamWriter, code: int, payload: bytes,
                    content_type: str = "application/json", trickle: bool = False) -> None:
        head = (f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n").encode()
        if not trickle:
            writer.write(head + payload)
            await writer.drain()
            return
        writer.write(head)
        await writer.drain()
        for i in range(len(payload)):
            writer.write(payload[i:i + 1])
            await writer.drain()
            await asyncio.sleep(self.trickle_s)


def serve_forever(srv: "StubSimServer") -> None:
    """Serve `srv` in this process until interrupted, printing `PORT <n>` once listening (how a parent process
    learns the port of `--port 0`)."""

    async def run() -> None:
        await srv._start()
        print(f"PORT {srv.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", default="ok", choices=BEHAVIOURS)
    ap.add_argument("--reply", default=None, help="fixed reply text (default: echo the prompt)")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--uvloop", action="store_true", help="use uvloop when installed (faster)")
    args = ap.parse_args(argv)
    if args.uvloop:
        try:
            import uvloop  # type: ignore[import-not-found]

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    srv = StubSimServer(args.mode, reply=args.reply, topk=args.topk, host=args.host, port=args.port,
                        record=False)
    serve_forever(srv)


if __name__ == "__main__":
    sys.exit(main())
