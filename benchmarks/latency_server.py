"""A simulation server that takes its time: the stub simulator (zerosearch.testing.stub_server) with a
latency added to every generation request, as a real simulator LLM on other GPUs would.

Each request waits `--latency` seconds, except a `--tail-share` of them that wait `--tail-latency`. Which
requests are slow is decided by a hash of the request body (the client sends a per-request seed), so the
same request is slow in every run: the synchronous and asynchronous loops of one benchmark meet the same
slow searches. Run as a process (so it never shares the client's interpreter):

    python -m benchmarks.latency_server --latency 0.2 --tail-share 0.1 --tail-latency 1.0   # prints PORT <n>
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys

from zerosearch.testing.stub_server import StubSimServer, serve_forever


class LatencyServer(StubSimServer):
    """StubSimServer whose `ok` answers come after a per-request delay."""

    def __init__(self, latency_s: float, tail_share: float = 0.0, tail_latency_s: float = 0.0, **kw):
        super().__init__("ok", record=False, **kw)
        self.latency_s, self.tail_share, self.tail_latency_s = latency_s, tail_share, tail_latency_s

    def delay(self, body: dict) -> float:
        h = hashlib.blake2b(json.dumps(body, sort_keys=True).encode(), digest_size=8).digest()
        u = int.from_bytes(h, "big") / 2.0 ** 64
        return self.tail_latency_s if u < self.tail_share else self.latency_s

    async def _behave(self, behaviour: str, path: str, body: dict, writer: asyncio.StreamWriter) -> bool:
        d = self.delay(body)
        if d > 0:
            await asyncio.sleep(d)
        return await super()._behave(behaviour, path, body, writer)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds every request waits")
    ap.add_argument("--tail-share", type=float, default=0.0, help="share of requests that wait --tail-latency")
    ap.add_argument("--tail-latency", type=float, default=1.0)
    ap.add_argument("--topk", type=int, default=1)
    ap.add_argument("--reply", default=None, help="fixed reply text (default: echo the prompt)")
    args = ap.parse_args(argv)
    srv = LatencyServer(args.latency, args.tail_share, args.tail_latency, topk=args.topk, reply=args.reply,
                        host=args.host, port=args.port)
    serve_forever(srv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
