"""Continuous batching on the HF engine (`HFEngine.open_stream`, `sampler.ContinuousBatch`).

What is identical to `HFEngine.generate` for the same per-sequence seeds: each sequence's ids, finish reason
and stop string, exactly, whenever it joins and whatever shares its batch; log-probs agree to float
round-off (the left padding around a sequence differs; asserted < 1e-5, and bitwise with max_batch=1,
where each sequence runs alone as it does in a generate call of one). With KV reuse across turns the same
holds for the next turn (its parked cache was computed token by token rather than in one prefill).
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
            row = stream._rows[0]
            assert stream._attn.shape[1] == len(short_prompt) + len(row.out.token_ids)
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


def _drain(stream) -> dict:
    got = {}
    while stream.active:
        for key, out in stream.step():
            assert key not in got
            got[key] = out
    return got


def test_kv_reuse_across_turns_equals_a_fresh_prefill(hf):
    """Turn 2 of each sequence extends its turn-1 context with the generated turn and an observation: the
    stream prefills only the new tokens against the parked cache, and samples what a fresh prefill of the
    whole context samples. A key whose context changed, and new keys, join the same admission."""
    tok = hf.tokenizer
    params = SamplingParams(temperature=1.0, max_new_tokens=12, stop_strings=("e ",), stop_token_ids=(tok.eos_token_id,))
    prompts = [tok.encode(t) for t in TEXTS]
    stream = hf.open_stream(params)
    for k, p in enumerate(prompts):
        stream.add(k, p, 12, seed=k)
    turn1 = _drain(stream)
    obs = [tok.encode(" <information> Doc " * (1 + k % 3) + "</information>") for k in range(len(prompts))]
    second = {k: prompts[k] + turn1[k].token_ids + obs[k] for k in range(len(prompts))}
    second[2] = tok.encode("an edited context ") + second[2]  # no longer extends its parked cache
    second["new1"], second["new2"] = tok.encode("A fresh question?"), prompts[0]
    seeds = {k: 100 + i for i, k in enumerate(second)}
    before = (stream.prefill_tokens, stream.reused_tokens)
    for k, p in second.items():
        stream.add(k, p, 12, seeds[k])
    turn2 = _drain(stream)
    ref = hf.generate(list(second.values()), params, [12] * len(second), list(seeds.values()))
    for (k, p), r in zip(second.items(), ref):
        assert turn2[k].token_ids == r.token_ids, k
        assert (turn2[k].finish_reason, turn2[k].stop) == (r.finish_reason, r.stop), k
        assert turn2[k].log_probs == pytest.approx(r.log_probs, abs=1e-5), k
    reused = stream.reused_tokens - before[1]
    prefilled = stream.prefill_tokens - before[0]
    # every turn-1 key but the edited one reused its context: prompt + all generated tokens but the last
    assert reused == sum(len(prompts[k]) + len(turn1[k].token_ids) - 1 for k in range(len(prompts)) if k != 2)
    assert prefilled == sum(len(p) for p in second.values()) - reused
    # each finished sequence is parked again, covering its turn-2 context and all but its last token
    assert {k: v[0] for k, v in stream._parked.items()} == {k: p + turn2[k].token_ids[:-1] for k, p in second.items()}
    stream.close()
    assert stream._parked == {}


def test_kv_reuse_off_prefills_everything(hf):
    tok = hf.tokenizer
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    engine = HFEngine(hf.model, tok)
    p = tok.encode(TEXTS[1])
    streams = {}
    for reuse in (True, False):
        s = engine.open_stream(params)
        s.reuse_kv = reuse
        s.add("a", p, 6)
        first = _drain(s)["a"]
        s.add("a", p + first.token_ids, 6)
        streams[reuse] = (s, _drain(s)["a"])
    assert streams[True][1].token_ids == streams[False][1].token_ids
    assert streams[True][0].reused_tokens > 0 and streams[False][0].reused_tokens == 0
