"""The in-process transport: a local (random-weight) Qwen2 simulator, batched generate on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from zerosearch.config.schema import CurriculumConfig, SimulationConfig
from zerosearch.testing.tiny_models import make_tiny_model
from zerosearch.search.simulated import SimulatedSearchEngine
from zerosearch.search.types import SearchRequest


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """On a shared 2-core machine, torch's two OpenMP threads spin against other processes: the batch
    took 15 s at 2 threads under load and 0.5 s at 1."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.getbasetemp() / "tiny_model")  # shared across modules


def make(tiny_dir: Path, **kw: object) -> SimulatedSearchEngine:
    sim = SimulationConfig(transport="inprocess", model_path=str(tiny_dir), max_tokens=24, **kw)
    return SimulatedSearchEngine.from_config(sim, CurriculumConfig(start_threshold=0.5, end_threshold=0.5),
                                             mode="simulate_prompt", topk=3, total_steps=10, seed=4,
                                             cache=False)


def test_inprocess_batch(tiny_dir: Path) -> None:
    reqs = [SearchRequest(query=f"who founded city {i}", row_id=f"r{i}", question=f"Who founded city {i}?",
                          golden_answers=(f"founder {i}",)) for i in range(5)]
    with make(tiny_dir) as eng:
        assert eng.client is None and eng.transport.name == "inprocess"
        results = eng.search(reqs)
        assert len(results) == 5
        for r in results:
            # gibberish from random weights: either parsed into <= topk clean documents or a counted fallback
            if r.fallback:
                assert r.error == "empty_output" and r.documents[0].text == "No information available."
            else:
                assert r.error is None and 1 <= len(r.documents) <= 3
                for d in r.documents:
                    assert "<|" not in d.text and "information>" not in d.text and d.text == " ".join(d.text.split())
        m = eng.pop_metrics()
        assert m["search/requests"] == 5 and m["search/generations"] == 5
        assert m["search/fallbacks"] == m.get("search/failures/empty_output", 0.0)
    # seeded: a new engine with the same seed writes the same documents
    with make(tiny_dir) as eng2:
        assert [r.documents for r in eng2.search(reqs)] == [r.documents for r in results]


def test_inprocess_greedy_and_missing_model(tiny_dir: Path) -> None:
    with make(tiny_dir, temperature=0.0) as eng:
        a = eng.search([SearchRequest(query="river", row_id="x")])
        b = eng.search([SearchRequest(query="river", row_id="x")])
        assert a[0].documents == b[0].documents
    with pytest.raises(ValueError, match="model_path"):
        SimulatedSearchEngine.from_config(SimulationConfig(transport="inprocess"), CurriculumConfig(),
                                          mode="simulate_sft", topk=5, total_steps=1, seed=0, cache=False)


def test_inprocess_decodes_through_the_fused_decoder_with_the_same_text(tiny_dir: Path) -> None:
    """On CPU the transport decodes with the HF engine's CPU path (sdpa_gqa, fused decoder); the same seeds
    give the text transformers' forward gives."""
    from zerosearch.generation.fused_decode import fused_decoder
    from zerosearch.generation.types import SamplingParams
    from zerosearch.search.sim_transports import InProcessTransport

    fast, plain = InProcessTransport(str(tiny_dir), seed=3), InProcessTransport(str(tiny_dir), seed=3, cpu_kernels=False)
    assert fused_decoder(fast.model) is not None and fused_decoder(plain.model) is None
    assert fast.model.config._attn_implementation == "sdpa_gqa"
    prompts = [f"Write a document about river {i}." for i in range(6)]
    params = SamplingParams(temperature=1.0, max_new_tokens=24)
    assert fast.generate(prompts, params, seeds=list(range(6))) == plain.generate(prompts, params, seeds=list(range(6)))
