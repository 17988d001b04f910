"""Scoring and aggregation of QA trajectories: the one path training validation and evaluation share.

    row = score_response(row_id, source, question, golds, response_text, score_fn, searches=2, turns=3)
    summary = summarize(rows)   # {cover_em, em, f1, reward, answer_rate, searches, turns, truncated, n, per_source}

`score_fn` is `zerosearch.reward.run_scorer(cfg)`, the scorer the trainer rewards with.
`zerosearch.trainer.validation` (validation during training), `zerosearch.eval.harness` (the benchmark
table) and `--rescore` (scoring a trajectories file written elsewhere) all score rows here, so a change to
scoring cannot make training and evaluation disagree.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from typing import Any, Sequence

from zerosearch.reward import ScoreFn, Scorer, extract_answer
from zerosearch.rollout.types import Trajectory

# metrics averaged per row (reward = the training score; cover_em = the paper's "EM")
METRICS = ("reward", "cover_em", "em", "f1")


@dataclass
class RowResult:
    """One scored row.

    Attributes:
        row_id, data_source, question, golden_answers: of the QA row.
        prediction: the extracted answer, None when the response has none.
        reward: the training score (reward.score, with the format reward when on).
        cover_em, em, f1: the answer metrics (0/1, 0/1, [0, 1]).
        searches: searches the trajectory issued (and got answered).
        response_text: the whole response (policy text with observations), never the prompt.
        turns: generation calls of the trajectory.
        truncated: it ended because a budget (turns, context) ran out.
        stop_reason: answer | eos | no_answer_at_final_turn | context_budget | max_turns ("" when unknown).
    """

    row_id: str
    data_source: str
    question: str
    golden_answers: tuple[str, ...]
    prediction: str | None
    reward: float
    cover_em: float
    em: float
    f1: float
    searches: int
    response_text: str
    turns: int = 0
    truncated: bool = False
    stop_reason: str = ""

    @property
    def answered(self) -> bool:
        return self.prediction is not None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["golden_answers"] = list(self.golden_answers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RowResult":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["golden_answers"] = tuple(kw["golden_answers"])
        return cls(**kw)


def score_response(row_id: str, data_source: str, question: str, golden_answers: Sequence[str], response_text: str,
                   score_fn: ScoreFn, *, searches: int = 0, turns: int = 0, truncated: bool = False,
                   stop_reason: str = "") -> RowResult:
    """Score one response with the run's score function (the same call training makes)."""
    gold = tuple(golden_answers)
    reward, m = score_fn(response_text, gold)
    answer = score_fn.answer(response_text) if isinstance(score_fn, Scorer) else extract_answer(response_text)
    return RowResult(row_id, data_source, question, gold, answer, reward, m["cover_em"],
                     m["em"], m["f1"], searches, response_text, turns, truncated, stop_reason)


def score_trajectory(t: Trajectory, score_fn: ScoreFn) -> RowResult:
    """Score one trajectory of the agent loop (see `score_response`)."""
    s = t.stats
    return score_response(t.item.row_id, t.item.data_source, t.item.question, t.item.golden_answers,
                          t.response_text, score_fn, searches=s.searches, turns=s.turns, truncated=s.truncated,
                          stop_reason=s.stop_reason)


def aggregate(rows: Sequence[RowResult]) -> dict[str, float]:
    """Means over rows: METRICS, answer_rate, searches, turns; counts: n, truncated (rows cut by a budget).
    An empty list gives zeros and n = 0."""
    n = max(len(rows), 1)
    out = {m: sum(getattr(r, m) for r in rows) / n for m in METRICS}
    out.update({"answer_rate": sum(r.answered for r in rows) / n, "searches": sum(r.searches for r in rows) / n,
                "turns": sum(r.turns for r in rows) / n, "truncated": float(sum(r.truncated for r in rows)),
                "n": float(len(rows))})
    return out


def summarize(results: Sequence[RowResult]) -> dict[str, Any]:
    """`aggregate` over every row plus `per_source: {source: aggregate of its rows}`, as plain floats."""
    by_src: dict[str, list[RowResult]] = defaultdict(list)
    for r in results:
        by_src[r.data_source].append(r)
    return {**aggregate(results), "per_source": {s: aggregate(rs) for s, rs in sorted(by_src.items())}}
