"""trajectories.jsonl: one JSON object a line per evaluated row, appended batch by batch and fsynced.

A row (the layout `--rescore` also reads):

    {"method": "agent", "dataset": "nq", "id": "nq/test_17", "data_source": "nq",
     "question": "...", "golden_answers": ["..."], "prompt": "<rendered prompt>",
     "response": "<the whole trajectory after the prompt: policy text with <information> blocks>",
     "prediction": "..." | null, "scores": {"reward", "cover_em", "em", "f1"},
     "searches": 2, "turns": 3, "truncated": false, "stop_reason": "answer",
     "documents": [{"query": "...", "documents": [{"title", "text"}, ...], "error": null}, ...]}

A row is identified by (method, dataset, id). Resuming reads the file, drops a torn last line (a run
killed while writing), and skips the rows present, so no row is written twice.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from zerosearch.eval.scoring import RowResult

TRAJECTORIES = "trajectories.jsonl"
Key = tuple[str, str, str]  # (method, dataset, row id)


def row_to_json(method: str, dataset: str, r: RowResult, prompt: str = "",
                documents: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"method": method, "dataset": dataset, "id": r.row_id, "data_source": r.data_source,
            "question": r.question, "golden_answers": list(r.golden_answers), "prompt": prompt,
            "response": r.response_text, "prediction": r.prediction,
            "scores": {"reward": r.reward, "cover_em": r.cover_em, "em": r.em, "f1": r.f1},
            "searches": r.searches, "turns": r.turns, "truncated": r.truncated, "stop_reason": r.stop_reason,
            "documents": documents or []}


def row_from_json(d: dict[str, Any]) -> tuple[str, str, RowResult]:
    """(method, dataset, RowResult) of a row written by `row_to_json`."""
    s = d["scores"]
    r = RowResult(d["id"], d.get("data_source", d["dataset"]), d["question"], tuple(d["golden_answers"]),
                  d["prediction"], s["reward"], s["cover_em"], s["em"], s["f1"], d["searches"], d["response"],
                  d.get("turns", 0), d.get("truncated", False), d.get("stop_reason", ""))
    return d["method"], d["dataset"], r


def read_rows(path: Path, repair: bool = False) -> list[dict[str, Any]]:
    """Every row of a trajectories file. A last line that is not complete JSON (a run killed mid-write) is
    dropped, and with `repair` cut from the file; a bad line before the last is an error naming it."""
    if not path.exists():
        return []
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")  # tail: bytes after the last newline (empty unless a write was cut)
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as e:
            raise ValueError(f"{path}: line {n} is not valid JSON ({e}); the file is damaged before its end") from None
    if repair and tail:
        with open(path, "r+b") as f:
            f.truncate(len(data) - len(tail))
            f.flush()
            os.fsync(f.fileno())
    return rows


def append_rows(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Append rows (one line each) and fsync, so a row on disk is a row done. Returns how many."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    if not text:
        return 0
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return text.count("\n")


def row_key(d: dict[str, Any]) -> Key:
    return d["method"], d["dataset"], d["id"]
