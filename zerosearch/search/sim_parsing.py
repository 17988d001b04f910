"""Turning a simulator's free text into at most top-k documents that are safe to put in an observation.

Simulators do not always follow the `Doc i: ...` format: they add chatter before the first document,
write `Doc 1(Title: X) ...`, `Doc 1.`, `**Doc 1:**`, a numbered list, plain paragraphs, too few documents,
or nothing at all. `parse_documents` accepts all of these:

1. remove anything that would break the agent's observation block: the agent tags (`<information>`,
   `</answer>`, `<search>`, `<think>`, ...) and chat special tokens (`<|im_end|>`, `<|endoftext|>`, ...);
2. cut at `Doc {topk+1}`, as the original did;
3. split on `Doc i` markers (text before the first is chatter and dropped); without markers, on a numbered
   list (`1.` / `1)` at line starts); without either, on blank-line paragraphs, or take the whole text as
   one document;
4. take a leading `(Title: X)` or `Title: X` line as the title (else the title is empty), collapse
   whitespace, drop empty documents, keep the first top-k.

An empty result is reported as `empty_output` by the engine, which then returns the fallback document.
"""

from __future__ import annotations

import re

from zerosearch.search.types import Document

# Agent tags and chat special tokens; tags are matched loosely (case, inner spaces) since a model that
# writes `< /answer>` can still confuse a lenient parser downstream.
_AGENT_TAG = re.compile(r"<\s*/?\s*(?:information|answer|search|think|tool_call|tool_response)\s*>", re.I)
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>")
# A document marker is `Doc 3` / `Document 3` (any case) at a line start, after optional markdown, or
# inline `Doc 3:` / `Doc 3(Title: ...)` written exactly so (prose like "see document 3" is not a marker).
# Candidates come from one case-insensitive scan; `_marker` decides which are markers (faster than one
# regex with look-behinds and alternatives, which the regex engine must try at every position).
_CANDIDATE = re.compile(r"[Dd][Oo][Cc](?:[Uu][Mm][Ee][Nn][Tt])?[ \t]*(\d{1,3})(?!\d)")
_AFTER_LINE_START = re.compile(r"[ \t]*(?:[:.\-\u2013\u2014]|\*\*:?)?")
_AFTER_INLINE = re.compile(r"[ \t]*(?:[:\-\u2013\u2014]|\*\*:?|(?=\())")
_MARKUP = frozenset(" \t*#>-")
_LIST_ITEM = re.compile(r"(?m)^[ \t]*(?:\*\*)?(\d{1,3})[.)](?:\*\*)?[ \t]+")
_TITLE_PAREN = re.compile(r"^\(\s*Title\s*:\s*((?:[^()]|\([^()]*\))*?)\s*\)\s*[:.\-]?\s*", re.I)
_TITLE_LINE = re.compile(r"^\**\s*Title\s*:\s*([^\n]*?)\s*\**\s*\n\s*", re.I)
_MAX_TITLE_CHARS = 200


def sanitize(text: str) -> str:
    """Remove agent tags and chat special tokens (they would close or open blocks in the observation)."""
    text = _SPECIAL_TOKEN.sub(" ", text)
    return _AGENT_TAG.sub(" ", text)


def _marker(text: str, m: re.Match) -> tuple[int, int, int] | None:
    """(start, end, number) when candidate `m` is a document marker, else None."""
    start = m.start()
    line_start = text.rfind("\n", 0, start) + 1
    if all(ch in _MARKUP for ch in text[line_start:start]):
        after = _AFTER_LINE_START.match(text, m.end())
        return line_start, after.end() if after else m.end(), int(m.group(1))
    if text.startswith("Doc", start) and text[start + 3:start + 4] in " \t0123456789" and \
            not (start and (text[start - 1].isalnum() or text[start - 1] == "_")):
        after = _AFTER_INLINE.match(text, m.end())
        if after:
            return start, after.end(), int(m.group(1))
    return None


def _split(text: str, topk: int) -> list[str]:
    """Chunks of the documents before document topk+1 (its marker, or the bare `Doc {topk+1}` the original
    cut at: `Doc 6` for top-5, not `Doc 60`). One scan for the markers serves both the cut and the split."""
    cut = len(text)
    markers: list[tuple[int, int, int]] = []
    for m in _CANDIDATE.finditer(text):
        if int(m.group(1)) == topk + 1 and text.startswith("Doc", m.start()) and not (
                m.start() and text[m.start() - 1].isalnum()):
            cut = m.start()  # the original's cut, marker or not
            break
        mk = _marker(text, m)
        if mk is not None:
            if mk[2] == topk + 1:
                cut = mk[0]
                break
            markers.append(mk)
    text = text[:cut]
    if markers:
        return [text[m[1]:(markers[i + 1][0] if i + 1 < len(markers) else len(text))]
                for i, m in enumerate(markers)]
    items = list(_LIST_ITEM.finditer(text))
    if len(items) >= 2:
        return [text[m.end():(items[i + 1].start() if i + 1 < len(items) else len(text))]
                for i, m in enumerate(items)]
    paragraphs = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return paragraphs if len(paragraphs) > 1 else [text]


def _to_document(chunk: str) -> Document | None:
    chunk = chunk.strip().strip("*").strip()
    title = ""
    m = _TITLE_PAREN.match(chunk) or _TITLE_LINE.match(chunk)
    if m and len(m.group(1)) <= _MAX_TITLE_CHARS:
        title, chunk = m.group(1), chunk[m.end():]
    title = " ".join(title.strip("*\"' ").split())
    body = " ".join(chunk.split())
    if not body:
        return None
    return Document(title=title, text=body)


def parse_documents(text: str, topk: int) -> list[Document]:
    """At most `topk` documents from a simulator's output (empty list when nothing usable remains)."""
    if not text or not text.strip():
        return []
    docs = []
    for chunk in _split(sanitize(text), topk):
        doc = _to_document(chunk)
        if doc is not None:
            docs.append(doc)
            if len(docs) == topk:
                break
    return docs
