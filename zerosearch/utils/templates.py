"""Text templates with named placeholders: the one template class of the agent and simulator prompts.

A template is plain text with `{name}` placeholders; `{{` and `}}` write literal braces. Rendering is
byte-exact: the text between placeholders is emitted as it is (no whitespace handling, no trailing-newline
rule), because prompts such as ZeroSearch's are interface data a fine-tuned model was trained on.

Parsing checks the text against the placeholders its user allows and requires, and fails with a
`TemplateError` naming the source (a file path or a template name) and the line: an unknown placeholder,
a required one missing, or an unbalanced brace surface when the template is loaded, not as a wrong prompt
mid-run. A template may use any subset of the allowed placeholders (ZeroSearch's own simulator prompt,
for instance, writes the document count as the literal word "five").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["TemplateError", "TextTemplate"]

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


class TemplateError(ValueError):
    """A template is missing or malformed; the message names its source (file or name) and the line."""


@dataclass(frozen=True)
class TextTemplate:
    """A parsed template: literal pieces alternating with placeholder names.

    Attributes:
        source: where the text came from (a file path or a name), for error messages.
        pieces: literal text; `len(pieces) == len(names) + 1`.
        names: the placeholders in order of appearance (a name may repeat).
    """

    source: str
    pieces: tuple[str, ...]
    names: tuple[str, ...]

    @classmethod
    def parse(cls, text: str, source: str, *, allowed: Iterable[str],
              required: Iterable[str] = ()) -> "TextTemplate":
        """Parse `text`; `allowed` are the placeholders it may use, `required` those it must use."""
        allowed, required = frozenset(allowed), frozenset(required)
        pieces: list[str] = []
        names: list[str] = []
        buf: list[str] = []
        pos = 0
        for m in _TOKEN.finditer(text):
            buf.append(text[pos:m.start()])
            pos = m.end()
            tok = m.group(0)
            line = text.count("\n", 0, m.start()) + 1
            if tok in ("{{", "}}"):
                buf.append(tok[0])
            elif m.group(1) is None:
                raise TemplateError(f"{source}:{line}: unbalanced {tok!r}; write {{{{ or }}}} for a literal brace")
            else:
                name = m.group(1).strip()
                if name not in allowed:
                    raise TemplateError(
                        f"{source}:{line}: unknown placeholder {{{name}}}; known: "
                        + ", ".join(f"{{{p}}}" for p in sorted(allowed)))
                pieces.append("".join(buf))
                buf = []
                names.append(name)
        buf.append(text[pos:])
        pieces.append("".join(buf))
        missing = required - set(names)
        if missing:
            raise TemplateError(f"{source}: missing placeholder(s) " + ", ".join(f"{{{p}}}" for p in sorted(missing)))
        return cls(source=source, pieces=tuple(pieces), names=tuple(names))

    @classmethod
    def load(cls, path: str | Path, *, allowed: Iterable[str], required: Iterable[str] = ()) -> "TextTemplate":
        """Parse a UTF-8 file, byte for byte (a trailing newline in the file is part of the template)."""
        p = Path(path)
        if not p.is_file():
            raise TemplateError(f"template file not found: {p}")
        try:
            text = p.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise TemplateError(f"{p}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
        return cls.parse(text, str(p), allowed=allowed, required=required)

    def render(self, values: Mapping[str, str]) -> str:
        """The text with every placeholder replaced by `values[name]` (extra values are ignored)."""
        missing = [n for n in dict.fromkeys(self.names) if n not in values]
        if missing:
            raise TemplateError(f"{self.source}: no value for placeholder(s) "
                                + ", ".join(f"{{{n}}}" for n in missing))
        out = [self.pieces[0]]
        for name, piece in zip(self.names, self.pieces[1:]):
            out.append(values[name])
            out.append(piece)
        return "".join(out)
