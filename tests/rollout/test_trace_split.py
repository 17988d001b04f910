"""The 5,375 real Search-R1 trajectories through the rollout's action parser and observation splitter:
each `<information>` block the environment inserted is paired with the search before it, and the final
answer is the one the reward module extracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zerosearch.reward.qa import extract_answer
from zerosearch.rollout.actions import split_response

TRACES = "traces/search_r1_eval_traces.jsonl"


@pytest.fixture(scope="module")
def traces(shared_data: Path) -> list[dict]:
    with open(shared_data / TRACES, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _rebuild(turns) -> str:
    out = []
    for t in turns:
        out.append(t.text)
        if t.observation is not None:
            out.append(f"<information>{t.observation}</information>")
    return "".join(out)


def test_every_trace_splits_into_searches_with_observations_and_the_extracted_answer(traces):
    assert len(traces) == 5375
    bad: list[str] = []
    n_obs = n_model_written = 0
    for row in traces:
        resp, key = row["response"], f"{row['run']}/{row['id']}"
        turns = split_response(resp)
        rebuilt = _rebuild(turns)
        # lossless: only a missing closing tag of a truncated last observation may differ
        if rebuilt != resp and rebuilt != resp + "</information>":
            bad.append(f"{key}: text not preserved")
        for t in turns[:-1]:
            if t.observation is None:
                bad.append(f"{key}: a turn before the last without an observation")
        for t in turns:
            if t.observation is not None:
                n_obs += 1
                if t.action.kind != "search" or not t.action.content:
                    bad.append(f"{key}: observation after {t.action}")
            n_model_written += t.text.count("<information>")
        last = turns[-1]
        answer = last.action.content if last.action.kind == "answer" and last.observation is None else None
        if answer != extract_answer(resp):
            bad.append(f"{key}: final answer {answer!r} != extracted {extract_answer(resp)!r}")
    assert not bad, f"{len(bad)} problems, first: {bad[:5]}"
    # the numbers of this data set: environment observations, and <information> tags the agent wrote itself
    assert n_obs == 4996 and n_model_written > 0


def test_information_written_by_the_model_stays_in_its_turn():
    resp = ("<think> guess </think><information>made up</search>\nMy previous action is invalid.\n"
            "<search> real query </search>\n\n<information>Doc 1(Title: A) text</information>\n\n"
            "<answer> 42 </answer>")
    turns = split_response(resp)
    assert [t.action.kind for t in turns] == ["search", "answer"]
    assert turns[0].action.content == "real query" and "<information>made up" in turns[0].text
    assert turns[0].observation == "Doc 1(Title: A) text" and turns[1].action.content == "42"


def test_a_truncated_last_observation_belongs_to_the_search():
    turns = split_response("<search> q </search>\n<information>Doc 1 cut off")
    assert len(turns) == 1 and turns[0].action.content == "q" and turns[0].observation == "Doc 1 cut off"


def test_search_again_rates_split_by_whether_the_result_held_the_answer():
    from zerosearch.rollout.collate import search_again_rates
    from zerosearch.rollout.types import PromptItem, Trajectory

    def traj(hits: list[bool], stop: str) -> Trajectory:
        t = Trajectory(prompt_ids=[1], item=PromptItem([1], "r"))
        t.search_has_answer = list(hits)
        t.stats.searches, t.stats.stop_reason = len(hits), stop
        return t

    trajs = [traj([False, True], "answer"),           # miss -> searched again; hit -> answered
             traj([False], "answer"),                 # miss -> answered
             traj([False, False], "no_answer_at_final_turn"),  # miss -> again; miss -> tried again at the end
             traj([], "answer")]
    assert search_again_rates(trajs) == {"env/search_again_after_miss": 3 / 4, "env/search_again_after_hit": 0.0}
    assert search_again_rates([traj([], "answer")], "val/") == {}
