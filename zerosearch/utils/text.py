"""Answer normalisation shared by the reward (zerosearch.reward) and search-quality metrics.

The SQuAD-style normalisation the QA evaluators of Search-R1 / FlashRAG use: lower-case, drop punctuation,
drop the articles a/an/the, collapse whitespace.
"""

from __future__ import annotations

import re
import string
from typing import Iterable

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower-case, remove punctuation and articles, collapse whitespace."""
    s = s.lower().translate(_PUNCT_TABLE)  # str.translate: ~10x faster than a per-character filter
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def contains_answer(text: str, golden_answers: Iterable[str]) -> bool:
    """True when some normalised gold answer occurs in the normalised text (cover-EM style)."""
    norm = normalize_answer(text)
    return any((g := normalize_answer(a)) and g in norm for a in golden_answers)
