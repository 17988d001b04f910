"""Build a ZeroSearch_dataset folder (train.parquet, test.parquet, test_<source>.parquet) from QA files.

    python scripts/prepare_data.py --train nq_open_dev hotpotqa_dev \
        --test nq_test_sub1000_flashrag bamboogle_test --out data/zerosearch_dataset

Inputs are names of files under the shared QA folder (../shared/data/qa beside the repository, or
$ZS_SHARED_DIR/data/qa, or --qa-dir) or paths to .jsonl / .parquet files. The data source of each row is
the one its file name names (nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique, bamboogle), else
the row's own. This is the offline replacement for downloading sunhaonlp/ZeroSearch_dataset.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Callable, Optional, Sequence

from zerosearch.data.prompts import TEMPLATES, normalize_question
from zerosearch.data.qa import DataError, QARow, load_qa, source_from_filename, write_parquet
from zerosearch.utils.paths import shared_dir

def default_qa_dir() -> Path:
    """$ZS_SHARED_DIR/data/qa when set, else ../shared/data/qa beside the repository."""
    return shared_dir() / "data" / "qa"


def resolve_input(name: str, qa_dir: Path) -> Path:
    """A path as given when it exists, else `qa_dir/name` (with .jsonl added when it has no suffix)."""
    p = Path(name)
    if p.exists():
        return p
    for cand in (qa_dir / name, qa_dir / f"{name}.jsonl"):
        if cand.is_file():
            return cand
    known = sorted(f.stem for f in qa_dir.glob("*.jsonl")) if qa_dir.is_dir() else []
    raise FileNotFoundError(f"no QA file {name!r}: not a path, and not in {qa_dir}"
                            + (f" (there: {', '.join(known)})" if known else " (folder missing or empty)"))


def _read_inputs(names: Sequence[str], qa_dir: Path, max_rows: Optional[int], seed: int,
                 skip_invalid: bool) -> list[QARow]:
    rows: list[QARow] = []
    seen: dict[str, str] = {}
    for name in names:
        path = resolve_input(name, qa_dir)
        part = load_qa(path, data_source=source_from_filename(path), skip_invalid=skip_invalid)
        if max_rows is not None and len(part) > max_rows:
            keep = sorted(random.Random(f"{seed}:{path.name}").sample(range(len(part)), max_rows))
            part = [part[i] for i in keep]
        for r in part:
            if r.id in seen:
                raise DataError(path, f"duplicate id {r.id!r}, also in {seen[r.id]}", field_name="id")
            seen[r.id] = str(path)
        rows.extend(part)
    return rows


def prepare_dataset(out: os.PathLike | str, train: Sequence[str] = (), test: Sequence[str] = (), *,
                    qa_dir: Optional[os.PathLike | str] = None, max_rows: Optional[int] = None, seed: int = 0,
                    force: bool = False, template: str = "search_r1", skip_invalid: bool = False,
                    echo: Callable[[str], None] = print) -> dict[str, Counter]:
    """Write train.parquet / test.parquet / test_<source>.parquet into `out`; returns counts per split.

    Args:
        out: the dataset folder.
        train, test: input names or paths (either may be empty, not both).
        qa_dir: where names are looked up (default `default_qa_dir()`).
        max_rows: keep at most this many rows of each input file (a seeded sample, order kept).
        seed: the sampling seed.
        force: overwrite existing files (stale per-source test files are removed too).
        template: the prompt template stored in `prompt`.
        skip_invalid: skip malformed input rows (reported) instead of stopping.
    """
    if not train and not test:
        raise ValueError("nothing to do: give --train and/or --test inputs")
    if template not in TEMPLATES:
        raise ValueError(f"unknown prompt template {template!r}; known: {', '.join(TEMPLATES)}")
    if max_rows is not None and max_rows <= 0:
        raise ValueError(f"max_rows must be positive, got {max_rows}")
    qa = Path(qa_dir) if qa_dir is not None else default_qa_dir()
    out_dir = Path(out)
    splits = {name: _read_inputs(names, qa, max_rows, seed, skip_invalid)
              for name, names in (("train", train), ("test", test)) if names}

    files: dict[str, list[QARow]] = dict(splits)
    for r in splits.get("test", []):
        files.setdefault(f"test_{r.data_source}", []).append(r)
    existing = sorted(out_dir.glob("*.parquet")) if out_dir.is_dir() else []
    if existing and not force:
        raise FileExistsError(f"{out_dir} already holds {', '.join(p.name for p in existing)}; "
                              "pass --force to overwrite")
    for p in existing:  # with force: nothing stale may stay beside the new files
        p.unlink()

    counts: dict[str, Counter] = {}
    for name, rows in files.items():
        write_parquet(rows, out_dir / f"{name}.parquet", split=name.split("_")[0], template=template)
        counts[name] = Counter(r.data_source for r in rows)
    for name in splits:
        c = counts[name]
        echo(f"{name}: {sum(c.values())} rows -> {out_dir / (name + '.parquet')}")
        for source, n in sorted(c.items()):
            echo(f"  {source:16s} {n}")
    if "train" in splits and "test" in splits:
        train_q = {normalize_question(r.question).lower() for r in splits["train"]}
        overlap = Counter(r.data_source for r in splits["test"]
                          if normalize_question(r.question).lower() in train_q)
        if overlap:
            per = ", ".join(f"{s}: {n}" for s, n in sorted(overlap.items()))
            echo(f"warning: {sum(overlap.values())} test questions also appear in train ({per})")
    return counts


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", nargs="*", default=[], help="training inputs: names under --qa-dir or paths")
    ap.add_argument("--test", nargs="*", default=[], help="test inputs: names under --qa-dir or paths")
    ap.add_argument("--out", required=True, help="output folder (e.g. data/zerosearch_dataset)")
    ap.add_argument("--qa-dir", default=None, help=f"where names are looked up (default: {default_qa_dir()})")
    ap.add_argument("--max-rows", type=int, default=None, help="at most this many rows per input file (seeded sample)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed for --max-rows")
    ap.add_argument("--template", default="search_r1", help=f"prompt template (default search_r1, the original datasets' instruction; {', '.join(TEMPLATES)})")
    ap.add_argument("--skip-invalid", action="store_true", help="skip malformed rows (counted) instead of stopping")
    ap.add_argument("--force", action="store_true", help="overwrite existing parquet files in --out")
    args = ap.parse_args(argv)
    try:
        prepare_dataset(args.out, args.train, args.test, qa_dir=args.qa_dir, max_rows=args.max_rows,
                        seed=args.seed, force=args.force, template=args.template, skip_invalid=args.skip_invalid)
    except (DataError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
