"""The methods of the paper's table: the search agent and three baselines without an agent loop.

    agent   the trained agent: think, search, read, answer (rollout.max_turns searches), prompt template
            data.prompt_template, exactly as in training and validation
    direct  answer at once, no search, no reasoning ("Direct Prompt" in the paper)
    cot     reason inside <think> first, then answer, no search ("CoT")
    rag     retrieve top-k documents for the *question* once, put them in the prompt, answer ("RAG")

All four run through the same `AgentLoop` (the baselines with `max_turns=0`: one turn that must answer; a
search there is never sent), so decoding, stop strings, budgets and scoring are those of the agent. The
retrieved documents of `rag` are formatted as the agent's observations are (`format_observation`, within
rollout.max_obs_length tokens) and come from the same search engine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

from zerosearch.config.schema import RolloutConfig, ZeroSearchConfig
from zerosearch.data.prompts import encode_chat, encode_row_prompt, normalize_question
from zerosearch.data.qa import QARow
from zerosearch.rollout.types import PromptItem
from zerosearch.search.formatting import format_observation
from zerosearch.search.types import SearchEngine, SearchRequest
from zerosearch.utils.templates import TextTemplate

METHODS = ("agent", "direct", "cot", "rag")
METHOD_TITLES = {"agent": "Agent", "direct": "Direct", "cot": "CoT", "rag": "RAG"}

_ANSWER_FORMAT = ("give the final answer inside <answer> and </answer>, with no explanation, for example "
                  "<answer> Beijing </answer>.")
BASELINE_TEMPLATES: dict[str, TextTemplate] = {
    name: TextTemplate.parse(text, f"baseline {name}", allowed=("question", "documents"), required=("question",))
    for name, text in {
        "direct": "Answer the question below directly: " + _ANSWER_FORMAT + " Question: {question}\n",
        "cot": "Answer the question below. Reason step by step inside <think> and </think> first, then "
               + _ANSWER_FORMAT + " Question: {question}\n",
        # the documents are inserted between the instruction and the question
        "rag": "Answer the question below using the documents in <information> and </information> (not all of "
               "them may be relevant). Reason inside <think> and </think> first, then " + _ANSWER_FORMAT
               + "{documents}Question: {question}\n",
    }.items()
}


def check_methods(methods: Sequence[str]) -> list[str]:
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)} (--methods)")
    return list(dict.fromkeys(methods))


def rollout_config(method: str, r: RolloutConfig) -> RolloutConfig:
    """The agent's rollout settings; the baselines get one turn that must answer (no search is sent)."""
    return r if method == "agent" else replace(r, max_turns=0)


def uses_search(method: str) -> bool:
    return method in ("agent", "rag")


def _encode_text(tokenizer: Any, text: str, chat_template: str) -> list[int]:
    """Ids of an instruction text rendered as the agent prompt is: one user turn through the chat template
    when the tokenizer has one (`data.chat_template`), else plain text (`zerosearch.data.prompts.encode_chat`)."""
    return encode_chat(tokenizer, [{"role": "user", "content": text}], chat_template)


def build_items(method: str, rows: Sequence[QARow], tokenizer: Any, cfg: ZeroSearchConfig,
                search: SearchEngine | None = None) -> list[PromptItem]:
    """The prompts of `rows` for `method`. `rag` searches here, once per row, with the question as query
    (through `search`, whose recorded documents then belong to the row).

    Raises:
        ValueError: a prompt longer than data.max_prompt_length tokens (plus rollout.max_obs_length for
            rag's documents): every row is scored, none is cut or dropped.
    """
    d = cfg.data
    limit = d.max_prompt_length
    if method == "agent":
        prompts = [encode_row_prompt(tokenizer, r, d) for r in rows]  # as training encodes it
    elif method in ("direct", "cot"):
        tmpl = BASELINE_TEMPLATES[method]
        prompts = [_encode_text(tokenizer, tmpl.render({"question": normalize_question(r.question)}), d.chat_template)
                   for r in rows]
    elif method == "rag":
        if search is None:
            raise ValueError("method rag needs a search engine (search.eval_engine)")
        limit += cfg.rollout.max_obs_length
        results = search.search([SearchRequest(query=r.question.strip(), row_id=f"{r.id}#0", question=r.question,
                                               golden_answers=tuple(r.golden_answers), data_source=r.data_source)
                                 for r in rows])
        encode = lambda s: tokenizer.encode(s, add_special_tokens=False)  # noqa: E731
        tmpl = BASELINE_TEMPLATES["rag"]
        prompts = [_encode_text(tokenizer, tmpl.render({
            "documents": format_observation(res.documents, encode, cfg.rollout.max_obs_length),
            "question": normalize_question(r.question)}), d.chat_template) for r, res in zip(rows, results)]
    else:
        check_methods([method])
        raise AssertionError(method)
    for r, p in zip(rows, prompts):
        if len(p) > limit:
            raise ValueError(f"{method} prompt of row {r.id!r} has {len(p)} tokens, over {limit} "
                             f"(data.max_prompt_length{' + rollout.max_obs_length' if method == 'rag' else ''}): "
                             "raise data.max_prompt_length (and rollout.max_total_length)")
    return [PromptItem(p, r.id, r.question, tuple(r.golden_answers), r.data_source) for r, p in zip(rows, prompts)]

