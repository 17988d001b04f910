"""A real HTTP server on 127.0.0.1 that answers from a script, for client tests (no mocked transport).

    with ScriptedServer([(500, "oops"), (200, {"result": []})]) as srv:
        srv.url            # http://127.0.0.1:<port>
        srv.requests       # what arrived: method, path, query params, JSON body

Each request takes the next scripted reply; the last one repeats. A body given as a dict or list is sent as
JSON; a callable gets the request record and returns (status, body).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

Reply = tuple[int, Any] | Callable[[dict[str, Any]], tuple[int, Any]]


class ScriptedServer:
    def __init__(self, replies: list[Reply]):
        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                record = {"method": self.command, "path": parts.path, "raw_path": self.path,
                          "params": {k: v[-1] for k, v in parse_qs(parts.query).items()},
                          "json": json.loads(raw) if raw.strip().startswith((b"{", b"[")) else None}
                with server._lock:
                    server.requests.append(record)
                    reply = server.replies[min(len(server.requests), len(server.replies)) - 1]
                status, body = reply(record) if callable(reply) else reply
                data = json.dumps(body).encode() if isinstance(body, (dict, list)) else str(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
