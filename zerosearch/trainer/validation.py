"""Validation: greedy rollouts over *every* validation row, scored with EM, cover-EM and F1 per source.

The original sampled at temperature 1 and dropped the last incomplete batch (72 of Bamboogle's 125
questions were scored). Here batches are cut from the row list with the short tail kept, and decoding is
greedy unless rollout.val_temperature says otherwise.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from zerosearch.generation.types import SamplingParams
from zerosearch.reward import ScoreFn, extract_answer
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.rollout.collate import trajectory_metrics
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.utils.seeding import stable_seed

METRICS = ("reward", "cover_em", "em", "f1")


@dataclass
class RowResult:
    """One validation row's outcome (kept for logs and for the examples printed)."""

    row_id: str
    data_source: str
    question: str
    golden_answers: tuple[str, ...]
    prediction: str | None
    reward: float  # the training score (reward.score, with the format reward when on)
    cover_em: float
    em: float
    f1: float
    searches: int
    response_text: str


def score_trajectory(t: Trajectory, score_fn: ScoreFn) -> RowResult:
    """Score one trajectory with the run's score function (`reward.score_fn_from_config`): the same call
    training makes, so validation and training cannot disagree on what a response is worth."""
    gold = tuple(t.item.golden_answers)
    reward, m = score_fn(t.response_text, gold)
    return RowResult(t.item.row_id, t.item.data_source, t.item.question, gold, extract_answer(t.response_text),
                     reward, m["cover_em"], m["em"], m["f1"], t.stats.searches, t.response_text)


def summarize(results: Sequence[RowResult]) -> dict[str, Any]:
    """{cover_em, em, f1, n, per_source: {source: {cover_em, em, f1, n}}} as plain floats."""
    by_src: dict[str, list[RowResult]] = defaultdict(list)
    for r in results:
        by_src[r.data_source].append(r)

    def agg(rs: Sequence[RowResult]) -> dict[str, float]:
        n = max(len(rs), 1)
        return {**{m: sum(getattr(r, m) for r in rs) / n for m in METRICS}, "n": float(len(rs)),
                "searches": sum(r.searches for r in rs) / n}

    return {**agg(results), "per_source": {s: agg(rs) for s, rs in sorted(by_src.items())}}


def run_validation(loop: AgentLoop, items: Sequence[PromptItem], batch_size: int, score_fn: ScoreFn,
                   temperature: float = 0.0, noise_prob: float | None = None, step: int = 0, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> tuple[dict[str, Any], list[RowResult], dict[str, float]]:
    """Roll out every item once and score it.

    Returns (summary as in `summarize`, per-row results, rollout statistics under env/).
    """
    params = SamplingParams(temperature=temperature,
                            seed=None if temperature <= 0 else stable_seed(seed, "validation", step))
    trajs: list[Trajectory] = []
    for s in range(0, len(items), batch_size):
        trajs.extend(loop.run(items[s:s + batch_size], 1, params, step=step, noise_prob=noise_prob))
        if progress:
            progress(min(s + batch_size, len(items)), len(items))
    results = [score_trajectory(t, score_fn) for t in trajs]
    if len(results) != len(items):  # a dropped row is a bug, not a statistic
        raise RuntimeError(f"validation scored {len(results)} of {len(items)} rows")
    return summarize(results), results, trajectory_metrics(trajs)


def flatten(summary: dict[str, Any], prefix: str = "val") -> dict[str, float]:
    """Metric names for trackers: val/test_score/<source> (the training score, verl's name) and
    val/<metric>/<source> for cover_em, em, f1, plus /all over every row."""
    out = {f"{prefix}/test_score/all": summary["reward"]}
    for m in METRICS[1:]:
        out[f"{prefix}/{m}/all"] = summary[m]
    out[f"{prefix}/searches/all"] = summary["searches"]
    for src, s in summary["per_source"].items():
        out[f"{prefix}/test_score/{src}"] = s["reward"]
        for m in METRICS[1:]:
            out[f"{prefix}/{m}/{src}"] = s[m]
    return out
