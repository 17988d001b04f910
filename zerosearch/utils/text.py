"""Answer normalisation shared by the reward (zerosearch.reward) and search-quality metrics.

The SQuAD-style normalisation the QA evaluators of Search-R1 / FlashRAG use, in this order: lower-case
(`str.lower`), drop ASCII punctuation (`string.punctuation` only: "—", "’", "ʻ" stay), drop the articles
a/an/the as whole words, collapse whitespace (`str.split`, so Unicode spaces such as NBSP count). No
accent folding or Unicode normalisation. Each of these details changes the reference metrics on at least
one row of shared/data/traces (see docs/ARCHITECTURE.md, Data and reward), so keep them as they are.
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


def contains_answer(text: str, golden_answers: Iterable[str], *, count_empty: bool = False) -> bool:
    """True when some normalised gold answer occurs in the normalised text (cover-EM style).

    A gold answer that normalises to nothing ("*", "---", ")") is skipped by default: it says nothing about
    the text. The reference evaluators (FlashRAG's `acc`, Search-R1's cover-EM and retrieval check) test
    `"" in text`, which is always true, so such an answer matches *every* text; `count_empty=True`
    reproduces that (the reward's `cover_exact_match` does, to reproduce reported numbers).
    """
    norm = normalize_answer(text)
    for a in golden_answers:
        g = normalize_answer(a)
        if (g or count_empty) and g in norm:
            return True
    return False
