"""Simulator prompt families: loading (any subset of placeholders, byte-exact files, the system message),
load-time errors naming file and line, and the chat each transport sends (exact texts: tests/data/
test_prompt_templates.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zerosearch.generation.types import SamplingParams
from zerosearch.search.sim_prompts import PromptSet, SimPrompt, available_families
from zerosearch.search.sim_transports import ChatRenderer, ChatTransport, CompletionsTransport, SglangTransport
from zerosearch.utils.templates import TemplateError, TextTemplate

ARGS = dict(query="capital of France", question="What is the capital of France?",
            answers=("Paris", "City of Light"), topk=4, words=25)


def _write(folder: Path, family: str, useful: str, noisy: str, system: str | None = None) -> Path:
    (folder / f"{family}_useful.txt").write_text(useful)
    (folder / f"{family}_noisy.txt").write_text(noisy)
    if system is not None:
        (folder / f"{family}_system.txt").write_text(system)
    return folder


def test_any_subset_of_placeholders_and_byte_exact_files(tmp_path: Path) -> None:
    _write(tmp_path, "mine", "Q {query} {answers} {first_answer} {{literal}}\n\n", "{query}", system="be brief")
    ps = PromptSet.load("mine", tmp_path)
    assert ps.render(noisy=False, **ARGS) == "Q capital of France Paris; City of Light Paris {literal}\n\n"
    assert ps.render(noisy=True, **ARGS) == "capital of France"
    assert ps.system == "be brief"
    assert available_families(tmp_path) == ["mine"]


def test_zero_shot_noisy_gives_neither_question_nor_answer() -> None:
    noisy = PromptSet.load("simulate_prompt").render(noisy=True, **ARGS)
    assert "What is the capital of France?" not in noisy and "Paris" not in noisy
    assert noisy.count("Query:") == 2   # the worked example and the query


@pytest.mark.parametrize("useful, match", [
    ("{query}\n{quary}", r"mine_useful.txt:2: unknown placeholder \{quary\}"),
    ("no query here", r"mine_useful.txt: missing placeholder\(s\) \{query\}"),
    ("{query} {oops", r"mine_useful.txt:1: unbalanced"),
    ("{query}\n\n } ", r"mine_useful.txt:3: unbalanced"),
])
def test_bad_templates_fail_at_load_naming_file_and_line(tmp_path: Path, useful: str, match: str) -> None:
    _write(tmp_path, "mine", useful, "{query}")
    with pytest.raises(TemplateError, match=match):
        PromptSet.load("mine", tmp_path)


def test_a_system_file_takes_no_placeholders(tmp_path: Path) -> None:
    _write(tmp_path, "mine", "{query}", "{query}", system="hello {query}")
    with pytest.raises(TemplateError, match=r"mine_system.txt:1: unknown placeholder \{query\}"):
        PromptSet.load("mine", tmp_path)


def test_unknown_family_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"prompt family 'simulate_google'.*known: simulate_prompt, "
                                            r"simulate_prompt_all_answers, simulate_sft, simulate_sft_all_answers"):
        PromptSet.load("simulate_google")
    (tmp_path / "half_useful.txt").write_text("{query}")
    with pytest.raises(TemplateError, match="no half_useful.txt and half_noisy.txt"):
        PromptSet.load("half", tmp_path)


def test_template_render_needs_every_value() -> None:
    t = TextTemplate.parse("a {x} b {y}", "inline", allowed={"x", "y"})
    assert t.render({"x": "1", "y": "2", "z": "ignored"}) == "a 1 b 2"
    with pytest.raises(TemplateError, match=r"inline: no value for placeholder\(s\) \{y\}"):
        t.render({"x": "1"})


class _Tok:
    """A chat template that shows every message (role and content), so the test sees what is rendered."""

    chat_template = "shown"

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert not tokenize and add_generation_prompt
        return "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"


def test_the_empty_system_message_is_sent_by_every_transport() -> None:
    ps = PromptSet.load("simulate_sft")
    prompt = ps.prompt(noisy=False, **ARGS)
    assert prompt == SimPrompt(user=ps.render(noisy=False, **ARGS), system="")
    sampling = SamplingParams(temperature=0.8, max_new_tokens=600)
    body = ChatTransport("SearchSimulation_14B").payload(prompt, sampling)
    assert body["messages"] == [{"role": "system", "content": ""}, {"role": "user", "content": prompt.user}]
    assert body["model"] == "SearchSimulation_14B" and body["max_tokens"] == 600 and body["temperature"] == 0.8
    rendered = f"<system></system><user>{prompt.user}</user><assistant>"
    assert CompletionsTransport(ChatRenderer(tokenizer=_Tok())).payload(prompt, sampling)["prompt"] == rendered
    assert SglangTransport(ChatRenderer(tokenizer=_Tok())).payload(prompt, sampling)["text"] == rendered
    # a family without a system file sends the user message alone; a bare string is one user message
    alone = PromptSet.load("simulate_sft_all_answers").prompt(noisy=True, **ARGS)
    assert ChatTransport().payload(alone, sampling)["messages"] == [{"role": "user", "content": alone.user}]
    assert ChatTransport().payload("hi", sampling)["messages"] == [{"role": "user", "content": "hi"}]
