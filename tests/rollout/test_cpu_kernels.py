"""The HF engine's CPU decode kernels (`generation.cpu_kernels`): `sdpa_gqa` attention and prepacked bf16
weights change speed, not results.

What is identical: the logits of `sdpa_gqa` and transformers' `sdpa` on a left-padded grouped-query batch
(bitwise, fp32 and bf16), the packed linear's output and a plain bf16 linear's (bitwise), and the sampled
ids of an engine with and without the kernels for the same seeds. A packed weight is rebuilt after a weight
update, so the engine never decodes with stale weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from zerosearch.generation.cpu_kernels import (SDPA_GQA, PackedLinear, pack_linear_weights, packed_bf16_supported,
                                               use_sdpa_gqa)
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.types import SamplingParams
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

from engine_checks import TEXTS, left_padded_batch

needs_bf16 = pytest.mark.skipif(not packed_bf16_supported(), reason="this CPU has no oneDNN bf16")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    # the tiny preset is grouped-query (8 heads over 4 K/V heads), so the K/V repeat is what sdpa_gqa skips
    return str(make_tiny_model(tmp_path_factory.mktemp("cpu_kernels"), TinySpec.preset("tiny")))


def _load(model_dir: str, dtype: torch.dtype, attn: str = "sdpa") -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation=attn).eval()


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)])
def test_sdpa_gqa_logits_equal_sdpa(model_dir, dtype):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, mask = left_padded_batch(tok)
    ref_model = _load(model_dir, dtype)
    gqa_model = _load(model_dir, dtype)
    assert ref_model.config.num_key_value_heads < ref_model.config.num_attention_heads
    assert use_sdpa_gqa(gqa_model) and gqa_model.config._attn_implementation == SDPA_GQA
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        ref = ref_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
        got = gqa_model(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    real = mask.bool()
    assert torch.equal(ref[real], got[real])


@needs_bf16
def test_packed_linear_equals_linear_and_falls_back_under_grad():
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 96).to(torch.bfloat16)
    plain = copy.deepcopy(lin)
    layer = torch.nn.Sequential(lin)
    assert pack_linear_weights(layer) == 1 and isinstance(lin, PackedLinear)
    assert lin.state_dict().keys() == plain.state_dict().keys()
    for rows in (1, 5, 16, 70):
        x = torch.randn(2, rows, 64).to(torch.bfloat16)
        with torch.no_grad():
            assert torch.equal(lin(x), plain(x))
    x = torch.randn(3, 64).to(torch.bfloat16)
    y = lin(x)  # grad enabled: the plain path, so training through the module still works
    y.float().sum().backward()
    assert lin.weight.grad is not None
    # an in-place weight write (what load_state_dict does) is seen at the next call
    with torch.no_grad():
        lin.weight.mul_(2)
        plain.weight.mul_(2)
        assert torch.equal(lin(x), plain(x))
    # an empty batch passes through
    with torch.no_grad():
        assert lin(torch.zeros(0, 64, dtype=torch.bfloat16)).shape == (0, 96)


def test_pack_skips_fp32_models(model_dir):
    assert pack_linear_weights(_load(model_dir, torch.float32)) == 0


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=needs_bf16)])
def test_engine_samples_the_same_ids_with_and_without_kernels(model_dir, dtype):
    plain = HFEngine(_load(model_dir, dtype), _tok(model_dir), cpu_kernels=False)
    fast = HFEngine(_load(model_dir, dtype), _tok(model_dir))
    assert plain.attention == "sdpa" and plain.packed_linears == 0
    assert fast.attention == SDPA_GQA
    assert fast.packed_linears == (0 if dtype == torch.float32 else 15)  # 2 layers x 7 projections + lm_head
    prompts = [plain.tokenizer.encode(t) for t in TEXTS]
    params = SamplingParams(temperature=1.0, max_new_tokens=24, stop_token_ids=(plain.tokenizer.eos_token_id,))
    seeds = list(range(len(prompts)))
    a, b = plain.generate(prompts, params, seeds=seeds), fast.generate(prompts, params, seeds=seeds)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    for x, y in zip(a, b):
        assert x.finish_reason == y.finish_reason
        assert max(abs(p - q) for p, q in zip(x.log_probs, y.log_probs)) < (1e-5 if dtype == torch.float32 else 5e-2)


@needs_bf16
def test_packed_weights_follow_weight_updates(model_dir, tmp_path):
    """After update_weights the engine decodes with the new weights: its ids equal those of a plain engine
    built on the new weights, and differ from the old weights' ids."""
    other_dir = make_tiny_model(tmp_path, TinySpec.preset("tiny", seed=7))
    tok = _tok(model_dir)
    fast = HFEngine(_load(model_dir, torch.bfloat16), tok)
    prompts = [tok.encode(t) for t in TEXTS]
    params = SamplingParams(temperature=1.0, max_new_tokens=16)
    seeds = list(range(len(prompts)))
    before = [o.token_ids for o in fast.generate(prompts, params, seeds=seeds)]  # packs the old weights
    new_weights = _load(str(other_dir), torch.bfloat16).state_dict()
    fast.update_weights(new_weights)
    after = [o.token_ids for o in fast.generate(prompts, params, seeds=seeds)]
    ref = HFEngine(_load(str(other_dir), torch.bfloat16), tok, cpu_kernels=False)
    assert after == [o.token_ids for o in ref.generate(prompts, params, seeds=seeds)]
    assert after != before


