"""Prompt templates of the simulation LLM: editable text files, checked when loaded.

A family is a set of files in `configs/prompts/` (or `simulation.prompt_dir`):

    <family>_useful.txt   the user message asking for useful documents
    <family>_noisy.txt    the user message asking for noisy documents
    <family>_system.txt   optional: the system message, sent as its own message (even when empty)

Shipped families:

    simulate_sft               ZeroSearch's prompt, byte for byte: what the released simulators
                               (SearchSimulation_*, Simulation_LLM_*_V2) were fine-tuned on. First gold answer
                               only, the literal "five", a trailing newline, and an explicit empty system
                               message (so a Qwen chat template does not insert its default system prompt).
    simulate_prompt            for zero-shot instruct simulators: our wording in the structure of the
                               original's prompted simulator (role, one worked example of five documents, the
                               question and answer for the useful variant only, the word rule, the query).
    simulate_sft_all_answers   our earlier wording with all gold answers; the toy simulator was fine-tuned on it.
    simulate_prompt_all_answers  the zero-shot counterpart of that wording.

Placeholders (a template may use any of them, `{query}` is required): `{query}`, `{question}` (the row's
question as the dataset has it), `{answers}` (all gold answers, `; `-joined), `{first_answer}` (the first
gold answer as a plain string, as the original sent it), `{topk}`, `{words}`. `{{` and `}}` write literal
braces. Files are read byte for byte (`zerosearch.utils.templates.TextTemplate`): a trailing newline in a
file is part of the prompt. A fine-tuned simulator answers best to the exact prompt it was trained on: to
use one trained elsewhere, put its prompt in a new family's files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zerosearch.utils.paths import PROMPT_DIR
from zerosearch.utils.templates import TemplateError, TextTemplate

PLACEHOLDERS = frozenset({"query", "question", "answers", "first_answer", "topk", "words"})
REQUIRED = frozenset({"query"})
DEFAULT_PROMPT_DIR = PROMPT_DIR

# kept for callers that catch the old name
PromptTemplateError = TemplateError


def available_families(prompt_dir: str | Path | None = None) -> list[str]:
    """Families with both a useful and a noisy file in `prompt_dir` (default configs/prompts)."""
    folder = Path(prompt_dir) if prompt_dir else DEFAULT_PROMPT_DIR
    useful = {p.name[:-len("_useful.txt")] for p in folder.glob("*_useful.txt")}
    return sorted(f for f in useful if (folder / f"{f}_noisy.txt").is_file())


def format_answers(answers: Sequence[str]) -> str:
    """All gold answers of a row, in one line: `Paris; City of Light` (no answer: `unknown`)."""
    clean = [" ".join(str(a).split()) for a in answers]
    clean = [a for a in clean if a]
    return "; ".join(clean) if clean else "unknown"


def first_answer(answers: Sequence[str]) -> str:
    """The first gold answer as a plain string (the original's `ground_truth[0]`); `unknown` when none."""
    return str(answers[0]) if len(answers) else "unknown"


@dataclass(frozen=True)
class SimPrompt:
    """One simulator request's chat: an optional system message and the user message."""

    user: str
    system: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """[{"role": "system", ...}, {"role": "user", ...}] (no system entry when `system` is None)."""
        head = [] if self.system is None else [{"role": "system", "content": self.system}]
        return head + [{"role": "user", "content": self.user}]


def chat_messages(prompt: "str | SimPrompt") -> list[dict[str, str]]:
    """The chat messages of a prompt: a SimPrompt's, or a bare string as the single user message."""
    return prompt.messages() if isinstance(prompt, SimPrompt) else [{"role": "user", "content": prompt}]


@dataclass(frozen=True)
class PromptSet:
    """The useful and noisy templates of one family, and its system message (None: not sent)."""

    family: str
    useful: TextTemplate
    noisy: TextTemplate
    system: str | None = None

    @classmethod
    def load(cls, family: str, prompt_dir: str | Path | None = None) -> "PromptSet":
        """Read `<family>_useful.txt`, `<family>_noisy.txt` and, when present, `<family>_system.txt`."""
        folder = Path(prompt_dir) if prompt_dir else DEFAULT_PROMPT_DIR
        known = available_families(folder)
        if family not in known:
            raise TemplateError(f"prompt family {family!r} (search.simulation.prompt_family): no "
                                f"{family}_useful.txt and {family}_noisy.txt in {folder}; known: {', '.join(known)}")
        templates = {noisy: TextTemplate.load(folder / f"{family}_{'noisy' if noisy else 'useful'}.txt",
                                              allowed=PLACEHOLDERS, required=REQUIRED)
                     for noisy in (False, True)}
        system_path = folder / f"{family}_system.txt"
        system = None
        if system_path.is_file():
            system = TextTemplate.load(system_path, allowed=()).render({})  # plain text, no placeholders
        return cls(family=family, useful=templates[False], noisy=templates[True], system=system)

    def uses(self, noisy: bool) -> frozenset[str]:
        """The placeholders the useful (or noisy) template uses."""
        return frozenset((self.noisy if noisy else self.useful).names)

    def render(self, *, noisy: bool, query: str, question: str, answers: Sequence[str], topk: int,
               words: int) -> str:
        """The user message for one search. Values go in as they are (the query stripped), byte for byte."""
        values = {"query": query.strip(), "question": question, "answers": format_answers(answers),
                  "first_answer": first_answer(answers), "topk": str(topk), "words": str(words)}
        return (self.noisy if noisy else self.useful).render(values)

    def prompt(self, **kwargs: Any) -> SimPrompt:
        """The whole chat of one search: the family's system message (if any) and `render(**kwargs)`."""
        return SimPrompt(user=self.render(**kwargs), system=self.system)
