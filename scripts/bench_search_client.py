"""Benchmark the simulated-search client: sustained queries/s and per-query overhead.

The server is the stub simulator (`zerosearch.testing.stub_server`) in a *separate process*, answering every
request at once with a canned 5-document chat completion, so what is measured is the client: the noise
draw, prompt rendering, JSON, the pooled HTTP client, parsing, result assembly and metrics.

    python -m scripts.bench_search_client                  # defaults: batches of 64, 320 and 1024, ~5 s each
    python -m scripts.bench_search_client --batch 64 320 1024 --seconds 5 --concurrency 64

Prints, per batch size: queries/s over whole `search()` calls, client CPU ms per query (process time of
this process / queries), server CPU share, and the p50 latency of single-query calls (round trip).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from zerosearch.config.schema import CurriculumConfig, SimulationConfig
from zerosearch.search.simulated import SimulatedSearchEngine
from zerosearch.search.types import SearchRequest

CANNED = "\n".join(
    f"Doc {i}: (Title: Result {i}) A short simulated document number {i}, about thirty words long, written the way "
    f"a search engine snippet reads, with a date, a place and a name in it for realism."
    for i in range(1, 6))


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(uvloop: bool) -> tuple[subprocess.Popen, int]:
    cmd = [sys.executable, "-m", "zerosearch.testing.stub_server", "--port", "0", "--reply", CANNED]
    if uvloop:
        cmd.append("--uvloop")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"stub server did not start: {line!r}")
    return proc, int(line.split()[1])


def make_requests(n: int, offset: int) -> list[SearchRequest]:
    return [SearchRequest(query=f"who built bridge number {offset + i}", row_id=f"r{offset + i}",
                          question=f"Who built bridge number {offset + i}?", golden_answers=("Someone", "S. One"),
                          step=3, turn=0) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 320, 1024], help="queries per search() call")
    ap.add_argument("--seconds", type=float, default=5.0, help="measuring time per batch size")
    ap.add_argument("--concurrency", type=int, default=64, help="simulation.max_concurrency")
    ap.add_argument("--transport", default="chat", choices=["chat"], help="request format")
    ap.add_argument("--no-uvloop", action="store_true", help="plain asyncio in the server process")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args()

    proc, port = start_server(not args.no_uvloop)
    out: dict = {"cpus": os.cpu_count(), "concurrency": args.concurrency, "python": sys.version.split()[0]}
    try:
        sim = SimulationConfig(servers=f"127.0.0.1:{port}", transport=args.transport, model_name="bench",
                               max_concurrency=args.concurrency, timeout_s=10.0, max_retries=1)
        cur = CurriculumConfig(start_threshold=0.2, end_threshold=0.5)
        with SimulatedSearchEngine.from_config(sim, cur, mode="simulate_sft", topk=5, total_steps=10, seed=0,
                                               cache=False) as eng:
            eng.search(make_requests(200, 0))  # warm-up: connections, code paths
            eng.pop_metrics()
            # single-query round trips
            lat = []
            for i in range(200):
                t0 = time.perf_counter()
                eng.search(make_requests(1, 10_000 + i))
                lat.append(time.perf_counter() - t0)
            out["single_query_p50_ms"] = statistics.median(lat) * 1e3
            print(f"single query round trip: p50 {out['single_query_p50_ms']:.2f} ms")
            eng.pop_metrics()
            out["sizes"] = {}
            for size in args.batch:
                n_done, calls, offset = 0, 0, 100_000
                c0, s0 = time.process_time(), cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < args.seconds:
                    res = eng.search(make_requests(size, offset))
                    offset += size
                    n_done += len(res)
                    calls += 1
                wall = time.perf_counter() - t0
                client_cpu, server_cpu = time.process_time() - c0, cpu_seconds(proc.pid) - s0
                m = eng.pop_metrics()
                assert m["search/fallbacks"] == 0, m
                row = {"queries": n_done, "calls": calls, "queries_per_s": n_done / wall,
                       "client_cpu_ms_per_query": client_cpu / n_done * 1e3,
                       "server_cpu_ms_per_query": server_cpu / n_done * 1e3,
                       "call_ms": wall / calls * 1e3, "latency_p50_ms": m["search/latency_p50_s"] * 1e3,
                       "latency_p95_ms": m["search/latency_p95_s"] * 1e3}
                out["sizes"][size] = row
                print(f"batch {size:5d}: {row['queries_per_s']:7.0f} queries/s | client CPU "
                      f"{row['client_cpu_ms_per_query']:.3f} ms/query | server CPU {row['server_cpu_ms_per_query']:.3f}"
                      f" ms/query | {row['call_ms']:.1f} ms per call | per-request p50 {row['latency_p50_ms']:.1f} ms"
                      f" p95 {row['latency_p95_ms']:.1f} ms")
    finally:
        proc.terminate()
        proc.wait(5)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