def _tok(model_dir: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, padding_side="left")


def test_next_logits_asks_for_the_last_position_only(model_dir):
    """The sampler's prefill asks for the last position's logits alone (`logits_to_keep=1`), which equal the
    last position of the full logits; a model without that argument gets a full forward."""
    from zerosearch.generation.sampler import _next_logits

    model = _load(model_dir, torch.float32)
    ids, mask = left_padded_batch(_tok(model_dir))
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.logits.shape))
    with torch.no_grad():
        got = _next_logits(model, input_ids=ids, attention_mask=mask)
        full = model(input_ids=ids, attention_mask=mask).logits[:, -1, :]
    assert seen[0] == (ids.shape[0], 1, model.config.vocab_size)
    torch.testing.assert_close(got, full, rtol=1e-5, atol=1e-5)

    class NoKeep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask=None):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    with torch.no_grad():
        torch.testing.assert_close(_next_logits(NoKeep(model), input_ids=ids, attention_mask=mask), full)


@needs_bf16
def test_packed_linear_copies_and_follows_reassigned_weights():
    """After a packed call the module still deep-copies and pickles (the packed cache is left out); a weight
    replaced by another tensor, or written through `.data` and then dropped, is repacked."""
    import pickle

    torch.manual_seed(1)
    lin = torch.nn.Linear(32, 48).to(torch.bfloat16)
    pack_linear_weights(torch.nn.Sequential(lin))
    x = torch.randn(4, 32).to(torch.bfloat16)
    with torch.no_grad():
        lin(x)
        twin = copy.deepcopy(lin)
        assert torch.equal(twin(x), lin(x))
        assert torch.equal(pickle.loads(pickle.dumps(lin))(x), lin(x))
        new = torch.randn(48, 32).to(torch.bfloat16)
        lin.weight.data = new.clone()  # another tensor, version 0 like the old one
        assert torch.equal(lin(x), torch.nn.functional.linear(x, new, lin.bias))
        lin.weight.data.mul_(3)  # through .data: no version bump, so the writer drops the cache
        from zerosearch.generation.cpu_kernels import drop_packed_weights

        drop_packed_weights(lin)
        assert torch.equal(lin(x), torch.nn.functional.linear(x, new * 3, lin.bias))


@needs_bf16
def test_packed_linear_with_inference_mode_weights():
    with torch.inference_mode():
        lin = torch.nn.Linear(16, 8).to(torch.bfloat16)  # inference tensors keep no version counter
        pack_linear_weights(torch.nn.Sequential(lin))
        x = torch.randn(3, 16).to(torch.bfloat16)
        assert torch.equal(lin(x), torch.nn.functional.linear(x, lin.weight, lin.bias))


def test_eager_switches_only_where_it_equals_sdpa(model_dir):
    """A Qwen2 configured with eager decodes with sdpa_gqa; a model type whose eager attention differs from
    sdpa (Gemma 2's logit soft-capping) keeps eager."""
    from transformers import Gemma2Config

    assert use_sdpa_gqa(_load(model_dir, torch.float32, attn="eager"))
    gemma = AutoModelForCausalLM.from_config(
        Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8), attn_implementation="eager")
    assert not use_sdpa_gqa(gemma) and gemma.config._attn_implementation == "eager"


def test_engine_says_which_kernel_it_could_not_apply(tmp_path, caplog):
    """A model whose attention cannot switch still decodes (speed, not correctness), with a warning naming
    the key; a model that switches logs nothing."""
    import logging

    from transformers import Gemma2Config

    gemma = AutoModelForCausalLM.from_config(
        Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8), attn_implementation="eager")
    tok = _tok(make_tiny_model(tmp_path, TinySpec.preset("tiny")))
    with caplog.at_level(logging.WARNING, logger="zerosearch.generation.hf_engine"):
        engine = HFEngine(gemma.eval(), tok)
    assert engine.attention == "eager"
    assert "rollout.cpu_decode_kernels: attention stays eager" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zerosearch.generation.hf_engine"):
        HFEngine(_load(str(tmp_path), torch.float32), tok)
    assert "cpu_decode_kernels" not in caplog.text
