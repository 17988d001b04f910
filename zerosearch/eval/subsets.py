"""Which rows are evaluated: the seven benchmarks by short name, and the `--limit N --seed S` protocol.

    resolve_dataset("bamboogle")          -> ("bamboogle", <shared>/data/qa/bamboogle_test.jsonl)
    resolve_dataset("data/my_test.jsonl") -> ("my_test", data/my_test.jsonl)   # any file load_qa reads
    select_subset(rows, limit=500, seed=0)

The subset protocol (papers report on fixed subsets, e.g. 500 questions a benchmark):
- no limit, or a limit at least the file's size: every row, in file order;
- otherwise the rows at the first `limit` positions of a seeded permutation of the file's row positions,
  kept in file order. The permutation is `random.Random(stable_seed(seed, "eval_subset", name)).shuffle`
  of `range(len(rows))`: it depends only on the seed, the dataset's name and its row count, so the same
  command picks the same questions on every machine, and the subset of a smaller limit is contained in
  that of a larger one (raising `--limit` later extends a run instead of starting over).
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Sequence

from zerosearch.data.qa import QARow
from zerosearch.utils.paths import shared_dir
from zerosearch.utils.seeding import stable_seed

# short name -> file in <shared>/data/qa: the test splits the ZeroSearch / Search-R1 tables report on
BENCHMARKS: dict[str, str] = {
    "nq": "nq_test_sub1000_flashrag.jsonl",
    "triviaqa": "triviaqa_test_sub1000.jsonl",
    "popqa": "popqa_test_sub1000.jsonl",
    "hotpotqa": "hotpotqa_dev.jsonl",
    "2wikimultihopqa": "2wikimultihopqa_dev.jsonl",
    "musique": "musique_dev.jsonl",
    "bamboogle": "bamboogle_test.jsonl",
}
# the paper's column titles, in its order (single-hop, then multi-hop)
TITLES: dict[str, str] = {"nq": "NQ", "triviaqa": "TriviaQA", "popqa": "PopQA", "hotpotqa": "HotpotQA",
                          "2wikimultihopqa": "2Wiki", "musique": "Musique", "bamboogle": "Bamboogle"}


def qa_dir() -> Path:
    """Where the benchmark files are: `$ZS_QA_DIR`, else `<shared>/data/qa`."""
    env = os.environ.get("ZS_QA_DIR")
    return Path(env) if env else shared_dir() / "data" / "qa"


def resolve_dataset(spec: str) -> tuple[str, Path]:
    """(name, path) of a benchmark short name (BENCHMARKS, or "all") or of a QA file / dataset folder path.

    Raises:
        ValueError: neither an existing path nor a known name (the message lists the names).
    """
    if spec in BENCHMARKS:
        path = qa_dir() / BENCHMARKS[spec]
        if not path.exists():
            raise ValueError(f"benchmark {spec!r}: {path} does not exist (set ZS_QA_DIR or ZS_SHARED_DIR to the folder "
                             "holding the shared QA files, or pass the file's path)")
        return spec, path
    p = Path(spec)
    if p.exists():
        name = p.stem if p.is_file() else p.name
        return name, p
    raise ValueError(f"dataset {spec!r} is neither a benchmark ({', '.join(BENCHMARKS)}, or all) nor an existing "
                     ".jsonl/.parquet file or dataset folder")


def parse_datasets(text: str | Sequence[str]) -> list[str]:
    """'nq,hotpotqa' or ['nq', 'hotpotqa'] or 'all' -> the list of dataset specs, in the given order."""
    chunks = [text] if isinstance(text, str) else list(text)
    parts = [p.strip() for chunk in chunks for p in chunk.split(",") if p.strip()]
    out: list[str] = []
    for p in parts:
        for q in (BENCHMARKS if p == "all" else [p]):
            if q not in out:
                out.append(q)
    if not out:
        raise ValueError("no datasets given (--datasets nq,triviaqa,... or all)")
    return out


def subset_positions(n: int, limit: int | None, seed: int, name: str) -> list[int]:
    """Row positions (ascending) of the subset of a dataset of n rows (see the module docstring)."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if limit is None or limit >= n:
        return list(range(n))
    order = list(range(n))
    random.Random(stable_seed(seed, "eval_subset", name)).shuffle(order)
    return sorted(order[:limit])


def select_subset(rows: Sequence[QARow], limit: int | None, seed: int, name: str) -> list[QARow]:
    """The evaluated rows of a dataset named `name` (see the module docstring)."""
    return [rows[i] for i in subset_positions(len(rows), limit, seed, name)]


def ids_digest(rows: Sequence[QARow]) -> str:
    """A short fingerprint of the row ids of a subset (recorded in config.json to compare runs)."""
    return hashlib.sha256("\n".join(r.id for r in rows).encode()).hexdigest()[:16]
