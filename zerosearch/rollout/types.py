"""Types of the rollout: what a generation engine takes and returns, and what a trajectory is.

A trajectory is token ids from start to end: the policy's sampled ids are kept exactly as sampled and the
environment's observations are appended as ids with loss mask 0, so what is trained is what was sampled
(the original re-tokenized decoded text and trained on ids the model never produced).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one turn.

    Attributes:
        temperature: 0 = greedy. Log-probs are reported for softmax(logits / temperature) (temperature 1
            when greedy), the distribution the trainer recomputes.
        top_p, top_k: nucleus / top-k filtering (1.0 / -1 = off).
        max_new_tokens: cap for every sequence of the call (a per-sequence cap can be passed to generate).
        stop_token_ids: ids that end a sequence (kept in the output), e.g. eos and `<|im_end|>`.
        stop_strings: strings that end a sequence once the decoded output ends with them (kept), e.g.
            "</search>", "</answer>".
        seed: seeds the sampling of this call when no per-sequence seeds are given; None = the engine's
            running generator.
    """

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 256
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class GenerationOutput:
    """One generated continuation.

    Attributes:
        token_ids: the sampled ids, including a matched stop token or the tokens of a stop string.
        log_probs: the engine's log-probability of each sampled id (same length as token_ids).
        finish_reason: "stop" (stop id or string), "length" (hit max_new_tokens).
        stop: the matched stop string, or the decoded stop token, or None.
    """

    token_ids: list[int]
    log_probs: list[float]
    finish_reason: str
    stop: str | None = None


class GenerationEngine(abc.ABC):
    """Token-id prompts + sampling parameters in; sampled ids and their log-probs out."""

    @abc.abstractmethod
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        """Continue every prompt. `max_new_tokens[i]`, when given, caps sequence i below params'.

        `seeds[i]`, when given, seeds sequence i's sampling on its own, so its sample does not depend on the
        other sequences of the call (how a batch is split over workers, or rebuilt after a resume).
        Without seeds, `params.seed` seeds the call (None: the engine's running generator)."""

    @abc.abstractmethod
    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load new policy weights (a full, unsharded state dict keyed like the HF model)."""

    def close(self) -> None:
        """Free the engine's memory."""


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
        answer: the final answer text, None when the trajectory did not answer.
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
    answer: str | None = None
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
