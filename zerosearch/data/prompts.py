"""The agent prompt: instruction templates and rendering through a tokenizer's chat template.

A template is plain text with a `{question}` slot. `render_prompt` puts it through the tokenizer's chat
template as one user message with the generation prompt appended (the assistant turn is opened, so the
policy's first token is its own), or leaves it as plain text for a base model without a chat template.
The datasets store the plain text (`prompt[0].content`), as the ZeroSearch / Search-R1 datasets do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["CHAT_TEMPLATE_MODES", "PromptTemplate", "TEMPLATES", "encode_prompt", "normalize_question",
           "render_prompt", "uses_chat_template"]

CHAT_TEMPLATE_MODES = ("auto", "always", "never")


@dataclass(frozen=True)
class PromptTemplate:
    """An instruction with a `{question}` slot."""

    name: str
    text: str

    def format(self, question: str) -> str:
        """The instruction with the question filled in (normalised by `normalize_question`)."""
        return self.text.format(question=normalize_question(question))


def normalize_question(question: str) -> str:
    """Strip surrounding whitespace and end with "?" (the Search-R1 / ZeroSearch preprocessing rule)."""
    q = question.strip()
    if not q.endswith("?"):
        q += "?"
    return q


# The ZeroSearch agent instruction (our wording of the protocol the paper describes): reason in <think>,
# search with <search>, read <information>, answer briefly in <answer>. The trailing newline matches the
# datasets, whose prompts end with the question line.
_ZEROSEARCH = (
    "Answer the question below. Reason inside <think> and </think> first, and again every time you "
    "receive new information. If you find you are missing some knowledge, call the search engine by "
    "writing <search> query </search>, and the top results will come back between <information> and "
    "</information>. You may search as many times as you need. When no further external knowledge is "
    "needed, give the final answer inside <answer> and </answer>, with no explanation, for example "
    "<answer> Beijing </answer>. Question: {question}\n"
)

# The same protocol in one sentence, for tiny models (the toy world): every prompt token is paid for in
# every SFT step, rollout and update, and a 0.5 M-parameter model gains nothing from the longer wording.
_COMPACT = (
    "Answer the question. To search, write <search> query </search>; results come back in <information> "
    "</information>. Give the final answer as <answer> answer </answer>. Question: {question}\n"
)

TEMPLATES: dict[str, PromptTemplate] = {
    "zerosearch": PromptTemplate("zerosearch", _ZEROSEARCH),
    "compact": PromptTemplate("compact", _COMPACT),
}


def get_template(name: str) -> PromptTemplate:
    """The registered template `name`; a clear error listing the known ones otherwise."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown prompt template {name!r}; known: {', '.join(TEMPLATES)}") from None


def uses_chat_template(tokenizer: Any, chat_template: str = "auto") -> bool:
    """Whether a prompt for `tokenizer` goes through its chat template under mode `chat_template`.

    auto: when the tokenizer has one; always: it must have one (an error otherwise); never: plain text.
    """
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"chat_template={chat_template!r}; expected one of {', '.join(CHAT_TEMPLATE_MODES)}")
    if chat_template == "never":
        return False
    has = bool(getattr(tokenizer, "chat_template", None)) if tokenizer is not None else False
    if chat_template == "always" and not has:
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise ValueError(
            f"chat_template='always' but the tokenizer {name!r} has no chat template; use "
            "data.chat_template=auto (plain text for such tokenizers) or never, or pick an instruct model")
    return has


def render_prompt(tokenizer: Any, question: str, template: str = "zerosearch", chat_template: str = "auto") -> str:
    """The prompt text the policy sees for `question`.

    Args:
        tokenizer: a transformers tokenizer (may be None with chat_template="never" or "auto").
        question: the raw question (stripped and given a "?" here).
        template: a name in TEMPLATES.
        chat_template: "auto" | "always" | "never" (see `uses_chat_template`).
    """
    text = get_template(template).format(question)
    if not uses_chat_template(tokenizer, chat_template):
        return text
    return tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                         tokenize=False)


def encode_prompt(tokenizer: Any, question: str, template: str = "zerosearch", chat_template: str = "auto") -> list[int]:
    """Token ids of `render_prompt(...)`.

    A chat template writes its own special tokens (BOS included where the model has one), so they are not
    added again; plain text gets the tokenizer's usual special tokens (a base Llama's BOS).
    """
    chat = uses_chat_template(tokenizer, chat_template)
    text = render_prompt(tokenizer, question, template, "always" if chat else "never")
    return list(tokenizer.encode(text, add_special_tokens=not chat))
