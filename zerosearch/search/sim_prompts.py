"""Prompt templates of the simulation LLM: editable text files, checked when loaded.

Two families, each with a useful and a noisy template, in `configs/prompts/` (or `simulation.prompt_dir`):

    simulate_sft_useful.txt   simulate_sft_noisy.txt       for simulators fine-tuned on this job
    simulate_prompt_useful.txt simulate_prompt_noisy.txt   zero-shot instruct models, with a one-shot example

A template is plain text with placeholders `{query}`, `{question}`, `{answers}` (all gold answers of the
issuing row), `{topk}` and `{words}`; `{{` and `}}` write literal braces. Loading fails with a message
naming the file when a placeholder is unknown, a required one is missing, or a brace is unbalanced, so a
typo surfaces at start-up rather than as a silently wrong prompt mid-run. The rendered text is sent as the
single user message of a chat (the transports render the chat template where the server does not).

A fine-tuned simulator answers best to the exact prompt it was trained on: to use one trained elsewhere,
copy its prompt into these files (only the placeholders are fixed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from zerosearch.utils.paths import PROMPT_DIR

FAMILIES = ("simulate_sft", "simulate_prompt")
PLACEHOLDERS = frozenset({"query", "question", "answers", "topk", "words"})
# What each template must contain. The noisy zero-shot prompt gives neither question nor answer (a model
# that sees the answer tends to leak it into "noisy" documents); the others condition on the row.
REQUIRED = {
    ("simulate_sft", False): frozenset({"query", "question", "answers", "topk", "words"}),
    ("simulate_sft", True): frozenset({"query", "question", "answers", "topk", "words"}),
    ("simulate_prompt", False): frozenset({"query", "question", "answers", "topk", "words"}),
    ("simulate_prompt", True): frozenset({"query", "topk", "words"}),
}
DEFAULT_PROMPT_DIR = PROMPT_DIR

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class PromptTemplateError(ValueError):
    """A prompt template file is missing or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class PromptTemplate:
    """One parsed template: literal text pieces alternating with placeholder names."""

    path: str
    pieces: tuple[str, ...]        # literal text; len(pieces) == len(names) + 1
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, path: str, required: frozenset[str] = frozenset()) -> "PromptTemplate":
        pieces, names, buf, pos = [], [], [], 0
        for m in _TOKEN.finditer(text):
            buf.append(text[pos:m.start()])
            pos = m.end()
            tok = m.group(0)
            if tok in ("{{", "}}"):
                buf.append(tok[0])
            elif m.group(1) is None:
                line = text.count("\n", 0, m.start()) + 1
                raise PromptTemplateError(
                    f"{path}:{line}: unbalanced {tok!r}; write {{{{ or }}}} for a literal brace")
            else:
                name = m.group(1).strip()
                if name not in PLACEHOLDERS:
                    line = text.count("\n", 0, m.start()) + 1
                    raise PromptTemplateError(
                        f"{path}:{line}: unknown placeholder {{{name}}}; known: "
                        + ", ".join(f"{{{p}}}" for p in sorted(PLACEHOLDERS)))
                pieces.append("".join(buf))
                buf = []
                names.append(name)
        buf.append(text[pos:])
        pieces.append("".join(buf))
        missing = required - set(names)
        if missing:
            raise PromptTemplateError(
                f"{path}: missing placeholder(s) " + ", ".join(f"{{{p}}}" for p in sorted(missing)))
        return cls(path=path, pieces=tuple(pieces), names=tuple(names))

    def render(self, values: dict[str, str]) -> str:
        out = [self.pieces[0]]
        for name, piece in zip(self.names, self.pieces[1:]):
            out.append(values[name])
            out.append(piece)
        return "".join(out)


def format_answers(answers: Sequence[str]) -> str:
    """All gold answers of a row, in one line: `Paris; City of Light` (no answer: `unknown`)."""
    clean = [" ".join(str(a).split()) for a in answers]
    clean = [a for a in clean if a]
    return "; ".join(clean) if clean else "unknown"


@dataclass(frozen=True)
class PromptSet:
    """The useful and noisy templates of one family."""

    family: str
    useful: PromptTemplate
    noisy: PromptTemplate

    @classmethod
    def load(cls, family: str, prompt_dir: str | Path | None = None) -> "PromptSet":
        """Read `<family>_useful.txt` and `<family>_noisy.txt` from `prompt_dir` (default configs/prompts)."""
        if family not in FAMILIES:
            raise PromptTemplateError(f"prompt family {family!r}: must be one of {', '.join(FAMILIES)}")
        folder = Path(prompt_dir) if prompt_dir else DEFAULT_PROMPT_DIR
        templates = {}
        for noisy in (False, True):
            path = folder / f"{family}_{'noisy' if noisy else 'useful'}.txt"
            if not path.is_file():
                raise PromptTemplateError(f"prompt template not found: {path}")
            # One trailing newline is the file's, not the prompt's (the prompt ends at "... Output:").
            text = path.read_text(encoding="utf-8").rstrip("\n")
            templates[noisy] = PromptTemplate.parse(text, str(path), REQUIRED[(family, noisy)])
        return cls(family=family, useful=templates[False], noisy=templates[True])

    def render(self, *, noisy: bool, query: str, question: str, answers: Sequence[str], topk: int,
               words: int) -> str:
        """The user message for one search."""
        values = {"query": " ".join(query.split()), "question": " ".join(question.split()),
                  "answers": format_answers(answers), "topk": str(topk), "words": str(words)}
        return (self.noisy if noisy else self.useful).render(values)
