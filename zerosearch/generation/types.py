"""What a generation engine takes and returns: `SamplingParams` in, one `GenerationOutput` per prompt out.

Shared by everything that samples tokens: the rollout engines (HF, vLLM) and the in-process simulation
LLM (zerosearch.search.sim_transports), which both go through zerosearch.generation.sampler. HTTP
simulator transports read the same `SamplingParams` (temperature, top_p, max_new_tokens, stop_strings).
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

    token_ids: list[int] = field(default_factory=list)
    log_probs: list[float] = field(default_factory=list)
    finish_reason: str = "length"
    stop: str | None = None


class GenerationEngine(abc.ABC):
    """Token-id prompts + sampling parameters in; sampled ids and their log-probs out."""

    # whether `rollout.async_batching=auto` takes this engine's stream (when it has one) over whole calls
    stream_by_default: bool = True

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

    def open_stream(self, params: SamplingParams) -> "GenerationStream | None":
        """A continuous-batching session with these sampling settings, or None when the engine has none
        (then callers batch whole `generate` calls)."""
        return None

    def close(self) -> None:
        """Free the engine's memory."""


class GenerationStream(abc.ABC):
    """Continuous batching: sequences join and leave the running batch between engine steps.

    `generate` serves a fixed set of sequences and returns when the longest is done; a stream returns each
    sequence as soon as it finishes and takes new ones while others are still decoding, so a caller (the
    asynchronous agent loop) can send a finished turn's search at once and feed a returned one straight back.
    Sampling is that of the `SamplingParams` the stream was opened with; with a per-sequence seed a
    sequence draws the same tokens as through `generate` with that seed.
    """

    @abc.abstractmethod
    def add(self, key: Any, prompt: Sequence[int], max_new_tokens: int, seed: int | None = None) -> None:
        """Queue a sequence under `key` (returned with its output); it joins at the next `step()`."""

    @abc.abstractmethod
    def step(self) -> list[tuple[Any, GenerationOutput]]:
        """Advance every running sequence (one decode step, or one engine step) and admit the queued
        ones; returns the (key, output) pairs that finished."""

    @property
    @abc.abstractmethod
    def active(self) -> int:
        """Sequences added and not yet returned by `step()`."""

    def close(self) -> None:
        """Drop whatever is still running (after an error in the caller)."""
