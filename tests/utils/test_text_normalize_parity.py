"""normalize_answer uses str.translate for speed; it must equal the SQuAD-style per-character reference."""

from __future__ import annotations

import random
import re
import string

from zerosearch.utils.text import contains_answer, normalize_answer

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _reference(s: str) -> str:
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", s).split())


def test_matches_reference_on_random_text() -> None:
    rng = random.Random(0)
    alphabet = string.printable + "ÄéßİΣ\u00a0\u2019\u2013"
    for _ in range(5000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert normalize_answer(s) == _reference(s)
    assert normalize_answer("The  Eiffel-Tower, Paris!") == "eiffeltower paris"
    assert contains_answer("It is in Paris, France.", ["paris"]) and not contains_answer("Lyon", ["Paris", ""])
