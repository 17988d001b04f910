"""The agent prompt: instruction templates and rendering through a tokenizer's chat template.

The templates are text files `configs/prompts/agent_<name>.txt` with a `{question}` placeholder, read
byte for byte (`zerosearch.utils.templates.TextTemplate`):

    search_r1    the instruction of Search-R1 and ZeroSearch, exactly as their datasets and released agent
                 checkpoints have it (one line, "as your want" included, ending in "Question: {question}\n")
    zerosearch   our wording of the same protocol
    compact      the protocol in one sentence, for tiny models (the toy world)

`render_prompt` puts a prompt through the tokenizer's chat template as one user message with the
generation prompt appended (the assistant turn is opened, so the policy's first token is its own), or
leaves it as plain text for a base model without a chat template. The datasets store the plain text
(`prompt[0].content`), as the ZeroSearch / Search-R1 datasets do; `encode_chat` encodes such a stored
chat as it is (`data.use_dataset_prompt`).
"""

from __future__ import annotations

from typing import Any, Sequence

from zerosearch.utils.paths import PROMPT_DIR
from zerosearch.utils.templates import TemplateError, TextTemplate

__all__ = ["AGENT_TEMPLATE_NAMES", "CHAT_TEMPLATE_MODES", "TEMPLATES", "encode_chat", "encode_prompt", "render_chat",
           "format_prompt", "get_template", "normalize_question", "render_prompt", "uses_chat_template"]

CHAT_TEMPLATE_MODES = ("auto", "always", "never")
AGENT_TEMPLATE_NAMES = ("search_r1", "zerosearch", "compact")
_PLACEHOLDERS = ("question",)


def normalize_question(question: str) -> str:
    """Strip surrounding whitespace and end with "?" (the Search-R1 / ZeroSearch preprocessing rule, applied
    before the question goes into the prompt and into the dataset's `question` column)."""
    q = question.strip()
    if not q.endswith("?"):
        q += "?"
    return q


def _load(name: str) -> TextTemplate:
    return TextTemplate.load(PROMPT_DIR / f"agent_{name}.txt", allowed=_PLACEHOLDERS, required=_PLACEHOLDERS)


TEMPLATES: dict[str, TextTemplate] = {name: _load(name) for name in AGENT_TEMPLATE_NAMES}


def get_template(name: str) -> TextTemplate:
    """The template `name` (a name in TEMPLATES, or a path to a template file with a `{question}` slot)."""
    if name in TEMPLATES:
        return TEMPLATES[name]
    if name.endswith(".txt"):
        return TextTemplate.load(name, allowed=_PLACEHOLDERS, required=_PLACEHOLDERS)
    raise TemplateError(f"unknown prompt template {name!r} (data.prompt_template); known: {', '.join(TEMPLATES)}, "
                        "or a path to a .txt file with a {question} placeholder")


def format_prompt(question: str, template: str = "zerosearch") -> str:
    """The instruction with the question filled in (normalised by `normalize_question`), as plain text."""
    return get_template(template).render({"question": normalize_question(question)})


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


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], chat_template: str = "auto") -> str:
    """A chat as the policy sees it: through the chat template with the generation prompt appended, or, as
    plain text (no template), the first message's content (what the original's data loader did)."""
    if not messages:
        raise ValueError("a prompt needs at least one message")
    if not uses_chat_template(tokenizer, chat_template):
        return messages[0]["content"]
    return tokenizer.apply_chat_template([dict(m) for m in messages], add_generation_prompt=True, tokenize=False)


def encode_chat(tokenizer: Any, messages: Sequence[dict[str, str]], chat_template: str = "auto") -> list[int]:
    """Token ids of `render_chat(...)`.

    A chat template writes its own special tokens (BOS included where the model has one), so they are not
    added again; plain text gets the tokenizer's usual special tokens (a base Llama's BOS).
    """
    chat = uses_chat_template(tokenizer, chat_template)
    text = render_chat(tokenizer, messages, "always" if chat else "never")
    return list(tokenizer.encode(text, add_special_tokens=not chat))


def render_prompt(tokenizer: Any, question: str, template: str = "zerosearch", chat_template: str = "auto") -> str:
    """The prompt text the policy sees for `question`.

    Args:
        tokenizer: a transformers tokenizer (may be None with chat_template="never" or "auto").
        question: the raw question (stripped and given a "?" here).
        template: a name in TEMPLATES (or a template file path).
        chat_template: "auto" | "always" | "never" (see `uses_chat_template`).
    """
    return render_chat(tokenizer, [{"role": "user", "content": format_prompt(question, template)}], chat_template)


def encode_prompt(tokenizer: Any, question: str, template: str = "zerosearch", chat_template: str = "auto") -> list[int]:
    """Token ids of `render_prompt(...)` (see `encode_chat` for the special tokens)."""
    return encode_chat(tokenizer, [{"role": "user", "content": format_prompt(question, template)}], chat_template)


def encode_row_prompt(tokenizer: Any, row: Any, data: Any) -> list[int]:
    """The agent prompt ids of one QA row, as training and evaluation both see it.

    The dataset's own prompt when `data.use_dataset_prompt` is on and the row has one (a Search-R1 /
    ZeroSearch parquet's `prompt` column, used as it is), else `data.prompt_template` filled with the
    question; either way through the chat template per `data.chat_template`.

    Args:
        row: a `zerosearch.data.qa.QARow` (its `question`, `prompt` and `prompt_messages()`).
        data: the run's `DataConfig`.
    """
    if data.use_dataset_prompt and row.prompt is not None:
        return encode_chat(tokenizer, row.prompt_messages(), data.chat_template)
    return encode_prompt(tokenizer, row.question, data.prompt_template, data.chat_template)
