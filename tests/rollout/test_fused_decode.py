"""The fused decoder (`generation.fused_decode`): the HF engine's CPU decode over fused q/k/v and gate/up
projections computes what transformers' forward computes, and follows the model's weights.

What is checked:
- logits of a left-padded prefill and of the decode steps after it equal transformers' (fp32, to 1e-5) for
  both families it covers (Qwen2 with q/k/v biases, LLaMA without, both grouped-query);
- fusing changes no parameter name, shape or value, and the HF modules' weights are views of the fused
  tensors, so `load_state_dict` (the engine's weight update) moves the fused decoder too;
- a model whose weights were replaced afterwards falls back to transformers' forward instead of decoding
  with weights the model no longer has;
- unsupported models are left alone, with the reason, and the engine's warning names it.
"""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from zerosearch.generation.cpu_kernels import drop_packed_weights, pack_linear_weights, packed_bf16_supported
from zerosearch.generation.fused_decode import enable_fused_decode, fused_decoder, unsupported_reason
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.generation.kv_cache import GrowingCache
from zerosearch.generation.sampler import _next_logits
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

from engine_checks import left_padded_batch


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(make_tiny_model(tmp_path_factory.mktemp("fused_decode"), TinySpec.preset("tiny")))


def _qwen2(model_dir: str) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()


def _llama(vocab: int) -> torch.nn.Module:
    from transformers import LlamaConfig

    torch.manual_seed(3)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=8, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").eval()


def _decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, steps: int,
            fused: bool) -> list[torch.Tensor]:
    """Last-position logits [B, vocab] of the prefill and of `steps` greedy decode steps."""
    call = fused_decoder(model) if fused else (
        lambda **kw: model(**kw, use_cache=True).logits[:, -1, :])
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = GrowingCache()
    with torch.no_grad():
        out = [call(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache)]
        cur = pos[:, -1:]
        for _ in range(steps):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            cur = cur + 1
            out.append(call(input_ids=out[-1].argmax(-1, keepdim=True), attention_mask=mask, position_ids=cur,
                            past_key_values=cache))
    return out


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_fused_logits_equal_transformers(model_dir, family):
    tok = AutoTokenizer.from_pretrained(model_dir)
    ref = _qwen2(model_dir) if family == "qwen2" else _llama(len(tok))
    fused = _qwen2(model_dir) if family == "qwen2" else _llama(len(tok))
    assert ref.config.num_key_value_heads < ref.config.num_attention_heads  # grouped-query
    assert (ref.model.layers[0].self_attn.q_proj.bias is not None) == (family == "qwen2")
    assert enable_fused_decode(fused) is not None
    ids, mask = left_padded_batch(tok)
    want, got = _decode(ref, ids, mask, 8, fused=False), _decode(fused, ids, mask, 8, fused=True)
    for step, (a, b) in enumerate(zip(want, got)):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-5, rtol=0), f"step {step}: max |diff| {(a - b).abs().max():.3g}"


def test_fusing_keeps_the_parameters_and_follows_load_state_dict(model_dir, tmp_path):
    model, plain = _qwen2(model_dir), _qwen2(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n_params = len(list(model.parameters()))
    decoder = enable_fused_decode(model)
    assert enable_fused_decode(model) is decoder  # idempotent
    after = model.state_dict()
    assert list(after) == list(before) and len(list(model.parameters())) == n_params
    assert all(torch.equal(after[k], v) for k, v in before.items())
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == decoder.qkv[0].weight.untyped_storage().data_ptr()

    other = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path, TinySpec.preset("tiny", seed=7)))
    model.load_state_dict(other.state_dict())
    plain.load_state_dict(other.state_dict())
    assert decoder.intact()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, mask = left_padded_batch(tok)
    a, b = _decode(plain, ids, mask, 3, fused=False), _decode(model, ids, mask, 3, fused=True)
    assert all(torch.allclose(x, y, atol=1e-5, rtol=0) for x, y in zip(a, b))


REPLACEMENTS = [("self_attn.q_proj", "weight", "param"), ("self_attn.k_proj", "weight", "param"),
                ("self_attn.v_proj", "bias", "param"), ("mlp.up_proj", "weight", "param"),
                ("mlp.gate_proj", "weight", "data")]


