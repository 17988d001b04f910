"""Types of the rollout: a prompt item and the trajectory built from it (the generation engine's types are
in zerosearch.generation.types).

A trajectory is token ids from start to end: the policy's sampled ids are kept exactly as sampled and the
environment's observations are appended as ids with loss mask 0, so what is trained is what was sampled
(the original re-tokenized decoded text and trained on ids the model never produced).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class PromptItem:
    """One prompt of a rollout batch and the QA row it came from.

    Attributes:
        prompt_ids: the rendered, tokenized prompt.
        row_id: unique id of the QA row across data sources; also the group id of its samples.
        question, golden_answers, data_source: of the row (the simulator is conditioned on them).
    """

    prompt_ids: list[int]
    row_id: str
    question: str = ""
    golden_answers: tuple[str, ...] = ()
    data_source: str = ""


@dataclass
class TrajectoryStats:
    """What happened in one trajectory."""

    turns: int = 0  # generation calls
    searches: int = 0  # searches issued (and answered)
    invalid_actions: int = 0  # turns that neither searched nor answered
    answered: bool = False  # ended with <answer>...</answer>
    truncated: bool = False  # ended because a budget (turn, context) ran out
    stop_reason: str = ""  # answer | eos | no_answer_at_final_turn | context_budget | max_turns
    query_chars_cut: int = 0  # queries shortened to the maximum query length


@dataclass
class Trajectory:
    """One multi-turn rollout as ids.

    Attributes:
        prompt_ids: (P,) the prompt.
        response_ids: (R,) policy and observation tokens interleaved, exactly as sampled / inserted.
        response_mask: (R,) 1 on policy tokens, 0 on inserted observation tokens.
        rollout_log_probs: (R,) the engine's log-probs on policy tokens, 0.0 on observation tokens.
        item: the prompt item (row id = group id, question, answers, source).
        sample_index: which of the n samples of its prompt this is.
        response_text: decoded response (for the reward and for logs).
        stats: counts and the stop reason.
        search_has_answer: per search, whether its documents contained a gold answer (retrieval score).
    """

    prompt_ids: list[int]
    item: PromptItem
    sample_index: int = 0
    response_ids: list[int] = field(default_factory=list)
    response_mask: list[int] = field(default_factory=list)
    rollout_log_probs: list[float] = field(default_factory=list)
    response_text: str = ""
    stats: TrajectoryStats = field(default_factory=TrajectoryStats)
    search_has_answer: list[bool] = field(default_factory=list)

    @property
    def uid(self) -> str:
        return f"{self.item.row_id}#{self.sample_index}"

    def extend(self, ids: Sequence[int], mask_value: int, log_probs: Sequence[float] | None = None) -> None:
        self.response_ids.extend(ids)
        self.response_mask.extend([mask_value] * len(ids))
        self.rollout_log_probs.extend(log_probs if log_probs is not None else [0.0] * len(ids))

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)
