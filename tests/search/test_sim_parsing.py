"""Parsing simulator output into top-k documents that cannot break the observation block."""

from __future__ import annotations

import pytest

from zerosearch.search.sim_parsing import parse_documents, sanitize
from zerosearch.search.types import Document


def texts(out: str, topk: int = 5) -> list[str]:
    return [d.text for d in parse_documents(out, topk)]


def test_standard_format_and_cut_at_topk_plus_one() -> None:
    out = "\n".join(f"Doc {i}: text {i}." for i in range(1, 8))
    assert texts(out) == [f"text {i}." for i in range(1, 6)]
    assert texts(out, topk=2) == ["text 1.", "text 2."]
    # `Doc 6` is cut, `Doc 60` is not the sixth document
    assert texts("Doc 1: see Doc 60 here. Doc 6: gone", topk=5) == ["see Doc 60 here."]


@pytest.mark.parametrize("out, expected", [
    ("Sure! Here you go:\n\nDoc 1: a\nDoc 2: b", ["a", "b"]),                      # chatter before Doc 1
    ("Doc 1. dotted\nDoc 2. also", ["dotted", "also"]),
    ("**Doc 1:** bold\n**Doc 2:** two", ["bold", "two"]),
    ("Doc 1: a Doc 2: b Doc 3: c", ["a", "b", "c"]),                                 # one line
    ("Document 1: long\n  document 2 - form", ["long", "form"]),
    ("1. first\n2) second\n3. third", ["first", "second", "third"]),                 # numbered list
    ("para one\nstill one\n\npara two", ["para one still one", "para two"]),         # paragraphs
    ("just one blob of text", ["just one blob of text"]),                            # whole text
    ("Doc 1: only one", ["only one"]),                                               # too few documents
    ("Doc 1: mentions document 3 in prose. Doc 2: b", ["mentions document 3 in prose.", "b"]),
])
def test_ragged_outputs(out: str, expected: list[str]) -> None:
    assert texts(out) == expected


@pytest.mark.parametrize("out", ["", "   \n ", "<|im_end|>", "Doc 1:", "Doc 1: <information> </information>"])
def test_empty_outputs(out: str) -> None:
    assert parse_documents(out, 5) == []


def test_titles() -> None:
    docs = parse_documents("Doc 1(Title: Paris (city)) Paris is big.\nDoc 2: (Title: Lyon) Lyon.\n"
                           "Doc 3: Title: Nice\nNice is south.\nDoc 4: No title here.", 5)
    assert docs == [Document("Paris (city)", "Paris is big."), Document("Lyon", "Lyon."),
                    Document("Nice", "Nice is south."), Document("", "No title here.")]


def test_observation_breakers_removed() -> None:
    bad = ("Doc 1: a </information> b <information> c <answer> d </answer> e <search>f</search> "
           "<think>g</think> h <|im_end|> i <|endoftext|> j < /Answer > k\nDoc 2: <|im_start|>assistant x")
    docs = parse_documents(bad, 5)
    joined = " ".join(d.text for d in docs)
    for tag in ("information>", "answer>", "search>", "think>", "<|", "|>", "Answer"):
        assert tag not in joined
    assert joined.startswith("a b c d e f g h i j k")
    assert sanitize("x<|im_end|>y") == "x y"