@pytest.mark.parametrize("path,name,how", REPLACEMENTS)
def test_replaced_weights_fall_back_to_transformers(model_dir, path, name, how, caplog):
    """Any fused weight or bias replaced after fusing (a new Parameter, or `.data` pointed elsewhere) sends
    the sampler back to transformers' forward, which sees the new tensor."""
    model, plain = _qwen2(model_dir), _qwen2(model_dir)
    decoder = enable_fused_decode(model)
    new = torch.randn_like(getattr(model.model.layers[1].get_submodule(path), name))
    for m in (model, plain):
        lin = m.model.layers[1].get_submodule(path)
        if how == "param":
            setattr(lin, name, torch.nn.Parameter(new.clone()))
        else:
            getattr(lin, name).data = new.clone()
    assert not decoder.intact()
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, mask = left_padded_batch(tok)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="zerosearch.generation.fused_decode"):
        got = _next_logits(model, input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=GrowingCache())
        want = plain(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1, :]
        _next_logits(model, input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=GrowingCache())
    assert torch.allclose(got, want, atol=1e-5, rtol=0)
    # the lost speed is counted and said once, naming the key
    assert decoder.fallbacks == 2
    assert caplog.text.count("rollout.cpu_decode_kernels: the fused decoder is off") == 1


@pytest.mark.skipif(not packed_bf16_supported(), reason="this CPU has no oneDNN bf16")
def test_drop_packed_weights_reaches_the_fused_projections(model_dir, tmp_path):
    """A bf16 writer through `.data` (no version bump) that calls drop_packed_weights, as PackedLinear's
    contract asks, gets the new weights in the fused decoder's packed projections too."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    pack_linear_weights(model)
    decoder = enable_fused_decode(model)
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids, mask = left_padded_batch(tok)
    _decode(model, ids, mask, 1, fused=True)  # packs the fused projections with the old weights
    other = AutoModelForCausalLM.from_pretrained(make_tiny_model(tmp_path, TinySpec.preset("tiny", seed=7)),
                                                 dtype=torch.bfloat16).eval()
    with torch.no_grad():
        for p, q in zip(model.parameters(), other.parameters()):
            p.data.copy_(q.data)
    drop_packed_weights(model)
    assert decoder.intact()
    got, want = _decode(model, ids, mask, 2, fused=True), _decode(other, ids, mask, 2, fused=False)
    assert all(torch.allclose(x.float(), y.float(), atol=0.15, rtol=0) for x, y in zip(got, want))


def test_engine_setting_holds_on_a_model_fused_before(model_dir):
    """An engine built with fused_decode=False (or without kernels) on a model an earlier engine fused
    decodes through transformers' forward, as it reports."""
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = _qwen2(model_dir)
    assert HFEngine(model, tok).fused_decode and fused_decoder(model) is not None
    off = HFEngine(model, tok, fused_decode=False)
    assert not off.fused_decode and fused_decoder(model) is None
    assert HFEngine(model, tok).fused_decode  # and back on
    HFEngine(model, tok, cpu_kernels=False)
    assert fused_decoder(model) is None


def test_unsupported_models_are_left_alone(model_dir, caplog):
    from transformers import Gemma2Config, Qwen2Config

    gemma = AutoModelForCausalLM.from_config(
        Gemma2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=8), attn_implementation="eager").eval()
    assert "model type 'gemma2'" in unsupported_reason(gemma)
    assert enable_fused_decode(gemma) is None and fused_decoder(gemma) is None
    windowed = AutoModelForCausalLM.from_config(
        Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, use_sliding_window=True, sliding_window=8, max_window_layers=0),
        attn_implementation="sdpa").eval()
    assert unsupported_reason(windowed) == "sliding-window attention"
    assert unsupported_reason(_qwen2(model_dir)) is None

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    with caplog.at_level(logging.WARNING, logger="zerosearch.generation.hf_engine"):
        engine = HFEngine(gemma, tok)
    assert not engine.fused_decode
    assert "not the fused decoder: model type 'gemma2'" in caplog.text
    assert HFEngine(_qwen2(model_dir), tok).fused_decode
    assert not HFEngine(_qwen2(model_dir), tok, cpu_kernels=False).fused_decode
