"""The reward's extraction and metrics reproduce the reference evaluator on every real trace row.

shared/data/traces/search_r1_eval_traces.jsonl: 5,375 Search-R1 trajectories scored by FlashRAG's
evaluator (pred = the answer it extracted, "" when none; em / acc / f1 = its metrics).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch.reward import compute_score
from zerosearch.reward.qa import cover_exact_match, exact_match, extract_answer, f1_score

TRACES = "traces/search_r1_eval_traces.jsonl"
N_ROWS = 5375


@pytest.fixture(scope="module")
def traces(shared_data: Path) -> list[dict]:
    with open(shared_data / TRACES, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _key(row: dict) -> str:
    return f"{row['run']}/{row['id']}"  # ids repeat across runs


def _report(name: str, bad: list[tuple], total: int) -> str:
    lines = [f"{name}: {len(bad)} of {total} rows differ; first ones (row, ours, reference):"]
    lines += [f"  {k}: {ours!r} vs {ref!r}" for k, ours, ref in bad[:5]]
    return "\n".join(lines)


def test_trace_count(traces):
    assert len(traces) == N_ROWS


def test_extraction_matches_reference(traces):
    bad = []
    for row in traces:
        pred = extract_answer(row["response"])
        if (pred if pred is not None else "") != row["pred"]:
            bad.append((_key(row), pred, row["pred"]))
    assert not bad, _report("extracted answer", bad, len(traces))


@pytest.mark.parametrize("metric,fn", [("em", exact_match), ("acc", cover_exact_match), ("f1", f1_score)])
def test_metric_matches_reference(traces, metric, fn):
    bad = []
    for row in traces:
        ours = fn(extract_answer(row["response"]), row["golden_answers"])
        ref = row["metric_score"][metric]
        if abs(ours - ref) > 1e-9:
            bad.append((_key(row), ours, ref))
    assert not bad, _report(metric, bad, len(traces))


def test_compute_score_agrees_with_reference(traces):
    """The trainer's entry point gives the same per-row metrics (a sample keeps this fast)."""
    for row in traces[::7]:
        reward, m = compute_score(row["response"], row["golden_answers"], score="f1")
        ref = row["metric_score"]
        assert reward == pytest.approx(ref["f1"], abs=1e-9)
        assert (m["em"], m["cover_em"]) == (pytest.approx(ref["em"]), pytest.approx(ref["acc"]))


def test_no_answer_rows_score_zero(traces):
    """Rows the reference found no answer in score 0 everywhere (623 of them)."""
    none_rows = [r for r in traces if extract_answer(r["response"]) is None]
    assert len(none_rows) == 623
    assert all(r["pred"] == "" and not any(r["metric_score"].values()) for r in none_rows)
