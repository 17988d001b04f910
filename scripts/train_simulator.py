#!/usr/bin/env python
"""Fine-tune a simulation LLM the ZeroSearch way on any corpus + QA set and any base model.

    python scripts/train_simulator.py --base-model PATH --corpus corpus.jsonl --qa train.jsonl [more.jsonl] \\
        --out models/my_simulator [--query-field entity] [--topk 5] [--words 30] [--steps 1000]

Collects (query, documents) pairs with BM25 over the corpus, labels them useful/noisy by whether they hold
a gold answer, fine-tunes the base model on the simulation prompts (configs/prompts, simulate_sft) and
reports how often its useful and its noisy outputs contain the answer on held-out rows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zerosearch.simulator.finetune import train_simulator  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-model", required=True, help="a causal LM folder to fine-tune")
    ap.add_argument("--corpus", required=True, help="jsonl corpus {id, contents} searched with BM25")
    ap.add_argument("--qa", required=True, nargs="+", help="QA files (jsonl or parquet)")
    ap.add_argument("--out", required=True, help="output folder for the simulator")
    ap.add_argument("--query-field", default=None, help="row field to use as the query (default: the question)")
    ap.add_argument("--family", default="simulate_sft", choices=["simulate_sft", "simulate_prompt"])
    ap.add_argument("--topk", type=int, default=5, help="documents per example")
    ap.add_argument("--words", type=int, default=30, help="words per document")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--max-rows", type=int, default=None)
    ap.add_argument("--eval-rows", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for p in (a.base_model, a.corpus, *a.qa):
        if not Path(p).exists():
            print(f"error: {p} does not exist", file=sys.stderr)
            return 2
    train_simulator(base_model=a.base_model, out_dir=a.out, corpus=a.corpus, qa_files=a.qa,
                    query_field=a.query_field, family=a.family, topk=a.topk, words=a.words, steps=a.steps,
                    batch_size=a.batch_size, lr=a.lr, max_rows=a.max_rows, eval_rows=a.eval_rows, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
