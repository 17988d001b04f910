"""HFEngine against a full forward pass of the same model (CPU, fp32, no vllm needed).

The engine's log-probs must be the trainer's: log softmax(logits / T) of the sampled token before top-k /
top-p filtering (T = 1 when greedy), recomputed here by one unpadded forward over prompt + response.
Measured on the tiny model (2 cores, fp32): max |diff| about 1e-6 for T = 1 and T = 0.7; the tolerance
below leaves two orders of magnitude for other CPUs' kernels.
"""

from __future__ import annotations

import pytest
import torch

from zerosearch.testing.tiny_models import make_tiny_model
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import SamplingParams

from engine_checks import TEXTS, check_stop_string_output, recompute_log_probs, stop_cases

LOGPROB_TOL = 1e-4  # fp32 on CPU; measured max |diff| ~1e-6


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> HFEngine:
    path = make_tiny_model(tmp_path_factory.mktemp("tiny"), "tiny")
    return HFEngine.from_pretrained(str(path), micro_batch_size=4)  # 6 prompts -> two micro-batches


@pytest.fixture(scope="module")
def prompts(engine: HFEngine) -> list[list[int]]:
    return [engine.tokenizer.encode(t) for t in TEXTS]


def max_log_prob_diff(engine: HFEngine, prompts: list[list[int]], outs, temperature: float) -> float:
    worst = 0.0
    for p, o in zip(prompts, outs):
        assert len(o.log_probs) == len(o.token_ids)
        if o.token_ids:
            ref = recompute_log_probs(engine.model, p, o.token_ids, temperature)
            worst = max(worst, (torch.tensor(o.log_probs) - ref).abs().max().item())
    return worst


@pytest.mark.parametrize("temperature,top_p,top_k", [(1.0, 1.0, -1), (0.7, 1.0, -1), (0.7, 0.9, 20)])
def test_log_probs_equal_full_forward(engine, prompts, temperature, top_p, top_k):
    params = SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=24, seed=3)
    outs = engine.generate(prompts, params)
    assert all(len(o.token_ids) == 24 for o in outs)
    # the convention is *before* filtering: the trainer's recomputation at the same temperature
    assert max_log_prob_diff(engine, prompts, outs, temperature) < LOGPROB_TOL


def test_greedy_log_probs_are_temperature_one(engine, prompts):
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=16))
    assert max_log_prob_diff(engine, prompts, outs, 1.0) < LOGPROB_TOL
    for p, o in zip(prompts, outs):  # and greedy picks the argmax of a full forward
        ids = torch.tensor([p + o.token_ids])
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(p) - 1:-1]
        assert logits.argmax(-1).tolist() == o.token_ids


def test_greedy_batch_equals_one_by_one(engine, prompts):
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    batch = engine.generate(prompts, params)
    for p, b in zip(prompts, batch):
        (single,) = engine.generate([p], params)
        assert single.token_ids == b.token_ids
        assert single.log_probs == pytest.approx(b.log_probs, abs=LOGPROB_TOL)


def test_top_k_one_equals_greedy(engine, prompts):
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=20))
    top1 = engine.generate(prompts, SamplingParams(temperature=1.0, top_k=1, max_new_tokens=20, seed=0))
    for g, t in zip(greedy, top1):
        assert t.token_ids == g.token_ids
        assert t.log_probs == pytest.approx(g.log_probs, abs=LOGPROB_TOL)  # T = 1 both, before filtering


def test_seeded_sampling_is_reproducible(engine, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=11)
    a, b = engine.generate(prompts, params), engine.generate(prompts, params)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    c = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=16, seed=12))
    assert [o.token_ids for o in a] != [o.token_ids for o in c]


def test_per_sequence_caps(engine, prompts):
    caps = [0, 1, 5, 12, 40, 3]
    outs = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30), max_new_tokens=caps)
    full = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    for cap, o, f in zip(caps, outs, full):
        n = min(cap, 30)
        assert len(o.token_ids) == len(o.log_probs) == n
        assert o.token_ids == f.token_ids[:n]  # a cap cuts, it does not change what is generated
        assert o.finish_reason == "length"
    with pytest.raises(ValueError):
        engine.generate(prompts, SamplingParams(), max_new_tokens=[1])


def test_stop_strings_end_and_are_kept(engine, prompts):
    tok = engine.tokenizer
    full = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    for p, f, stop in stop_cases(tok, prompts, full):
        (o,) = engine.generate([p], SamplingParams(temperature=0.0, max_new_tokens=30, stop_strings=("@@@never", stop)))
        check_stop_string_output(tok, o, f.token_ids, stop)


def test_stop_token_ids_end_and_are_kept(engine, prompts):
    full = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    for p, f in zip(prompts, full):
        stop_id = f.token_ids[4]
        (o,) = engine.generate([p], SamplingParams(temperature=0.0, max_new_tokens=30, stop_token_ids=(stop_id,)))
        first = f.token_ids.index(stop_id)
        assert o.token_ids == f.token_ids[:first + 1]
        assert o.finish_reason == "stop" and o.stop == engine.tokenizer.decode([stop_id])
