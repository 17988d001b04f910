"""`generation.kv_cache.GrowingCache` against transformers' `DynamicCache`: the same logits, bit for bit,
through prefill, decode steps, a batch compaction and an outside assignment; views handed out earlier
never change; transformers' own caches are left alone."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache
from transformers.cache_utils import DYNAMIC_LAYER_TYPE_MAPPING, DynamicLayer

from zerosearch.generation.kv_cache import GrowingCache, GrowingLayer
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    path = make_tiny_model(tmp_path_factory.mktemp("kv_cache"), TinySpec.preset("tiny"))
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def _decode(model, cache, steps: int = 80, compact_at: int = 30):
    """Prefill 4 left-padded rows, decode greedily, drop row 1 at step `compact_at`; returns the logits
    of every step [rows, vocab] and the first layer's keys view taken right after the prefill."""
    torch.manual_seed(0)
    ids = torch.randint(3, model.config.vocab_size, (4, 9))
    attn = torch.ones_like(ids)
    attn[0, :4] = 0
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out, seen = [], None
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos, past_key_values=cache).logits[:, -1]
        seen = cache.layers[0].keys
        seen_copy = seen.clone()
        cur = pos[:, -1]
        for step in range(steps):
            out.append(logits)
            nxt = logits.argmax(-1)
            if step == compact_at:
                keep = torch.tensor([0, 2, 3])
                cache.batch_select_indices(keep)
                attn, cur, nxt = attn[keep], cur[keep], nxt[keep]
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
            cur = cur + 1
            logits = model(input_ids=nxt[:, None], attention_mask=attn, position_ids=cur[:, None],
                           past_key_values=cache).logits[:, -1]
    return out, seen, seen_copy


def test_growing_cache_equals_dynamic_cache(model):
    ref, _, _ = _decode(model, DynamicCache())
    got, seen, seen_copy = _decode(model, GrowingCache())
    assert len(ref) == len(got)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    assert torch.equal(seen, seen_copy)  # later appends wrote past the end of the view handed out


def test_growing_layer_appends_in_place_and_adopts_assignments():
    layer = GrowingLayer()
    k = torch.randn(2, 3, 5, 4)
    keys, _ = layer.update(k, k.clone())
    buf = layer._bufs["keys"]
    assert torch.equal(keys, k) and buf.shape[-2] > 5
    keys, _ = layer.update(torch.ones(2, 3, 1, 4), torch.ones(2, 3, 1, 4))
    assert layer._bufs["keys"] is buf  # no reallocation: written into the spare room
    assert keys.shape == (2, 3, 6, 4) and torch.equal(keys[:, :, :5], k)
    other = torch.zeros(1, 3, 7, 4)
    layer.keys, layer.values = other, other.clone()  # adopted as is (a merge or compaction elsewhere)
    assert layer.keys.data_ptr() == other.data_ptr() and layer.get_seq_length() == 7
    keys, _ = layer.update(torch.ones(1, 3, 1, 4), torch.ones(1, 3, 1, 4))
    assert torch.equal(other, torch.zeros(1, 3, 7, 4))  # the adopted tensor was not written into
    assert keys.shape == (1, 3, 8, 4)


def test_transformers_layer_mapping_untouched():
    assert GrowingLayer not in DYNAMIC_LAYER_TYPE_MAPPING.values()
    assert DynamicLayer in DYNAMIC_LAYER_TYPE_MAPPING.values()


def test_growing_layer_refuses_states_of_another_batch():
    layer = GrowingLayer()
    layer.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))
    layer.keys, layer.values = layer.keys, layer.values  # adopted: the next append reallocates
    with pytest.raises(ValueError, match="batch, heads or head size differ"):
        layer.update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))
