"""The multi-turn agent loop with a real tiny model, the real HF engine and real BM25 search.

To get specific (good and bad) model outputs from a *real* model, the `world` fixture (agent_world.py,
registered in conftest.py) overfits the tiny model on chosen responses with the framework's own SFT step;
greedy decoding then reproduces them.
"""

from __future__ import annotations

import pytest

from zerosearch.reward import extract_answer
from zerosearch.rollout.agent_loop import AgentLoop
from zerosearch.rollout.collate import collate_trajectories, trajectory_metrics
from zerosearch.generation.types import SamplingParams

from agent_world import _items, _loop_cfg  # the world fixture: conftest.py


def _run(world, prompts, n=1, **cfg):
    loop = AgentLoop(world["engine"], world["search"], world["tok"], _loop_cfg(**cfg))
    return loop.run(_items(world["tok"], prompts), n, SamplingParams(temperature=0.0))


def test_search_then_answer_keeps_ids_and_masks(world):
    (t,) = _run(world, ["Q1 search then answer?"])
    assert t.stats.searches == 1 and t.stats.answered and extract_answer(t.response_text) == "Bemtis"
    assert t.stats.stop_reason == "answer" and t.stats.turns == 2
    assert len(t.response_ids) == len(t.response_mask) == len(t.rollout_log_probs)
    tok = world["tok"]
    # the masked-out span is exactly the observation, and it is a complete block
    obs = tok.decode([i for i, m in zip(t.response_ids, t.response_mask) if m == 0])
    assert obs.strip().startswith("<information>") and obs.strip().endswith("</information>")
    assert "Bemtis" in obs
    policy = tok.decode([i for i, m in zip(t.response_ids, t.response_mask) if m == 1])
    assert "<search> Alvora </search>" in policy and "<answer> Bemtis </answer>" in policy
    assert all(lp == 0.0 for lp, m in zip(t.rollout_log_probs, t.response_mask) if m == 0)
    assert all(lp < 0.0 or lp == pytest.approx(0.0, abs=1e-3) for lp, m in zip(t.rollout_log_probs, t.response_mask) if m)
    assert t.search_has_answer == [True]


def test_answer_on_first_turn(world):
    (t,) = _run(world, ["Q2 answer at once?"])
    assert t.stats.searches == 0 and t.stats.turns == 1 and extract_answer(t.response_text) == "Dalvek"
    assert set(t.response_mask) == {1}


def test_unclosed_tag_ends_without_search(world):
    (t,) = _run(world, ["Q3 unclosed tag?"])
    assert t.stats.searches == 0 and not t.stats.answered
    assert t.stats.stop_reason == "eos"


def test_empty_query_is_an_invalid_action(world):
    (t,) = _run(world, ["Q4 empty query?"], max_turns=1)
    assert t.stats.searches == 0 and t.stats.invalid_actions >= 1
    assert "My previous action was not valid" in t.response_text
    assert extract_answer(t.response_text) is None


def test_tags_inside_a_query_are_removed(world):
    (t,) = _run(world, ["Q5 tags in query?"])
    assert t.stats.searches == 1 and extract_answer(t.response_text) == "Dalvek"
    obs = world["tok"].decode([i for i, m in zip(t.response_ids, t.response_mask) if m == 0])
    assert "Dalvek" in obs  # the query reached the engine as "Corrun x", which found Corrun's page


def test_final_turn_sends_no_search(world):
    search = world["search"]
    search.pop_metrics()
    (t,) = _run(world, ["Q6 search twice?"], max_turns=1)
    # one search allowed; the second <search> comes in the final turn and is not sent
    assert t.stats.searches == 1 and t.stats.stop_reason == "no_answer_at_final_turn"
    assert search.pop_metrics()["search/requests"] == 1


def test_context_budget_ends_cleanly_and_keeps_the_prompt(world):
    tok = world["tok"]
    prompt = "Q6 search twice?"
    p_len = len(tok.encode(prompt, add_special_tokens=False))
    (t,) = _run(world, [prompt], max_total_length=p_len + 30)
    assert t.stats.truncated and t.stats.stop_reason == "context_budget"
    assert len(t) <= p_len + 30
    assert t.prompt_ids == tok.encode(prompt, add_special_tokens=False)


def test_prompt_over_budget_is_an_error(world):
    with pytest.raises(ValueError, match="max_total_length"):
        _run(world, ["Q1 search then answer?"], max_total_length=3)


def test_batch_where_only_some_rows_search_ties_each_query_to_its_row(world):
    prompts = ["Q2 answer at once?", "Q1 search then answer?", "Q2 answer at once?", "Q6 search twice?"]
    trajs = _run(world, prompts, n=2)
    assert [t.item.row_id for t in trajs] == ["row0", "row0", "row1", "row1", "row2", "row2", "row3", "row3"]
    assert [t.stats.searches for t in trajs] == [0, 0, 1, 1, 0, 0, 2, 2]
    m = trajectory_metrics(trajs)
    assert m["env/searches/mean"] == pytest.approx(6 / 8)
    batch = collate_trajectories(trajs, tok_pad := world["tok"].pad_token_id)
    assert batch["response_mask"].sum().item() == sum(sum(t.response_mask) for t in trajs)
    # padding is never a policy token
    assert (batch["responses"][batch["response_mask"] > 0] != tok_pad).all()


def test_sampled_rollouts_are_reproducible_with_a_seed(world):
    loop = AgentLoop(world["engine"], world["search"], world["tok"], _loop_cfg())
    items = _items(world["tok"], ["Q1 search then answer?", "Q6 search twice?"])
    a = loop.run(items, 3, SamplingParams(temperature=1.0, seed=7))
    b = loop.run(items, 3, SamplingParams(temperature=1.0, seed=7))
    assert [t.response_ids for t in a] == [t.response_ids for t in b]
