"""Search-R1's optional format reward: structure, final format and retrieval scores.

A response is *well-formed* when its tags follow the agent protocol and nothing but whitespace lies
outside them:

    <think> ... </think>  ( <search> ... </search> <information> ... </information> <think> ... </think> )*
    <answer> ... </answer>

(every search is preceded by a think, every observation is followed by one, the answer comes last; nothing
but whitespace may follow `</answer>`). This is the rule of Search-R1's `qa_em_format`, applied to the
response alone (Search-R1 locates the response by the `<|im_start|>assistant` marker, which only works
for ChatML models). Decode the response without special tokens: a trailing `<|im_end|>` is text after the
answer and makes it ill-formed.

How the scores combine (s = the answer score in [0, 1]: EM, cover EM or F1; S = structure_format_score,
F = final_format_score, R = retrieval_score, r = R when a well-formed response's `<information>` holds a
gold answer, else 0):

    no answer, well-formed       S + r
    no answer, ill-formed        0
    answer,    well-formed       max(s, S + r)
    answer,    ill-formed        max(s - S, F)

With a binary s this is Search-R1's table (1 / 1 - S / S + r / F / 0; with the defaults 1, 0.8, 0.3 or
0.2, 0.1, 0); the max() extends it to F1 without letting a partly right answer score below a wrong one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable

from zerosearch.utils.text import contains_answer

__all__ = ["FormatResult", "check_structure", "format_score", "information_blocks", "retrieval_hit"]

_TAG = re.compile(r"(</?(?:think|search|information|answer)>)")
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)

# state -> {tag: next state}. Text is allowed only inside a block (the "in_*" states).
_TRANSITIONS: dict[str, dict[str, str]] = {
    "start": {"<think>": "in_think"},
    "in_think": {"</think>": "after_think"},
    "after_think": {"<search>": "in_search", "<answer>": "in_answer"},
    "in_search": {"</search>": "after_search"},
    "after_search": {"<information>": "in_information"},
    "in_information": {"</information>": "after_information"},
    "after_information": {"<think>": "in_think"},
    "in_answer": {"</answer>": "end"},
    "end": {},
}


@dataclass(frozen=True)
class FormatResult:
    """Whether a response is well-formed, and if not, the first thing wrong with it."""

    valid: bool
    reason: str


def check_structure(response: str) -> FormatResult:
    """Check the tag structure of a response (see the module docstring for the grammar)."""
    state = "start"
    for part in _TAG.split(response):
        if not part.strip():
            continue
        if _TAG.fullmatch(part):
            nxt = _TRANSITIONS[state].get(part)
            if nxt is None:
                return FormatResult(False, f"unexpected {part} in state {state}")
            state = nxt
        elif not state.startswith("in_"):
            snippet = part.strip()[:40]
            return FormatResult(False, f"text outside a tag in state {state}: {snippet!r}")
    if state != "end":
        return FormatResult(False, f"incomplete: ended in state {state}")
    return FormatResult(True, "ok")


def information_blocks(response: str) -> list[str]:
    """The contents of every complete `<information>...</information>` block, in order."""
    return _INFORMATION.findall(response)


def retrieval_hit(response: str, golden_answers: Iterable[str]) -> bool:
    """True when some `<information>` block contains a gold answer (normalised containment, as cover EM)."""
    golds = list(golden_answers)
    return any(contains_answer(block, golds, count_empty=True) for block in information_blocks(response))


def format_score(answer_score: float, answered: bool, valid: bool, hit: bool, *,
                 structure_format_score: float = 0.2, final_format_score: float = 0.1,
                 retrieval_score: float = 0.1) -> float:
    """Combine an answer score with the format checks (the table in the module docstring).

    Args:
        answer_score: s, the answer's EM / cover EM / F1 in [0, 1] (0 when there is no answer).
        answered: whether the response has an answer at all.
        valid: whether the response is well-formed (`check_structure`).
        hit: whether a retrieved block holds a gold answer (`retrieval_hit`); counts only when valid.
    """
    bonus = structure_format_score + (retrieval_score if hit else 0.0)
    if not answered:
        return bonus if valid else 0.0
    if valid:
        return max(answer_score, bonus)
    return max(answer_score - structure_format_score, final_format_score)
