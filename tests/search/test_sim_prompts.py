"""Simulator prompt templates: the shipped files, rendering per family and noise, and load-time errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerosearch.search.sim_prompts import DEFAULT_PROMPT_DIR, PromptSet, PromptTemplate, PromptTemplateError

ARGS = dict(query="capital of  France", question="What is the capital of France?",
            answers=("Paris", "City of Light"), topk=4, words=25)


@pytest.mark.parametrize("family", ["simulate_sft", "simulate_prompt"])
def test_useful_prompt_conditions_on_question_and_all_answers(family: str) -> None:
    text = PromptSet.load(family).render(noisy=False, **ARGS)
    assert "Query: capital of France" in text                  # whitespace collapsed
    assert "What is the capital of France?" in text
    assert "Paris; City of Light" in text                       # every gold answer, not only the first
    assert " 4 " in text and "25 words" in text
    assert text.rstrip().endswith("Useful Output:")
    assert "{" not in text and "}" not in text


def test_noisy_prompts() -> None:
    sft = PromptSet.load("simulate_sft").render(noisy=True, **ARGS)
    assert sft.rstrip().endswith("Noisy Output:")
    assert "What is the capital of France?" in sft and "Paris" in sft
    zero_shot = PromptSet.load("simulate_prompt").render(noisy=True, **ARGS)
    assert zero_shot.rstrip().endswith("Noisy Output:")
    assert "Query: capital of France" in zero_shot
    # the zero-shot noisy variant gives neither question nor answer
    assert "What is the capital of France?" not in zero_shot and "Paris" not in zero_shot
    # the zero-shot family carries a one-shot example; the SFT one does not
    assert zero_shot.count("Query:") == 2 and sft.count("Query:") == 1


def test_shipped_files_exist() -> None:
    names = sorted(p.name for p in DEFAULT_PROMPT_DIR.glob("*.txt"))
    assert names == ["simulate_prompt_noisy.txt", "simulate_prompt_useful.txt", "simulate_sft_noisy.txt",
                     "simulate_sft_useful.txt"]


def _write(folder: Path, family: str, useful: str, noisy: str) -> Path:
    (folder / f"{family}_useful.txt").write_text(useful)
    (folder / f"{family}_noisy.txt").write_text(noisy)
    return folder


FULL = "Q {query} {question} {answers} {topk} {words}\nUseful Output:\n"


def test_custom_dir_and_escaped_braces(tmp_path: Path) -> None:
    _write(tmp_path, "simulate_prompt", FULL + "{{literal}}", "{query} {topk} {words} Noisy Output:")
    ps = PromptSet.load("simulate_prompt", tmp_path)
    out = ps.render(noisy=False, **ARGS)
    assert out.endswith("Useful Output:\n{literal}")
    assert ps.render(noisy=True, **ARGS) == "capital of France 4 25 Noisy Output:"


@pytest.mark.parametrize("useful, match", [
    (FULL + "{quary}", r"unknown placeholder \{quary\}"),
    ("{query} {question} {topk} {words}", r"missing placeholder\(s\) \{answers\}"),
    (FULL + " {oops", "unbalanced"),
    (FULL + " } ", "unbalanced"),
])
def test_bad_templates_fail_at_load(tmp_path: Path, useful: str, match: str) -> None:
    _write(tmp_path, "simulate_sft", useful, FULL)
    with pytest.raises(PromptTemplateError, match=match) as e:
        PromptSet.load("simulate_sft", tmp_path)
    assert "simulate_sft_useful.txt" in str(e.value)           # the message names the file


def test_missing_file_and_unknown_family(tmp_path: Path) -> None:
    with pytest.raises(PromptTemplateError, match="not found"):
        PromptSet.load("simulate_sft", tmp_path)
    with pytest.raises(PromptTemplateError, match="family"):
        PromptSet.load("simulate_google")


def test_no_answers_and_parse_roundtrip() -> None:
    t = PromptTemplate.parse("a {query} b {answers}", "x")
    assert t.render({"query": "q", "answers": "A"}) == "a q b A"
    text = PromptSet.load("simulate_sft").render(noisy=False, **{**ARGS, "answers": ()})
    assert "unknown" in text
