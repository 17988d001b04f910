"""Measure building a BM25 index (zerosearch.search.index) on samples of a corpus, and extrapolate to wiki-18.

    python scripts/bench_bm25_build.py                          # the shared wiki-18 passages x 1, 4, 16
    python scripts/bench_bm25_build.py --corpus wiki-18.jsonl --sizes 100000,1000000   # real slices of wiki-18

Each size is built in a fresh subprocess (so its peak memory is its own): the first N passages of the
corpus, repeated (with new ids) when N exceeds it. Reported: wall and CPU seconds, the child's peak RSS
and the index's size on disk; then a linear fit (per passage, plus a fixed cost) extrapolated to the 21,015,324
passages of wiki-18 (psgs_w100). Repeating passages keeps the vocabulary of the sample, so the fit's
vocabulary-dependent part is a lower bound for the real corpus (its vocabulary keeps growing).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WIKI18_PASSAGES = 21_015_324
DEFAULT_CORPUS = Path(os.environ.get("ZS_SHARED_DIR", REPO.parent / "shared")) / "data" / "corpus" / "wiki18_passages_searchr1_traces.jsonl"


def make_sample(src: Path, n: int, out: Path) -> None:
    rows = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    with open(out, "w") as f:
        for i in range(n):
            r = rows[i % len(rows)]
            f.write(json.dumps({"id": f"s{i}", "contents": r["contents"]}) + "\n")


def child(corpus: str, index_dir: str) -> None:
    sys.path.insert(0, str(REPO))
    from zerosearch.search.index import open_index

    t0, c0 = time.perf_counter(), time.process_time()
    open_index(corpus, "bm25", index_dir=index_dir).close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "peak_rss_mib": peak_kib / 1024}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", default=str(DEFAULT_CORPUS))
    p.add_argument("--sizes", default="9560,38240,152960", help="passages per sample")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(*args.child)
    # the import cost of the child alone (python, numpy, bm25s), subtracted from the RSS fit's slope
    base = subprocess.run([sys.executable, "-c", "import resource, sys; sys.path.insert(0, %r); "
                           "from zerosearch.search.index import import_bm25s; import_bm25s(); "
                           "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)" % str(REPO)],
                          capture_output=True, text=True, check=True)
    print(f"baseline process (python + numpy + bm25s imported): {float(base.stdout):.0f} MiB")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            corpus, index = Path(tmp) / f"c{n}.jsonl", Path(tmp) / f"i{n}"
            make_sample(Path(args.corpus), n, corpus)
            out = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(index)], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["passages"], r["corpus_mib"] = n, corpus.stat().st_size / 2**20
            r["index_mib"] = sum(f.stat().st_size for f in index.rglob("*") if f.is_file()) / 2**20
            results.append(r)
            print(f"{n:>9} passages ({r['corpus_mib']:.0f} MiB corpus): wall {r['wall_s']:.1f}s, cpu {r['cpu_s']:.1f}s, "
                  f"peak RSS {r['peak_rss_mib']:.0f} MiB, index {r['index_mib']:.1f} MiB", flush=True)
            shutil.rmtree(index)
            corpus.unlink()
    a, b = results[0], results[-1]
    dn = b["passages"] - a["passages"]
    for key, unit in (("cpu_s", "s"), ("peak_rss_mib", "MiB"), ("index_mib", "MiB")):
        slope = (b[key] - a[key]) / dn
        est = b[key] + slope * (WIKI18_PASSAGES - b["passages"])
        print(f"extrapolated to {WIKI18_PASSAGES:,} passages: {key} ~ {est:,.0f} {unit} ({slope * 1e6:.1f} {unit} per million passages)")


if __name__ == "__main__":
    main()
