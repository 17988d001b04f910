"""Search-R1's format reward: the structure check, the retrieval check and how the scores combine."""

from __future__ import annotations

import pytest

from zerosearch.reward import compute_score, score_fn_from_config
from zerosearch.reward.format import check_structure, format_score, information_blocks, retrieval_hit

GOOD = ("<think> I need the author. </think>\n<search> author of Moby-Dick </search>\n\n"
        "<information>Doc 1(Title: Moby-Dick) Moby-Dick is an 1851 novel by Herman Melville.</information>\n\n"
        "<think> It is Melville. </think>\n<answer> Herman Melville </answer>")
NO_SEARCH = "<think> I know this. </think> <answer> Herman Melville </answer>"


@pytest.mark.parametrize("response", [GOOD, NO_SEARCH, GOOD + "\n  ", GOOD.replace("Doc 1", "Doc <1>")])
def test_well_formed(response):
    assert check_structure(response).valid, check_structure(response).reason


@pytest.mark.parametrize("response,reason", [
    ("I think. " + NO_SEARCH, "text outside a tag in state start"),
    ("<answer> Herman Melville </answer>", "unexpected <answer> in state start"),
    ("<think> a </think> <search> q </search> <answer> x </answer>", "unexpected <answer> in state after_search"),
    (GOOD.replace("<think> It is Melville. </think>\n", ""), "unexpected <answer> in state after_information"),
    ("<think> a <search> q </search> </think> <answer> x </answer>", "unexpected <search> in state in_think"),
    ("<think> a </think> <answer> x </answer> <answer> y </answer>", "unexpected <answer> in state end"),
    (NO_SEARCH + " trailing words", "text outside a tag in state end"),
    (NO_SEARCH + "<|im_end|>", "text outside a tag in state end"),
    ("<think> a </think> <search> q", "incomplete: ended in state in_search"),
    ("<think> a </think> <answer> cut", "incomplete: ended in state in_answer"),
    ("", "incomplete: ended in state start"),
])
def test_ill_formed(response, reason):
    res = check_structure(response)
    assert not res.valid and res.reason.startswith(reason), res.reason


def test_retrieval_hit():
    assert information_blocks(GOOD) == ["Doc 1(Title: Moby-Dick) Moby-Dick is an 1851 novel by Herman Melville."]
    assert retrieval_hit(GOOD, ["herman melville"])
    assert not retrieval_hit(GOOD, ["Nathaniel Hawthorne"])
    assert not retrieval_hit("<answer> Herman Melville </answer>", ["Herman Melville"])  # answers are not documents


# Search-R1's table, binary answer score, default S=0.2, F=0.1, R=0.1.
@pytest.mark.parametrize("s,answered,valid,hit,expected", [
    (1.0, True, True, False, 1.0),
    (1.0, True, True, True, 1.0),
    (1.0, True, False, False, 0.8),
    (0.0, True, True, False, 0.2),
    (0.0, True, True, True, 0.3),
    (0.0, True, False, False, 0.1),
    (0.0, False, True, True, 0.3),
    (0.0, False, True, False, 0.2),
    (0.0, False, False, False, 0.0),
    (0.5, True, True, False, 0.5),      # F1 extension: max(s, S + r)
    (0.25, True, True, True, 0.3),
    (0.5, True, False, False, 0.3),     # max(s - S, F)
    (0.25, True, False, False, 0.1),
])
def test_format_score_table(s, answered, valid, hit, expected):
    assert format_score(s, answered, valid, hit) == pytest.approx(expected)


def test_format_score_is_configurable():
    assert format_score(0.0, True, True, True, structure_format_score=0.3, retrieval_score=0.2) == pytest.approx(0.5)
    assert format_score(1.0, True, False, False, structure_format_score=0.3) == pytest.approx(0.7)
    assert format_score(0.0, True, False, False, final_format_score=0.05) == pytest.approx(0.05)


def test_compute_score_with_format_reward():
    golds = ["Herman Melville"]
    assert compute_score(GOOD, golds, score="em", format_reward=True)[0] == 1.0
    wrong = GOOD.replace("<answer> Herman Melville", "<answer> Hawthorne")
    reward, m = compute_score(wrong, golds, score="em", format_reward=True)
    assert reward == pytest.approx(0.3) and m["format_valid"] == 1.0 and m["retrieval_hit"] == 1.0
    reward, m = compute_score("Melville <answer> Hawthorne </answer>", golds, score="em", format_reward=True)
    assert reward == pytest.approx(0.1) and m["format_valid"] == 0.0 and m["retrieval_hit"] == 0.0
    assert compute_score("<think> hmm", golds, format_reward=True)[0] == 0.0


def test_compute_score_without_format_reward():
    reward, m = compute_score("<answer> Melville </answer>", ["Herman Melville"])
    assert reward == pytest.approx(2 / 3)  # F1 is the default (ZeroSearch)
    assert m == {"em": 0.0, "cover_em": 0.0, "f1": pytest.approx(2 / 3), "answered": 1.0}
    assert compute_score("<answer> Melville </answer>", "Herman Melville", score="em")[0] == 0.0
    assert compute_score("<answer> Herman Melville, writer </answer>", ["Herman Melville"], score="cover_em")[0] == 1.0
    assert compute_score("no answer", ["x"]) == (0.0, {"em": 0.0, "cover_em": 0.0, "f1": 0.0, "answered": 0.0})
    with pytest.raises(ValueError, match="known: f1, em, cover_em"):
        compute_score("<answer> x </answer>", ["x"], score="accuracy")


def test_score_fn_from_config():
    from zerosearch.config.schema import RewardConfig

    fn = score_fn_from_config(RewardConfig())
    assert fn("<answer> Melville </answer>", ["Herman Melville"])[0] == pytest.approx(2 / 3)
    fn = score_fn_from_config(RewardConfig(score="em", format_reward=True, structure_format_score=0.3))
    assert fn(GOOD.replace("Herman Melville </answer>", "Hawthorne </answer>"), ["Herman Melville"])[0] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="reward.score='bleu'"):
        score_fn_from_config(RewardConfig(score="bleu"))


def test_reward_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, zerosearch.reward, zerosearch.reward.format; "
            "print(sorted(m for m in ('torch', 'transformers', 'numpy', 'pyarrow', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
