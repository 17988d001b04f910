"""Continuous batching on the HF engine (`HFEngine.open_stream`, `sampler.ContinuousBatch`).

What is identical to `HFEngine.generate` for the same per-sequence seeds: each sequence's ids, finish reason
and stop string, exactly, whenever it joins and whatever shares its batch; log-probs agree to float
round-off (the left padding around a sequence differs; asserted < 1e-5, and bitwise with max_batch=1,
where each sequence runs alone as it does in a generate call of one).
"""

from __future__ import annotations

import pytest

from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import SamplingParams
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

from engine_checks import TEXTS


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> HFEngine:
    return HFEngine.from_pretrained(str(make_tiny_model(tmp_path_factory.mktemp("stream"), TinySpec.preset("tiny"))))


def _run_staggered(stream, prompts, caps, seeds, join_every: int):
    """Add sequence k after k * join_every steps; returns {k: output} and the running-batch sizes seen."""
    outs, sizes, step, k = {}, [], 0, 0
    while k < len(prompts) or stream.active:
        while k < len(prompts) and step >= k * join_every:
            stream.add(k, prompts[k], caps[k], seeds[k])
            k += 1
        for key, out in stream.step():
            assert key not in outs
            outs[key] = out
        sizes.append(len(stream._rows))
        step += 1
    return outs, sizes


@pytest.mark.parametrize("max_batch", [1, 3, 64])
def test_stream_equals_generate_for_the_same_seeds(hf, max_batch):
    tok = hf.tokenizer
    prompts = [tok.encode(t) for t in TEXTS] * 2  # 12 sequences of 1-24 tokens
    caps = [5, 40, 17, 40, 1, 30, 40, 8, 23, 40, 12, 40]
    seeds = [100 + i for i in range(len(prompts))]
    params = SamplingParams(temperature=1.0, max_new_tokens=32, stop_strings=("e ", "a"), stop_token_ids=(tok.eos_token_id,))
    engine = HFEngine(hf.model, tok, micro_batch_size=max_batch)
    ref = engine.generate(prompts, params, caps, seeds)  # max_batch=1: each sequence in a call of its own
    outs, sizes = _run_staggered(engine.open_stream(params), prompts, caps, seeds, join_every=3)
    assert sorted(outs) == list(range(len(prompts)))
    assert max(sizes) <= max_batch
    reasons = {o.finish_reason for o in ref}
    assert reasons == {"stop", "length"}  # some sequences stop early, so rows leave while others run
    for k, r in enumerate(ref):
        o = outs[k]
        assert o.token_ids == r.token_ids, k
        assert (o.finish_reason, o.stop) == (r.finish_reason, r.stop), k
        assert len(o.token_ids) <= min(caps[k], params.max_new_tokens)
        if max_batch == 1:
            assert o.log_probs == r.log_probs, k  # alone in the batch, as in a generate call of one
        else:
            assert o.log_probs == pytest.approx(r.log_probs, abs=1e-5), k


def test_rows_leave_at_once_and_the_cache_shrinks(hf):
    """A finished sequence leaves the batch at the step it finished, and the padding columns only it
    needed are trimmed: the cache stays as long as the longest running context."""
    tok = hf.tokenizer
    long_prompt, short_prompt = tok.encode(" ".join(TEXTS * 2)), tok.encode("Q")
    stream = hf.open_stream(SamplingParams(temperature=0.0, max_new_tokens=50))
    stream.add("long", long_prompt, 2)
    stream.add("short", short_prompt, 20)
    finished = []
    while stream.active:
        finished += [(key, len(out.token_ids)) for key, out in stream.step()]
        if finished and finished[0][0] == "long" and stream._rows:
            # the long prompt left: columns are trimmed to the short row's context (prompt + generated)
            key, out, *_ = stream._rows[0]
            assert stream._attn.shape[1] == len(short_prompt) + len(out.token_ids)
    assert finished == [("long", 2), ("short", 20)]


def test_stream_edges(hf):
    tok = hf.tokenizer
    stream = hf.open_stream(SamplingParams(temperature=0.0, max_new_tokens=4))
    stream.add("none", tok.encode("Q"), 0)
    stream.add("capped", tok.encode("Q"), 100)  # the stream's max_new_tokens caps it
    got = {}
    while stream.active:
        got.update(stream.step())
    assert got["none"].token_ids == [] and got["none"].finish_reason == "length"
    assert len(got["capped"].token_ids) == 4
    stream.add("x", tok.encode("Q"), 3)
    stream.close()  # an abandoned stream drops what it held
    assert stream.active == 0
    with pytest.raises(ValueError, match="max_batch"):
        HFEngine(hf.model, tok, micro_batch_size=0).open_stream(SamplingParams())
