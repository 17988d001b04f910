"""The one small interface every search engine speaks: a batch of requests in, a batch of results out.

A request carries the query *and the row that issued it* (its id, question, all gold answers, data source,
training step), so a simulator is always conditioned on the right question (the original indexed queries
by position and sent another row's question whenever some rows did not search). A result carries the
documents and what happened (engine, useful or noisy, latency, cache hit, error kind).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from zerosearch.utils.text import contains_answer


@dataclass(frozen=True)
class Document:
    """One search result document."""

    title: str
    text: str


def documents_contain_answer(documents: Iterable[Document], golden_answers: Sequence[str]) -> bool:
    """Whether some document (title or text) contains one of the gold answers (normalised containment,
    `utils.text.contains_answer`). The one definition of "this result holds the answer", used by the
    agent loop's `search_has_answer`, the engines' `search/has_answer` metrics and the simulator's
    useful/noisy checks."""
    if not golden_answers:
        return False
    return any(contains_answer(f"{d.title}\n{d.text}", golden_answers) for d in documents)


@dataclass(frozen=True)
class SearchRequest:
    """One query, tied to the row (trajectory) that issued it.

    Attributes:
        query: the text inside the agent's <search> ... </search>.
        row_id: id of the issuing trajectory; with `turn` it keys the seeded noise draw, so a resumed run
            or a reordered batch draws the same.
        question: the issuing row's question (conditions the simulator).
        golden_answers: *all* gold answers of that row.
        data_source: e.g. "nq", "hotpotqa".
        step: training step (drives the curriculum noise probability).
        turn: index of this search within the trajectory (0 for the first search).
        noise_prob: force this probability of noisy documents (validation at fixed noise); None = curriculum.
    """

    query: str
    row_id: str = ""
    question: str = ""
    golden_answers: tuple[str, ...] = ()
    data_source: str = ""
    step: int = 0
    turn: int = 0
    noise_prob: float | None = None


@dataclass
class SearchResult:
    """What one request returned.

    Attributes:
        documents: at most top-k documents, best first (a single fallback document after a failure).
        engine: the engine's name, e.g. "simulate_sft", "bm25", "google".
        noisy: for simulated search, whether the documents were asked to be noisy (per document when the
            curriculum draws per document: `noisy_docs`); None for real engines.
        latency_s: wall time of the request, retries included.
        cache_hit: served from the per-run cache.
        error: None on success, else the kind of the last failure ("timeout", "connect", "http_429",
            "http_5xx", "http_4xx", "bad_response", "empty_output", ...).
        retries: retries spent on this request.
        fallback: the documents are the configured fallback, not a real answer.
    """

    documents: list[Document]
    engine: str
    noisy: bool | None = None
    noisy_docs: list[bool] | None = None
    latency_s: float = 0.0
    cache_hit: bool = False
    error: str | None = None
    retries: int = 0
    fallback: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    def has_answer(self, golden_answers: Sequence[str]) -> bool:
        """Whether a real (non-fallback) document of this result contains a gold answer."""
        return not self.fallback and documents_contain_answer(self.documents, golden_answers)


class SearchEngine(abc.ABC):
    """A search engine: `search(requests) -> results`, one result per request, in order.

    Implementations never raise for a failed request (they return a fallback result with `error` set) and
    never block longer than their configured timeout budget. `pop_metrics()` returns and resets the
    counters since the last call (the trainer calls it once per step), with keys under `search/`.
    """

    name: str = "engine"

    @abc.abstractmethod
    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        """Answer every request; results[i] belongs to requests[i]."""

    def pop_metrics(self) -> dict[str, float]:
        """Metrics since the last call, then reset. Engines without counters return {}."""
        return {}

    def close(self) -> None:
        """Release connections, threads and models."""

    def __enter__(self) -> "SearchEngine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
