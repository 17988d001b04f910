"""Validation: greedy rollouts over *every* validation row, scored with EM, cover-EM and F1 per source.

The original sampled at temperature 1 and dropped the last incomplete batch (72 of Bamboogle's 125
questions were scored). Here batches are cut from the row list with the short tail kept, and decoding is
greedy unless rollout.val_temperature says otherwise.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from zerosearch.eval.scoring import METRICS, RowResult, score_trajectory, summarize
from zerosearch.generation.types import SamplingParams
from zerosearch.reward import ScoreFn
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.rollout.collate import trajectory_metrics
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.utils.seeding import stable_seed

__all__ = ["METRICS", "RowResult", "flatten", "run_validation", "score_trajectory", "summarize"]

# What one batch hands to `on_batch`: its trajectories and their scored rows, in the same order.
BatchCallback = Callable[[Sequence[Trajectory], Sequence[RowResult]], None]


def run_validation(loop: AgentLoop, items: Sequence[PromptItem], batch_size: int, score_fn: ScoreFn,
                   temperature: float = 0.0, noise_prob: float | None = None, step: int = 0, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None, on_batch: BatchCallback | None = None,
                   ) -> tuple[dict[str, Any], list[RowResult], dict[str, float]]:
    """Roll out every item once and score it (`zerosearch.eval.scoring`, shared with the evaluation harness).

    Args:
        on_batch: called after each batch with its trajectories and scored rows (the evaluation harness
            writes them to disk there, so a killed run loses at most one batch).

    Returns (summary as in `summarize`, per-row results, rollout statistics under env/).
    """
    params = SamplingParams(temperature=temperature,
                            seed=None if temperature <= 0 else stable_seed(seed, "validation", step))
    trajs: list[Trajectory] = []
    results: list[RowResult] = []
    for s in range(0, len(items), batch_size):
        batch = loop.run(items[s:s + batch_size], 1, params, step=step, noise_prob=noise_prob)
        scored = [score_trajectory(t, score_fn) for t in batch]
        trajs.extend(batch)
        results.extend(scored)
        if on_batch:
            on_batch(batch, scored)
        if progress:
            progress(min(s + batch_size, len(items)), len(items))
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
    out[f"{prefix}/answer_rate/all"] = summary["answer_rate"]
    for src, s in summary["per_source"].items():
        out[f"{prefix}/test_score/{src}"] = s["reward"]
        for m in METRICS[1:]:
            out[f"{prefix}/{m}/{src}"] = s[m]
    return out
