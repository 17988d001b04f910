"""The synthetic world and its demonstrations: held-out entities, answers only in documents, masks."""

from __future__ import annotations

import json

import pytest

from zerosearch.data.qa import load_qa
from zerosearch.testing.tiny_models import build_tokenizer
from zerosearch.rollout.actions import parse_action
from zerosearch.toy.demos import DemoBuilder, DemoMix, phased_pool
from zerosearch.toy.world import ATTRIBUTES, build_world


@pytest.fixture(scope="module")
def world():
    return build_world(n_sft=40, n_rl=30, n_test=20, questions_per_test_country=3, seed=5)


def test_splits_are_disjoint_and_neighbours_stay_inside(world):
    sets = {k: set(v) for k, v in world.splits.items()}
    assert not (sets["sft"] & sets["rl"] or sets["sft"] & sets["test"] or sets["rl"] & sets["test"])
    assert [len(sets[k]) for k in ("sft", "rl", "test")] == [40, 30, 20]
    for split, names in sets.items():
        for n in names:
            assert world.countries[n].neighbor in names and world.countries[n].neighbor != n


def test_test_questions_name_only_held_out_countries_and_answers_are_in_documents(world):
    seen = set(world.splits["sft"]) | set(world.splits["rl"])
    docs = {r["contents"] for r in world.corpus()}
    text = "\n".join(docs)
    assert world.questions["test"]
    for q in world.questions["test"]:
        assert q.entity in world.splits["test"] and q.entity not in seen
        assert all(not q.question.count(s) for s in seen if len(s) > 4)  # no trained name in the question
        assert q.golden_answers[0] in text
        fact_holder = q.bridge if q.hops == 2 else q.entity
        assert any(d.startswith(f'"{fact_holder}"') and q.golden_answers[0] in d for d in docs)


def test_two_hop_questions_exist_and_go_through_the_neighbour(world):
    two = [q for q in world.questions["test"] + world.questions["rl"] if q.hops == 2]
    assert two
    for q in two:
        assert q.bridge == world.countries[q.entity].neighbor
        assert q.golden_answers == [getattr(world.countries[q.bridge], q.attribute)]


def test_the_world_is_a_function_of_its_seed(world):
    again = build_world(n_sft=40, n_rl=30, n_test=20, questions_per_test_country=3, seed=5)
    other = build_world(n_sft=40, n_rl=30, n_test=20, questions_per_test_country=3, seed=6)
    assert list(again.corpus()) == list(world.corpus())
    assert list(other.corpus()) != list(world.corpus())


def test_saved_files_use_the_shared_layouts(world, tmp_path):
    paths = world.save(tmp_path)
    corpus = [json.loads(x) for x in paths["corpus"].read_text().splitlines()]
    assert len(corpus) == len(world.countries) * (len(ATTRIBUTES) + 1)
    assert set(corpus[0]) == {"id", "contents"}
    rows = load_qa(paths["test"])  # the project's own QA reader
    assert len(rows) == len(world.questions["test"]) and {r.data_source for r in rows} == {"toy"}


@pytest.fixture(scope="module")
def tok(world, tmp_path_factory):
    texts = [r["contents"] for r in world.corpus()] + [q.question for qs in world.questions.values() for q in qs]
    return build_tokenizer(tmp_path_factory.mktemp("tok"), texts * 2, vocab_size=400)


@pytest.mark.parametrize("kind,searches", [("direct", 0), ("search", 1), ("retry", 2), ("two_hop", 2)])
def test_demonstrations_search_read_and_answer_with_observations_masked(world, tok, kind, searches):
    b = DemoBuilder(world, tok, max_obs_length=64, topk=1, seed=0)
    c = world.countries[world.splits["sft"][0]]
    ex = b.example(c, "capital", kind)
    assert len(ex.input_ids) == len(ex.loss_mask)
    policy = tok.decode([t for t, m in zip(ex.input_ids, ex.loss_mask) if m])
    start = ex.loss_mask.index(1)  # the prompt ends where the model's first token is
    hidden = tok.decode([t for t, m in zip(ex.input_ids[start:], ex.loss_mask[start:]) if not m])
    assert policy.count("<search>") == searches and policy.count("</search>") == searches
    answer = world.countries[c.neighbor].capital if kind == "two_hop" else c.capital
    assert parse_action(policy.split("</search>")[-1])[0].kind == "answer"
    assert policy.rstrip().split("<answer>")[-1].split("</answer>")[0].strip() == answer
    assert hidden.count("<information>") == hidden.count("</information>") == searches
    assert "<information>" not in policy
    assert ex.input_ids[-1] == tok.eos_token_id and ex.loss_mask[-1] == 1


def test_phased_pool_switches_mix(world, tok):
    b = DemoBuilder(world, tok, max_obs_length=64, seed=1)
    only_direct, only_search = DemoMix(0, 1, 0, 0), DemoMix(1, 0, 0, 0)
    pool = phased_pool(b, world.splits["sft"], total_steps=10, batch_size=8, early=only_direct, late=only_search,
                       late_share=0.2)

    def searches(examples):
        return {tok.decode([t for t, m in zip(e.input_ids, e.loss_mask) if m]).count("<search>") for e in examples}

    assert searches(pool(0)) == {0} and searches(pool(7)) == {0}
    assert searches(pool(8)) == {1} and searches(pool(9)) == {1}
