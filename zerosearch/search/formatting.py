"""How documents become the observation the agent reads.

    format_documents(docs, layout)                     the document lines of one layout
    format_observation(docs, encode, budget, layout=)  '\n\n<information>Doc 1... </information>\n\n'
    format_result(result, encode, budget, layout)      the same for a SearchResult; layout "auto" picks the
                                                       original's layout of the engine that answered

Layouts (`rollout.observation_layout`), each one line per document, joined by "\n":

    search_r1   Doc {i}(Title: {title}) {text}   Search-R1's format (for Search-R1 checkpoints; the toy)
    simulated   Doc {i}: {text}                  a simulator's documents as it wrote them (ZeroSearch passes
                                                 the simulator's text through: `Doc 1: ...` lines; a title the
                                                 simulator wrote as `(Title: t)` is kept in that form)
    google      Doc {i}: {title}{snippet}        ZeroSearch's SerpApi format (title and snippet run together)
    wiki        Doc {i}: {text}                  ZeroSearch's wiki retriever format; a document with a title
                                                 is written as its corpus `contents` (title line, then text)
    auto        simulated for simulate_* engines, google for google, wiki for any other (retrieval)

The simulated layout is byte-identical to the original's pass-through
(`text.replace('\n\n', '\n')` cut before `Doc {topk+1}`, stripped) for a simulator that writes
`Doc i: ...` lines, as the released simulators do; chatter before `Doc 1`, agent tags and runs of
whitespace inside a document are removed by the parser (`sim_parsing`), where the original kept them.

The observation block must fit `rollout.max_obs_length` tokens *with* its closing tag: the original cut the
observation's tokens and could drop `</information>`, leaving the agent an unclosed block. Here the
documents are shortened instead (the longest, then the latest, texts lose tokens first; then whole
documents go from the end), and the tags are always kept, in every layout (a line's `Doc i...` head is
never cut, its text is). `encode` is the agent tokenizer's encode (`str -> list[int]`), so this module
stays tokenizer-agnostic; the budget is checked on the encoding of the whole block, so BPE merges across
boundaries cannot push it over.

`strip_agent_tags` removes from corpus or web text anything that would read as agent structure (the
`<think>/<search>/<information>/<answer>` tags) or as a chat control token (`<|im_end|>` and the like).
"""

from __future__ import annotations

import logging
import re
from typing import Callable, Sequence

from zerosearch.search.types import Document, SearchResult

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


LAYOUTS = ("search_r1", "simulated", "google", "wiki")
LAYOUT_CHOICES = LAYOUTS + ("auto",)


def _title(doc: Document) -> str:
    return " ".join(strip_agent_tags(doc.title).split())


def _doc_parts(i: int, doc: Document, layout: str) -> tuple[str, str]:
    """(head, text) of document i's line: the head is never shortened, the text may be."""
    title, text = _title(doc), strip_agent_tags(doc.text).strip()
    if layout == "search_r1":
        return f"Doc {i}(Title: {title}) ", text
    if layout == "simulated":
        return (f"Doc {i}(Title: {title}) " if title else f"Doc {i}: "), text
    if layout == "google":
        return f"Doc {i}: ", title + text
    if layout == "wiki":
        return f"Doc {i}: ", (f"{title}\n{text}" if title else text)
    raise ValueError(f"observation layout {layout!r} (rollout.observation_layout): must be one of "
                     f"{', '.join(LAYOUT_CHOICES)}")


def engine_layout(engine: str) -> str:
    """The original's layout for results of engine `engine` (a SearchResult.engine name)."""
    if engine.startswith("simulate"):
        return "simulated"
    if engine == "google":
        return "google"
    return "wiki"


def format_documents(docs: Sequence[Document], layout: str = "search_r1") -> str:
    """One line per document in `layout` (see the module doc), numbered from 1, agent tags stripped."""
    return "\n".join("".join(_doc_parts(i, d, layout)) for i, d in enumerate(docs, 1))


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


def format_result(result: SearchResult, encode: Encode, max_tokens: int, layout: str = "search_r1") -> str:
    """`format_observation` of a result's documents; layout "auto" takes the answering engine's own."""
    if layout == "auto":
        layout = engine_layout(result.engine)
    return format_observation(result.documents, encode, max_tokens, layout=layout)


def format_observation(docs: Sequence[Document], encode: Encode, max_tokens: int, *,
                       min_doc_tokens: int = 8, layout: str = "search_r1") -> str:
    """The observation block for `docs`, at most `max_tokens` tokens of `encode`, tags always intact.

    Args:
        docs: documents, best first.
        encode: the agent tokenizer's encode (no special tokens added), `str -> list[int]`.
        max_tokens: the observation budget (`rollout.max_obs_length`).
        min_doc_tokens: a document is kept only if its text can keep this many tokens (or all of them,
            when shorter); below that, whole documents are dropped from the end.
        layout: search_r1 | simulated | google | wiki (see the module doc).

    When the budget cannot even hold the tags with their newlines, the bare `<information></information>`
    is returned and a warning logged (it can exceed a budget smaller than the tags themselves).
    """
    parts = [_doc_parts(i, d, layout) for i, d in enumerate(docs, 1)]
    block = wrap_observation("\n".join(h + t for h, t in parts))
    n = len(encode(block))
    if n <= max_tokens:
        return block
    if observation_token_budget(encode, max_tokens) <= 0:
        return _minimal_block(encode, max_tokens)

    heads = [h for h, _ in parts]
    texts = [t for _, t in parts]
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
