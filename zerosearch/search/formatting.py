"""How documents become the observation the agent reads.

    format_documents(docs)                     'Doc 1(Title: ...) text\\nDoc 2(Title: ...) text'
    format_observation(docs, encode, budget)   '\\n\\n<information>Doc 1(...) ...</information>\\n\\n'

The observation block must fit `rollout.max_obs_length` tokens *with* its closing tag: the original cut the
observation's tokens and could drop `</information>`, leaving the agent an unclosed block. Here the
documents are shortened instead (the longest, then the latest, texts lose tokens first; then whole
documents go from the end), and the tags are always kept. `encode` is the agent tokenizer's encode
(`str -> list[int]`), so this module stays tokenizer-agnostic; the budget is checked on the encoding of
the whole block, so BPE merges across boundaries cannot push it over.

`strip_agent_tags` removes from corpus or web text anything that would read as agent structure (the
`<think>/<search>/<information>/<answer>` tags) or as a chat control token (`<|im_end|>` and the like).
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Sequence

from zerosearch.search.types import Document

log = logging.getLogger(__name__)

OPEN_TAG, CLOSE_TAG = "<information>", "</information>"
ELLIPSIS = " ..."

Encode = Callable[[str], Sequence[int]]

_AGENT_TAG = re.compile(r"<\s*/?\s*(?:think|search|information|answer)\s*>", re.IGNORECASE)
_CONTROL_TOKEN = re.compile(r"<\|[^<>|\s]{1,64}\|>")  # <|im_end|>, <|endoftext|>, <|eot_id|>, ...
_SPACES = re.compile(r"[ \t]{2,}")
_warned: set[tuple[int, int]] = set()


def strip_agent_tags(text: str) -> str:
    """Remove agent tags and chat control tokens from text that goes inside an observation.

    >>> strip_agent_tags("a <answer>b</ answer> c<|im_end|>")
    'a b c'
    """
    if "<" not in text:
        return text
    text = _CONTROL_TOKEN.sub(" ", _AGENT_TAG.sub(" ", text))
    return _SPACES.sub(" ", text).strip()


def _doc_head(i: int, doc: Document) -> str:
    title = " ".join(strip_agent_tags(doc.title).split())
    return f"Doc {i}(Title: {title}) "


def _doc_text(doc: Document) -> str:
    return strip_agent_tags(doc.text).strip()


def format_documents(docs: Sequence[Document]) -> str:
    """`Doc i(Title: t) text` lines, numbered from 1 (Search-R1's layout), agent tags stripped."""
    return "\n".join(_doc_head(i, d) + _doc_text(d) for i, d in enumerate(docs, 1))


def wrap_observation(body: str) -> str:
    """The block appended to the agent's context: blank line, tags around the documents, blank line."""
    return f"\n\n{OPEN_TAG}{body}{CLOSE_TAG}\n\n"


def observation_token_budget(encode: Encode, max_tokens: int) -> int:
    """Tokens left for documents inside a `max_tokens` observation (negative: not even the tags fit)."""
    return max_tokens - len(encode(wrap_observation("")))


def _truncate(text: str, max_tokens: int, encode: Encode) -> str:
    """The longest prefix of `text` (cut at a word end, or inside the first word when even that is too
    long) that, with ELLIPSIS appended, encodes to at most `max_tokens` tokens; "" when nothing fits."""
    if max_tokens <= 0:
        return ""
    ends = [m.end() for m in re.finditer(r"\S+", text)]

    def fits(cut: int) -> bool:
        return len(encode(text[:cut] + ELLIPSIS)) <= max_tokens

    lo, hi = 0, len(ends)  # number of words kept: fits(ends[lo-1]) holds
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(ends[mid - 1]):
            lo = mid
        else:
            hi = mid - 1
    if lo:
        return text[:ends[lo - 1]] + ELLIPSIS
    # not one word fits: cut the first word by characters (long tokens, text without spaces)
    first_end = ends[0] if ends else 0
    lo, hi = 0, first_end
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    if lo:
        return text[:lo] + ELLIPSIS
    return ELLIPSIS.strip() if len(encode(ELLIPSIS.strip())) <= max_tokens else ""


def _allocate(text_lens: list[int], room: int) -> list[int]:
    """Water-filling: the largest cap c with sum(min(len, c)) <= room, so the longest texts are cut first;
    tokens left over go one each to the earliest texts still above the cap (the latest are cut most)."""
    lo, hi = 0, max(text_lens, default=0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(min(t, mid) for t in text_lens) <= room:
            lo = mid
        else:
            hi = mid - 1
    alloc = [min(t, lo) for t in text_lens]
    left = room - sum(alloc)
    for i, t in enumerate(text_lens):
        if left <= 0:
            break
        if t > alloc[i]:
            alloc[i] += 1
            left -= 1
    return alloc


def _minimal_block(encode: Encode, max_tokens: int) -> str:
    """The smallest valid block, with a warning (once per tokenizer size and budget) saying why."""
    full, bare = wrap_observation(""), OPEN_TAG + CLOSE_TAG
    block = full if len(encode(full)) <= max_tokens else bare
    n = len(encode(block))
    key = (max_tokens, n)
    if key not in _warned:
        _warned.add(key)
        over = f", {n - max_tokens} token(s) over budget" if n > max_tokens else ""
        log.warning("observation budget max_obs_length=%d tokens leaves no room for documents: returning "
                    "the empty block %r (%d tokens%s). Raise rollout.max_obs_length.", max_tokens, block, n, over)
    return block


def format_observation(docs: Sequence[Document], encode: Encode, max_tokens: int, *,
                       min_doc_tokens: int = 8) -> str:
    """The observation block for `docs`, at most `max_tokens` tokens of `encode`, tags always intact.

    Args:
        docs: documents, best first.
        encode: the agent tokenizer's encode (no special tokens added), `str -> list[int]`.
        max_tokens: the observation budget (`rollout.max_obs_length`).
        min_doc_tokens: a document is kept only if its text can keep this many tokens (or all of them,
            when shorter); below that, whole documents are dropped from the end.

    When the budget cannot even hold the tags with their newlines, the bare `<information></information>`
    is returned and a warning logged (it can exceed a budget smaller than the tags themselves).
    """
    block = wrap_observation(format_documents(docs))
    n = len(encode(block))
    if n <= max_tokens:
        return block
    if observation_token_budget(encode, max_tokens) <= 0:
        return _minimal_block(encode, max_tokens)

    heads = [_doc_head(i, d) for i, d in enumerate(docs, 1)]
    texts = [_doc_text(d) for d in docs]
    head_lens = [len(encode(h)) for h in heads]
    text_lens = [len(encode(t)) for t in texts]
    room_total = observation_token_budget(encode, max_tokens)
    for _ in range(64):  # each round lowers the room by the measured overflow: ends quickly
        k = len(docs)
        while k:
            room = room_total - sum(head_lens[:k]) - (k - 1)  # one token per "\n" separator
            if room >= sum(min(t, min_doc_tokens) for t in text_lens[:k]):
                break
            k -= 1
        if k == 0:
            break
        alloc = _allocate(text_lens[:k], room)
        lines = [heads[i] + (texts[i] if alloc[i] >= text_lens[i] else _truncate(texts[i], alloc[i], encode))
                 for i in range(k)]
        block = wrap_observation("\n".join(lines))
        n = len(encode(block))
        if n <= max_tokens:
            return block
        room_total -= n - max_tokens
    # not even the first document fits with min_doc_tokens of text: its title alone, else no document
    if docs:
        block = wrap_observation(heads[0].rstrip())
        if len(encode(block)) <= max_tokens:
            return block
    return wrap_observation("")
