"""Rule-based reward for QA search trajectories (pure Python: no torch, no transformers).

    score, metrics = compute_score(response_text, golden_answers, score="f1")

ZeroSearch trains with F1 of the extracted answer and no format reward; Search-R1 trained with EM and
optionally its format reward (`zerosearch.reward.format`). The metric dict is the same for every score
choice, so validation can log em / cover_em / f1 whatever the training reward is.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Sequence

from zerosearch.reward.format import check_structure, format_score, retrieval_hit
from zerosearch.reward.qa import (
    GoldenAnswers,
    cover_exact_match,
    exact_match,
    extract_answer,
    f1_score,
    normalize_answer,
)

if TYPE_CHECKING:  # the config package is light, but the reward does not need it at run time
    from zerosearch.config.schema import RewardConfig

__all__ = [
    "SCORES", "ScoreFn", "Scorer", "compute_score", "run_scorer", "cover_exact_match", "exact_match", "extract_answer", "f1_score",
    "normalize_answer", "score_fn_from_config",
]

# name -> metric(prediction, golden_answers) -> float; the names `reward.score` accepts.
SCORES: dict[str, Callable[[str | None, GoldenAnswers], float]] = {
    "f1": f1_score,
    "em": exact_match,
    "cover_em": cover_exact_match,
}

ScoreFn = Callable[[str, GoldenAnswers], "tuple[float, dict[str, float]]"]  # a Scorer, or any such function


def compute_score(response: str, golden_answers: GoldenAnswers, *, score: str = "f1",
                  format_reward: bool = False, structure_format_score: float = 0.2,
                  final_format_score: float = 0.1, retrieval_score: float = 0.1,
                  environment_texts: Sequence[str] = ()) -> tuple[float, dict[str, float]]:
    """Score one trajectory.

    Args:
        response: the response text only (policy tokens and inserted observations, decoded without special
            tokens), never the prompt: the prompt's example answer must not be scored.
        golden_answers: one gold answer or a list of them.
        score: the answer score used as reward: "f1" (ZeroSearch) | "em" | "cover_em" (Search-R1's EM).
        format_reward: add Search-R1's format reward (see zerosearch.reward.format for the formula).
        structure_format_score, final_format_score, retrieval_score: its three scores.
        environment_texts: texts the environment inserts into responses (the invalid-action notice): an
            answer pair inside or across them is not the policy's answer (`extract_answer`).

    Returns:
        (reward, metrics) with metrics em, cover_em, f1, answered (0/1), plus format_valid and retrieval_hit
        (0/1) when format_reward is on. All values are floats.
    """
    if score not in SCORES:
        raise ValueError(f"unknown score {score!r}; known: {', '.join(SCORES)}")
    golds = [golden_answers] if isinstance(golden_answers, str) else list(golden_answers)
    answer = extract_answer(response, environment_texts)
    metrics = {
        "em": exact_match(answer, golds),
        "cover_em": cover_exact_match(answer, golds),
        "f1": f1_score(answer, golds),
        "answered": float(answer is not None),
    }
    reward = metrics[score]
    if format_reward:
        valid = check_structure(response).valid
        hit = valid and retrieval_hit(response, golds)
        reward = format_score(reward, answer is not None, valid, hit,
                              structure_format_score=structure_format_score,
                              final_format_score=final_format_score, retrieval_score=retrieval_score)
        metrics["format_valid"] = float(valid)
        metrics["retrieval_hit"] = float(hit)
    return float(reward), metrics


class Scorer:
    """The run's score function: `scorer(response, golden_answers) -> (reward, metrics)` is `compute_score` with
    the settings of a `RewardConfig` and the environment's inserted texts (e.g. `rollout.invalid_action_text`)
    bound, and `scorer.answer(response)` is the prediction that score read. Training, validation, evaluation
    and inference all build theirs with `run_scorer(cfg)`: one scoring path."""

    def __init__(self, cfg: "RewardConfig", environment_texts: Sequence[str] = ()):
        if cfg.score not in SCORES:
            raise ValueError(f"reward.score={cfg.score!r} is not known; known: {', '.join(SCORES)}")
        self.environment_texts = tuple(t for t in environment_texts if t)
        self._fn = partial(compute_score, score=cfg.score, format_reward=cfg.format_reward,
                           structure_format_score=cfg.structure_format_score,
                           final_format_score=cfg.final_format_score, retrieval_score=cfg.retrieval_score,
                           environment_texts=self.environment_texts)

    def __call__(self, response: str, golden_answers: GoldenAnswers) -> tuple[float, dict[str, float]]:
        return self._fn(response, golden_answers)

    def answer(self, response: str) -> str | None:
        """The extracted answer, read as the score reads it (environment text never holds the answer)."""
        return extract_answer(response, self.environment_texts)


def score_fn_from_config(cfg: "RewardConfig", environment_texts: Sequence[str] = ()) -> Scorer:
    """The `Scorer` of a `RewardConfig` and the environment's inserted texts."""
    return Scorer(cfg, environment_texts)


def run_scorer(cfg: Any) -> Scorer:
    """The scorer of a whole run config (`ZeroSearchConfig`): its reward section, and the invalid-action text
    its agent loop inserts (so a trajectory ending right after that notice is never scored as answering)."""
    return Scorer(cfg.reward, (cfg.rollout.invalid_action_text,))
