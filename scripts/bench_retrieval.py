"""Benchmark the local BM25 index: answer recall@k on the QA subsets, index build time, queries per second.

    python scripts/bench_retrieval.py                       # wiki-18 traces corpus, NQ/TriviaQA/PopQA/Bamboogle
    python scripts/bench_retrieval.py --index-dir /tmp/idx  # keep (and reuse) the index instead of a temp one
    python scripts/bench_retrieval.py --server              # also time the HTTP server + client path

recall@k = share of questions for which one of the top-k passages contains a gold answer (normalised
containment, zerosearch.utils.text.contains_answer), the "has answer" figure of Search-R1 / FlashRAG.
The shared data folder is $ZS_SHARED_DIR/data, else ../shared/data beside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a file from anywhere: import this checkout's package
    sys.path.insert(0, str(REPO))

from zerosearch.search.index import LocalIndex, open_index  # noqa: E402
from zerosearch.utils.text import contains_answer  # noqa: E402

SHARED_DATA = Path(os.environ.get("ZS_SHARED_DIR", REPO.parent / "shared")) / "data"
CORPUS = SHARED_DATA / "corpus" / "wiki18_passages_searchr1_traces.jsonl"
DATASETS = {  # name -> file in <shared>/data/qa
    "nq": "nq_test_sub1000_flashrag.jsonl",
    "triviaqa": "triviaqa_test_sub1000.jsonl",
    "popqa": "popqa_test_sub1000.jsonl",
    "bamboogle": "bamboogle_test.jsonl",
}


def load_qa(path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def answer_recall(index: LocalIndex, rows: Sequence[dict[str, Any]], ks: Sequence[int] = (1, 3, 5)
                  ) -> tuple[dict[int, float], float]:
    """({k: share of rows whose top-k passages contain a gold answer}, seconds the batched search took)."""
    t0 = time.perf_counter()
    hits = index.search([r["question"] for r in rows], max(ks))
    search_s = time.perf_counter() - t0
    found = {k: 0 for k in ks}
    for row, h in zip(rows, hits):
        texts = [index.store.row(i)["contents"] for i, _ in h]
        first = next((j for j, t in enumerate(texts) if contains_answer(t, row["golden_answers"])), None)
        for k in ks:
            found[k] += first is not None and first < k
    return {k: found[k] / len(rows) for k in ks}, search_s


def single_query_rate(index: LocalIndex, questions: Sequence[str], k: int = 5) -> float:
    """Queries per second when each query is its own call (what one rollout search costs)."""
    t0 = time.perf_counter()
    for q in questions:
        index.search([q], k)
    return len(questions) / (time.perf_counter() - t0)


def server_rate(index: LocalIndex, questions: Sequence[str], batch: int = 64, k: int = 5) -> tuple[float, float]:
    """(queries/s, p50 seconds a batch) through the real stack: the /retrieve server under uvicorn on a free
    port of 127.0.0.1 and RemoteRetrievalEngine sending `batch` queries a call (one rollout turn)."""
    import threading

    import uvicorn

    from zerosearch.search.retrieval import RemoteRetrievalEngine
    from zerosearch.search.retrieval_server import bind_socket, create_app
    from zerosearch.search.types import SearchRequest

    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(index), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/retrieve"
        with RemoteRetrievalEngine(url, topk=k, max_batch=batch) as eng:
            eng.search([SearchRequest(q) for q in questions[:batch]])  # warm the connection
            eng.pop_metrics()
            t0 = time.perf_counter()
            for i in range(0, len(questions), batch):
                eng.search([SearchRequest(q) for q in questions[i:i + batch]])
            rate = len(questions) / (time.perf_counter() - t0)
            p50 = eng.pop_metrics()["search/latency_p50_s"]
        return rate, p50
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(CORPUS), help="jsonl corpus")
    p.add_argument("--qa-dir", default=str(SHARED_DATA / "qa"), help="folder of the QA files")
    p.add_argument("--datasets", default=",".join(DATASETS), help="comma list among " + ", ".join(DATASETS))
    p.add_argument("--index-dir", default=None, help="index folder to build/reuse; default a temp folder, removed after")
    p.add_argument("--k1", type=float, default=0.9)
    p.add_argument("--b", type=float, default=0.4)
    p.add_argument("--server", action="store_true",
                   help="also time the HTTP path: the /retrieve server and its client, NQ in batches of 64")
    args = p.parse_args(argv)

    tmp = None if args.index_dir else tempfile.mkdtemp(prefix="zs_bench_bm25_")
    index_dir = Path(args.index_dir or Path(tmp) / "bm25")
    try:
        t0 = time.perf_counter()
        index = open_index(args.corpus, "bm25", index_dir=index_dir, k1=args.k1, b=args.b)
        open_s = time.perf_counter() - t0
        built = index.manifest["build_s"]
        print(f"corpus {Path(args.corpus).name}: {len(index)} passages; BM25 k1={args.k1} b={args.b}")
        print(f"index: built in {built:.2f}s (manifest), opened in {open_s:.2f}s")
        t0 = time.perf_counter()
        open_index(args.corpus, "bm25", index_dir=index_dir, k1=args.k1, b=args.b).close()
        print(f"index: reloaded from disk in {time.perf_counter() - t0:.2f}s")
        print(f"{'dataset':<10} {'n':>5} {'recall@1':>9} {'recall@3':>9} {'recall@5':>9} {'batch q/s':>10} {'single q/s':>11}")
        for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
            rows = load_qa(Path(args.qa_dir) / DATASETS[name])
            recall, search_s = answer_recall(index, rows)
            single = single_query_rate(index, [r["question"] for r in rows[:200]])
            print(f"{name:<10} {len(rows):>5} {recall[1]:>9.3f} {recall[3]:>9.3f} {recall[5]:>9.3f} "
                  f"{len(rows) / search_s:>10.0f} {single:>11.0f}")
        if args.server:
            rows = load_qa(Path(args.qa_dir) / DATASETS["nq"])
            rate, p50 = server_rate(index, [r["question"] for r in rows])
            print(f"server: {rate:.0f} queries/s through /retrieve + RemoteRetrievalEngine "
                  f"(batches of 64 NQ questions, top-5; p50 {p50 * 1000:.0f} ms a batch)")
        index.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
