"""Answer extraction and the QA metrics: exact match, cover exact match, token F1.

These reproduce the reference evaluator (FlashRAG's, as Search-R1 and ZeroSearch report with) on every
row of shared/data/traces/search_r1_eval_traces.jsonl; tests/reward/test_reward_traces.py holds them to it.

Rules, and why (row counts are out of the 5,375 trace rows):
- The answer is read from the *response only*. The agent prompt itself contains `<answer> Beijing
  </answer>` (and `<answer> and </answer>`); reading prompt + response scores that example whenever the
  model never answers (623 rows have no answer in the response).
- The *last* complete `<answer>...</answer>` counts (79 rows hold two; in all of them the first is the
  environment's "put the answer between <answer> and </answer>" notice). Content may span lines.
- Only the policy's text is read: a pair inside text the environment inserted (an `<information>` block,
  or a given environment text such as the invalid-action notice, which ZeroSearch words "...put the answer
  between <answer> and </answer>...") is never an answer, and no pair spans such text. Without this a
  trajectory ending right after the notice would be scored as answering "and". The trainer passes
  `rollout.invalid_action_text` (`environment_texts`); the trace rows are unaffected (their notice is
  followed by a real answer in every row that holds one).
- An unclosed `<answer>` (a response cut at the length limit) is no answer (1 row).
- The content is stripped of surrounding whitespace (4,624 rows have some).
- A missing answer (None) scores 0 on every metric. An empty answer `<answer></answer>` is the string "".
- Gold answers that normalise to "" are contained in every prediction (cover EM), as the reference counts
  them (6 rows); they never count for F1 (no tokens).
- F1 counts repeated tokens (multiset overlap, not sets: 2 rows differ), max over gold answers; a
  yes/no/noanswer prediction or gold scores F1 only on an exact match (the HotpotQA / FlashRAG convention;
  no trace row exercises it).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable, Union

from zerosearch.utils.text import contains_answer, normalize_answer

__all__ = [
    "GoldenAnswers", "cover_exact_match", "exact_match", "extract_answer", "f1_score", "normalize_answer",
    "policy_segments",
]

GoldenAnswers = Union[str, Iterable[str]]

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_INFORMATION = re.compile(r"<information>.*?</information>", re.DOTALL)
_ANSWER_OPEN = "<answer>"
# Answers that F1 does not give partial credit: "yes it is" is not half right against "no".
_SPECIAL_F1 = frozenset(("yes", "no", "noanswer"))


def policy_segments(response: str, environment_texts: Iterable[str] = ()) -> list[str]:
    """The response cut at the text the environment inserted: `<information>...</information>` blocks and
    every occurrence of each of `environment_texts` (empty ones ignored). What is left is policy text."""
    parts = _INFORMATION.split(response)
    for env in environment_texts:
        if env:
            parts = [q for p in parts for q in p.split(env)]
    return parts


def _last_answer(text: str) -> str | None:
    matches = _ANSWER.findall(text)
    if not matches:
        return None
    return matches[-1].rsplit(_ANSWER_OPEN, 1)[-1].strip()


def extract_answer(response: str, environment_texts: Iterable[str] = ()) -> str | None:
    """The last `<answer>...</answer>` the policy wrote in a response, stripped; None when it has none.

    Pass the response only (what the policy generated plus inserted observations), never the prompt.
    Each `<answer>` pairs with the first `</answer>` after it; when an answer's text itself holds another
    `<answer>` (a restarted answer), the text after the innermost one is taken. Pairs inside (or across)
    environment text (`policy_segments`) do not count.
    """
    for segment in reversed(policy_segments(response, environment_texts)):
        answer = _last_answer(segment)
        if answer is not None:
            return answer
    return None


def _golden_list(golden_answers: GoldenAnswers) -> list[str]:
    """Gold answers as a list of str: one str, or any iterable of str (list, tuple, numpy array)."""
    if isinstance(golden_answers, str):
        return [golden_answers]
    golds = list(golden_answers)
    for i, g in enumerate(golds):
        if not isinstance(g, str):
            raise TypeError(f"golden_answers[{i}] must be a str, got {type(g).__name__}: {g!r}")
    return golds


def exact_match(prediction: str | None, golden_answers: GoldenAnswers) -> float:
    """1.0 when the normalised prediction equals some normalised gold answer; 0.0 otherwise or for None."""
    golds = _golden_list(golden_answers)
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) == pred for g in golds))


def cover_exact_match(prediction: str | None, golden_answers: GoldenAnswers) -> float:
    """1.0 when some normalised gold answer is contained in the normalised prediction ("EM" in ZeroSearch).

    Called `acc` by FlashRAG and cover EM / sub-EM elsewhere. A gold answer that normalises to "" counts
    as contained, exactly as the reference evaluator has it (see the module docstring).
    """
    golds = _golden_list(golden_answers)
    if prediction is None:
        return 0.0
    return float(contains_answer(prediction, golds, count_empty=True))


def _token_f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = Counter(pred_tokens) & Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def f1_score(prediction: str | None, golden_answers: GoldenAnswers) -> float:
    """Token F1 between the normalised prediction and each gold answer, the best of them; 0.0 for None.

    precision = |P ∩ G| / |P|, recall = |P ∩ G| / |G| over token multisets P, G (whitespace tokens after
    normalisation); F1 = 2 p r / (p + r), 0 when nothing is shared.
    """
    golds = _golden_list(golden_answers)
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    pred_tokens = pred.split()
    best = 0.0
    for g in golds:
        gold = normalize_answer(g)
        if (pred in _SPECIAL_F1 or gold in _SPECIAL_F1) and pred != gold:
            continue
        best = max(best, _token_f1(pred_tokens, gold.split()))
    return best
