"""The agent prompt: template text, rendering through (or without) a chat template, token ids."""

from __future__ import annotations

import pytest

from zerosearch.data import TEMPLATES, encode_prompt, format_prompt, normalize_question, render_prompt

QUESTION = "  who wrote moby dick "


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The tiny Qwen2 tokenizer (ChatML template, agent tags as added tokens), loaded back from disk.

    Only the tokenizer half of make_tiny_model: prompts need no weights, and this avoids importing torch.
    """
    from transformers import AutoTokenizer

    from zerosearch.testing.tiny_models import build_tokenizer

    out = tmp_path_factory.mktemp("tiny")
    build_tokenizer(out)
    return AutoTokenizer.from_pretrained(out)


@pytest.fixture
def base_tokenizer(tokenizer):
    """The same tokenizer as a base model would ship it: no chat template."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def test_template_text():
    text = format_prompt(QUESTION, "zerosearch")
    for piece in ("<think>", "</think>", "<search> query </search>", "<information>", "</information>",
                  "<answer>", "</answer>", "<answer> Beijing </answer>"):
        assert piece in text
    assert text.endswith("Question: who wrote moby dick?\n")
    assert text.index("<answer> Beijing </answer>") < text.index("Question:")


@pytest.mark.parametrize("q,expected", [("who?", "who?"), (" who ", "who?"), ("Is it?  ", "Is it?")])
def test_normalize_question(q, expected):
    assert normalize_question(q) == expected


def test_render_with_chat_template(tokenizer):
    plain = format_prompt(QUESTION, "zerosearch")
    for mode in ("auto", "always"):
        text = render_prompt(tokenizer, QUESTION, chat_template=mode)
        assert text == f"<|im_start|>user\n{plain}<|im_end|>\n<|im_start|>assistant\n"


def test_render_without_chat_template(tokenizer, base_tokenizer):
    plain = format_prompt(QUESTION, "zerosearch")
    assert render_prompt(tokenizer, QUESTION, chat_template="never") == plain
    assert render_prompt(base_tokenizer, QUESTION) == plain  # auto: plain text for a base tokenizer
    assert render_prompt(None, QUESTION) == plain


def test_always_needs_a_chat_template(base_tokenizer):
    with pytest.raises(ValueError, match="chat_template='always' but the tokenizer .* has no chat template"):
        render_prompt(base_tokenizer, QUESTION, chat_template="always")


def test_bad_arguments(tokenizer):
    with pytest.raises(ValueError, match="expected one of auto, always, never"):
        render_prompt(tokenizer, QUESTION, chat_template="yes")
    with pytest.raises(ValueError, match=r"unknown prompt template 'r1' \(data.prompt_template\); known: search_r1, zerosearch, compact"):
        render_prompt(tokenizer, QUESTION, template="r1")


def test_encode_prompt(tokenizer, base_tokenizer):
    ids = encode_prompt(tokenizer, QUESTION)
    assert isinstance(ids, list) and all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids) == render_prompt(tokenizer, QUESTION)
    for tag in ("<think>", "<search>", "<answer>", "<|im_start|>"):  # one id each, not re-split
        assert tokenizer.convert_tokens_to_ids(tag) in ids
    base_ids = encode_prompt(base_tokenizer, QUESTION)
    assert base_tokenizer.decode(base_ids) == format_prompt(QUESTION, "zerosearch")
    assert encode_prompt(tokenizer, QUESTION, chat_template="never") == base_ids
