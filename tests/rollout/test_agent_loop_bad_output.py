"""What the agent loop does with bad model output. The output is the input under test here, so a replay
engine writes it (a real GenerationEngine that returns scripted text, honouring caps and stops the way the
real engines do); search is the real BM25 engine and the tokenizer the real tiny one."""

from __future__ import annotations

import json
from typing import Sequence

import pytest

from zerosearch.testing.tiny_models import build_tokenizer
from zerosearch.reward import extract_answer
from zerosearch.config.schema import RolloutConfig
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.generation.types import GenerationEngine, GenerationOutput, SamplingParams
from zerosearch.rollout.types import PromptItem
from zerosearch.search.retrieval import RetrievalEngine

CORPUS = [{"id": "0", "contents": '"Alvora"\nThe capital of Alvora is Bemtis.'},
          {"id": "1", "contents": '"Corrun"\nThe capital of Corrun is Dalvek.'}]


class ReplayEngine(GenerationEngine):
    """Answers each call with the next scripted turn of every sequence, cut at the cap and right after the
    first stop string, as vLLM and the HF engine do. Records the caps it was given."""

    def __init__(self, tokenizer, turns: list[str]):
        self.tok, self.turns, self.calls = tokenizer, list(turns), []

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        text = self.turns.pop(0) if self.turns else "still thinking"
        ends = [text.find(s) + len(s) for s in params.stop_strings if s in text]
        stop = None
        if ends:
            text, stop = text[:min(ends)], next(s for s in params.stop_strings if text.find(s) + len(s) == min(ends))
        ids = self.tok.encode(text, add_special_tokens=False)
        outs = []
        for k in range(len(prompts)):
            cap = max_new_tokens[k] if max_new_tokens is not None else params.max_new_tokens
            self.calls.append(cap)
            cut = ids[:cap]
            reason = "stop" if stop and len(cut) == len(ids) else "length"
            outs.append(GenerationOutput(cut, [-1.0] * len(cut), reason, stop if reason == "stop" else None))
        return outs

    def update_weights(self, state_dict) -> None:
        raise NotImplementedError("a replay engine has no weights")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_output")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    tok = build_tokenizer(root / "tok", [r["contents"] for r in CORPUS] * 5 + ["capital of Alvora"] * 5)
    search = RetrievalEngine(str(corpus), topk=1)
    yield tok, search
    search.close()


def _run(world, turns: list[str], **cfg):
    tok, search = world
    search.pop_metrics()
    engine = ReplayEngine(tok, turns)
    loop = AgentLoop(engine, search, tok, RolloutConfig(**{"max_turns": 2, "max_response_length": 64,
                                                             "max_obs_length": 40, "max_total_length": 2048, **cfg}))
    item = PromptItem(tok.encode("Q: capital of Alvora?", add_special_tokens=False), "row0", "What is the capital?",
                      ("Bemtis",), "test")
    (t,) = loop.run([item], 1, SamplingParams(temperature=1.0))
    return t, engine, search.pop_metrics(), tok


def test_a_10000_character_query_is_cut_and_searched(world):
    query = ("capital of Alvora " * 600)[:10_000]
    t, _, metrics, tok = _run(world, [f"<search> {query} </search>", "<answer> Bemtis </answer>"],
                              max_response_length=8000, max_total_length=12_000)
    assert t.stats.searches == 1 and metrics["search/requests"] == 1
    assert t.stats.query_chars_cut == len(" ".join(query.split())) - 512
    assert t.search_has_answer == [True] and extract_answer(t.response_text) == "Bemtis" and t.stats.stop_reason == "answer"


def test_never_answering_ends_after_the_turn_budget_with_invalid_actions_counted(world):
    t, engine, metrics, tok = _run(world, ["I wonder " * 20] * 10)
    assert t.stats.turns == 3 and t.stats.invalid_actions == 2 and not t.stats.answered
    assert t.stats.stop_reason == "no_answer_at_final_turn" and extract_answer(t.response_text) is None
    assert metrics.get("search/requests", 0) == 0
    hidden = tok.decode([i for i, m in zip(t.response_ids, t.response_mask) if m == 0])
    assert hidden.count(RolloutConfig().invalid_action_text.strip()) == 2  # the corrective text, masked out


def test_answering_on_the_first_token(world):
    t, _, _, _ = _run(world, ["<answer> Bemtis </answer> and then some"])
    assert t.stats.turns == 1 and extract_answer(t.response_text) == "Bemtis" and set(t.response_mask) == {1}
    assert "and then" not in t.response_text  # generation stopped at the closing tag


@pytest.mark.parametrize("turn,reason", [
    ("<search> capital of Alvora", "no closing tag"),
    ("capital of Alvora </search>", "closing tag without opening"),
    ("<search> <think> </think> </search>", "an empty query once tags are removed"),
    ("</answer>", "a closing answer tag alone"),
])
def test_malformed_turns_are_invalid_actions_not_searches(world, turn, reason):
    t, _, metrics, _ = _run(world, [turn, "<answer> Bemtis </answer>"])
    assert t.stats.invalid_actions == 1, reason
    assert metrics.get("search/requests", 0) == 0 and extract_answer(t.response_text) == "Bemtis"


def test_tags_inside_a_query_never_reach_the_search_engine(world):
    tok, search = world
    seen = []
    real = search.search

    def spy(requests):
        seen.extend(r.query for r in requests)
        return real(requests)

    search.search = spy
    try:
        t, _, _, _ = _run(world, ["<search> capital <information> of </information> Alvora <think> </search>",
                                  "<answer> Bemtis </answer>"])
    finally:
        del search.search
    assert seen == ["capital of Alvora"] and t.stats.searches == 1


@pytest.mark.parametrize("layout, doc", [("search_r1", "Doc 1(Title: Alvora) The capital of Alvora is Bemtis."),
                                         ("wiki", "Doc 1: Alvora\nThe capital of Alvora is Bemtis."),
                                         ("auto", "Doc 1: Alvora\nThe capital of Alvora is Bemtis.")])
def test_the_observation_is_written_in_the_configured_layout(world, layout, doc):
    """rollout.observation_layout reaches the agent's context; "auto" takes the answering engine's own (a
    retrieval index answers as the original's wiki engine: `Doc i: <title line>\n<text>`)."""
    t, _, _, tok = _run(world, ["<search> capital of Alvora </search>", "<answer> Bemtis </answer>"],
                        max_obs_length=200, observation_layout=layout)
    hidden = tok.decode([i for i, m in zip(t.response_ids, t.response_mask) if m == 0])
    assert hidden == f"\n\n<information>{doc}</information>\n\n", hidden
