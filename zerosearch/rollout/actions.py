"""Reading the agent's actions out of generated text.

`parse_action` reads one turn (what the engine generated until a stop); `split_response` reads a whole
multi-turn response text (policy text with `<information>` blocks inserted), as found in logs and in
the real Search-R1 trajectories, into the same actions, pairing each search with its observation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

AGENT_TAG_RE = re.compile(r"</?(?:think|search|information|answer)>")
STOP_STRINGS = ("</search>", "</answer>")


@dataclass(frozen=True)
class Action:
    """One turn's action: kind is "search", "answer" or "invalid"; content is the query or answer."""

    kind: str
    content: str = ""
    reason: str = ""  # why an action is invalid (for logs)


def parse_action(turn_text: str, max_query_chars: int = 512) -> tuple[Action, int]:
    """Read the action that ends one generated turn.

    The engine stops right after `</search>` or `</answer>`, so the action is the *last* closing tag of the
    turn, paired with the last matching opening tag before it. Agent tags inside a query are removed (the
    search engine sees plain text); an empty query is invalid; a query longer than `max_query_chars`
    characters is cut there.

    Returns:
        (action, chars_cut): chars_cut > 0 when the query was shortened.
    """
    text = turn_text
    end_s, end_a = text.rfind("</search>"), text.rfind("</answer>")
    if end_s < 0 and end_a < 0:
        return Action("invalid", reason="no </search> or </answer>"), 0
    kind, end = ("search", end_s) if end_s > end_a else ("answer", end_a)
    start = text.rfind(f"<{kind}>", 0, end)
    if start < 0:
        return Action("invalid", reason=f"</{kind}> without <{kind}>"), 0
    content = text[start + len(kind) + 2:end]
    if kind == "answer":
        return Action("answer", content.strip()), 0
    query = " ".join(AGENT_TAG_RE.sub(" ", content).split())
    if not query:
        return Action("invalid", reason="empty query"), 0
    cut = max(0, len(query) - max_query_chars)
    return Action("search", query[:max_query_chars]), cut


@dataclass
class ParsedTurn:
    """A policy turn of a whole response text and the observation that followed it (if any)."""

    text: str
    action: Action
    observation: str | None = None


_INFO_OPEN, _INFO_CLOSE = "<information>", "</information>"


def split_response(response: str) -> list[ParsedTurn]:
    """Split a whole multi-turn response into policy turns and their `<information>` observations.

    An `<information>` block is an observation only where the environment could have put it: right after
    a turn that ends in `</search>` (whitespace between them). Agents also *write* the tag themselves (a
    known failure mode: the model imagines its own results); such text stays part of the policy turn, as
    it was sampled. A truncated final observation (no closing tag) still counts as that turn's.
    """
    turns: list[ParsedTurn] = []
    turn_start = scan = 0
    while True:
        open_at = response.find(_INFO_OPEN, scan)
        if open_at < 0:
            break
        policy = response[turn_start:open_at]
        if not policy.rstrip().endswith("</search>"):
            scan = open_at + len(_INFO_OPEN)  # written by the model: part of its turn
            continue
        body_at = open_at + len(_INFO_OPEN)
        close_at = response.find(_INFO_CLOSE, body_at)
        end = len(response) if close_at < 0 else close_at + len(_INFO_CLOSE)
        turns.append(ParsedTurn(policy, parse_action(policy)[0], response[body_at:close_at if close_at >= 0 else end]))
        turn_start = scan = end
    tail = response[turn_start:]
    if tail.strip() or not turns:
        turns.append(ParsedTurn(tail, parse_action(tail)[0], None))
    return turns
