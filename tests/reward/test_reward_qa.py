"""Answer extraction edge cases and the three metrics."""

from __future__ import annotations

import pytest

from zerosearch.reward.qa import cover_exact_match, exact_match, extract_answer, f1_score, normalize_answer
from zerosearch.utils import text as text_utils

PROMPT = ("... give the final answer inside <answer> and </answer>, for example <answer> Beijing </answer>. "
          "Question: who wrote Moby-Dick?\n")


@pytest.mark.parametrize("response,expected", [
    ("<think> no idea </think>", None),                                   # no answer at all
    ("", None),
    ("<answer> Paris </answer>", "Paris"),
    ("<answer>Paris</answer>", "Paris"),
    ("<answer>\n  Herman Melville \t\n</answer>", "Herman Melville"),    # surrounding whitespace
    ("<answer> first </answer> more <answer> second </answer>", "second"),  # the last one counts
    ("put the answer between <answer> and </answer>.\n<answer> 1812 </answer>", "1812"),
    ("<answer> 1812 </answer> then <answer> cut off by the length lim", "1812"),  # unclosed last: earlier one
    ("<think> x </think> <answer> cut off by the length lim", None),      # unclosed only: none
    ("</answer> stray close", None),
    ("<answer> two\nlines </answer>", "two\nlines"),                      # content may span lines
    ("<answer> </answer>", ""),                                           # empty, but an answer
    ("<answer> restarted <answer> Melville </answer>", "Melville"),       # innermost open tag
    ("<answer> Ελλάδα </answer>", "Ελλάδα"),
])
def test_extract_answer(response, expected):
    assert extract_answer(response) == expected


def test_answer_only_in_prompt_is_no_answer():
    """The prompt's example answer must never be scored: extraction sees the response only."""
    response = "<think> I do not know. </think>"
    assert extract_answer(response) is None
    assert extract_answer(PROMPT + response) == "Beijing"  # what the original's prompt+response read did


def test_normalize_answer_is_the_shared_one():
    assert normalize_answer is text_utils.normalize_answer
    assert normalize_answer("  The  Eiffel-Tower!\u00a0") == "eiffeltower"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("Chandigarh — Chandigarh") == "chandigarh — chandigarh"  # ASCII punctuation only
    assert normalize_answer("Ynys Môn") == "ynys môn"                                 # accents kept


@pytest.mark.parametrize("pred,golds,em,cem,f1", [
    ("Paris", ["Paris"], 1.0, 1.0, 1.0),
    ("the Paris.", "paris", 1.0, 1.0, 1.0),                      # a str gold, normalised
    ("Paris, France", ["Paris"], 0.0, 1.0, 2 * 0.5 * 1 / 1.5),
    ("Lyon", ["Paris", "Marseille"], 0.0, 0.0, 0.0),
    ("Marseille", ("Paris", "Marseille"), 1.0, 1.0, 1.0),        # any gold; a tuple works
    ("new york new york", ["new york"], 0.0, 1.0, 2 * 0.5 * 1 / 1.5),  # multiset: 2 shared of 4
    ("york", ["new york city"], 0.0, 0.0, 2 * 1 * (1 / 3) / (1 + 1 / 3)),
    ("yes it is", ["yes"], 0.0, 1.0, 0.0),                       # yes/no: no partial F1
    ("no", ["no"], 1.0, 1.0, 1.0),
    ("Paris", ["*"], 0.0, 1.0, 0.0),                             # gold normalising to "": contained
    ("", ["Paris"], 0.0, 0.0, 0.0),                              # an empty answer is still an answer
])
def test_metrics(pred, golds, em, cem, f1):
    assert exact_match(pred, golds) == em
    assert cover_exact_match(pred, golds) == cem
    assert f1_score(pred, golds) == pytest.approx(f1, abs=1e-12)


@pytest.mark.parametrize("fn", [exact_match, cover_exact_match, f1_score])
def test_missing_answer_scores_zero(fn):
    assert fn(None, ["Paris"]) == 0.0
    assert fn(None, ["*"]) == 0.0  # even against a gold that matches everything


@pytest.mark.parametrize("fn", [exact_match, cover_exact_match, f1_score])
def test_non_string_gold_is_an_error(fn):
    with pytest.raises(TypeError, match=r"golden_answers\[1\]"):
        fn("x", ["a", 3])


def test_contains_answer_empty_gold_policy():
    assert not text_utils.contains_answer("anything", ["---"])
    assert text_utils.contains_answer("anything", ["---"], count_empty=True)
    assert text_utils.contains_answer("The capital is Paris.", ["paris"])


ZEROSEARCH_NOTICE = ("\nMy previous action is invalid. If I want to search, I should put the query between <search> and "
                     "</search>. If I want to give the final answer, I should put the answer between <answer> and "
                     "</answer>. Let me try again.\n")


def test_environment_text_is_never_the_answer():
    """ZeroSearch's invalid-action notice holds "<answer> and </answer>": a trajectory that ends right after
    it (the turn budget ran out) must score as unanswered, not as answering "and"."""
    from zerosearch.reward import compute_score, extract_answer

    ended = "<think> hmm </think> I am not sure." + ZEROSEARCH_NOTICE + "<think> still unsure"
    assert extract_answer(ended) == "and"  # the text alone cannot tell: the notice's pair is the last one
    assert extract_answer(ended, [ZEROSEARCH_NOTICE]) is None
    reward, metrics = compute_score(ended, ["and"], environment_texts=[ZEROSEARCH_NOTICE])
    assert reward == 0.0 and metrics["answered"] == 0.0
    # a real answer after the notice still counts; no pair spans the notice or an <information> block
    assert extract_answer(ended + " <answer> Paris </answer>", [ZEROSEARCH_NOTICE]) == "Paris"
    assert extract_answer("<answer> Par" + ZEROSEARCH_NOTICE + "is </answer>", [ZEROSEARCH_NOTICE]) is None
    info = "<search> q </search>\n\n<information>Doc 1: <answer> x </answer></information>\n\n"
    assert extract_answer(info) is None and extract_answer("<answer> y " + info + "</answer>") is None


def test_the_trainer_score_function_knows_the_notice():
    from zerosearch.config.schema import RewardConfig
    from zerosearch.reward import score_fn_from_config

    fn = score_fn_from_config(RewardConfig(score="f1"), environment_texts=(ZEROSEARCH_NOTICE,))
    assert fn("no answer" + ZEROSEARCH_NOTICE, ["and"])[0] == 0.0
    assert fn("<answer> the and </answer>" + ZEROSEARCH_NOTICE, ["and"])[0] == 1.0
