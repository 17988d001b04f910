"""Faster decoding for the HF engine on CPU: the same tokens, fewer copies.

Two changes to an in-memory transformers causal LM, both exact (the same logits bit for bit at the shapes
measured; `tests/rollout/test_cpu_kernels.py` holds sampled ids equal with and without them):

1. **`sdpa_gqa` attention.** transformers' `sdpa` path repeats the K/V heads of a grouped-query model
   (`repeat_kv`, a copy of the whole cache per layer per decode step) whenever an attention mask is given,
   because some CUDA kernels cannot take a mask with `enable_gqa`. PyTorch's CPU kernels can. Our
   attention function passes `enable_gqa=True` on CPU and defers to transformers' `sdpa` everywhere else.
   At 25 M parameters, batch 16, bf16, one thread: one layer's decode attention 653 -> 191 us.
2. **Prepacked bf16 weights** (`pack_linear_weights`). oneDNN reorders a bf16 weight into its blocked
   layout on every matmul call; for the few rows of a decode step that reorder costs as much as the
   product. Packing once and calling the packed kernel removes it. A packed copy remembers which weight
   tensor (and which in-place version of it) it was made from and is rebuilt when either changes; the
   engine's `update_weights` also drops it outright.

Measured together on 16 x 64 tokens at 25 M, bf16: 1.95 s -> 1.42 s (docs/PERFORMANCE.md).
"""

from __future__ import annotations

from typing import Any

import torch

from zerosearch.generation.fused_decode import fused_decoder

SDPA_GQA = "sdpa_gqa"
_registered = False


def _sdpa_gqa_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                      is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention signature. query [B, H, Sq, D]; key/value [B, KV, Sk, D] with H % KV == 0;
    attention_mask: bool [B, 1, Sq, Sk] (True = attend) or None. Returns ([B, Sq, H, D], None)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if (query.device.type != "cpu" or groups <= 1 or attention_mask is None or kwargs.get("position_bias") is not None
            or kwargs.get("cache") is not None or key.shape[-1] != value.shape[-1]):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                           dropout_p=dropout, scale=scaling, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def register_sdpa_gqa() -> None:
    """Register `sdpa_gqa` with transformers' attention and mask interfaces (idempotent). The mask is
    transformers' sdpa mask, so everything but the K/V repeat is the `sdpa` path."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(SDPA_GQA, _sdpa_gqa_forward)
    AttentionMaskInterface.register(SDPA_GQA, sdpa_mask)
    _registered = True


# model types whose eager attention computes what sdpa does (no logit soft-capping, no extra bias), so a
# model configured with eager may decode with sdpa_gqa: the families ZeroSearch trains (Qwen2.5, LLaMA-3.2)
EAGER_EQUALS_SDPA = frozenset({"qwen2", "qwen3", "llama", "mistral"})


def use_sdpa_gqa(model: torch.nn.Module) -> bool:
    """Switch a transformers model from `sdpa` (or from `eager`, for the model types of
    `EAGER_EQUALS_SDPA`) to `sdpa_gqa` in place. False (nothing changed) when the model keeps another kernel
    (flash-attention, or eager where it differs from sdpa) or cannot switch."""
    config = getattr(model, "config", None)
    current = getattr(config, "_attn_implementation", None)
    if current == SDPA_GQA:
        return True
    eager_ok = current == "eager" and getattr(config, "model_type", None) in EAGER_EQUALS_SDPA
    if (current != "sdpa" and not eager_ok) or not hasattr(model, "set_attn_implementation"):
        return False
    register_sdpa_gqa()
    try:
        model.set_attn_implementation(SDPA_GQA)
    except (ValueError, ImportError):
        return False
    return config._attn_implementation == SDPA_GQA


def packed_bf16_supported() -> bool:
    """Whether this CPU and PyTorch build run oneDNN's packed bf16 linear."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


class PackedLinear(torch.nn.Linear):
    """An `nn.Linear` whose bf16 CPU weight is kept prepacked for oneDNN. The parameters, state dict and
    results are the Linear's; the packed copy is a cache.

    The cache is rebuilt when the weight is another tensor (a reference to the packed source is kept, so its
    storage cannot be freed and reused at the same address) or was written in place (its version counter).
    A write through `.data` bumps no version: whoever writes that way calls `drop_packed_weights`, as
    `HFEngine.update_weights` does. Copies and pickles of the module leave the cache out (oneDNN's packed
    tensor has no storage to copy).
    """

    _pack_rows_hint = 16  # oneDNN's batch-size hint for choosing the layout; any row count stays correct
    _cache_attrs = ("_packed", "_packed_src", "_packed_version")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in_features] -> [..., out_features]."""
        w = self.weight
        if (w.device.type != "cpu" or w.dtype != torch.bfloat16 or x.dtype != torch.bfloat16 or not x.numel()
                or torch.is_grad_enabled() or w.is_inference()):
            return super().forward(x)
        src = getattr(self, "_packed_src", None)
        if src is None or not _same_tensor(src, w) or self._packed_version != w._version:
            self._packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), self._pack_rows_hint)
            self._packed_src, self._packed_version = w.detach(), w._version
        shape = x.shape
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self._packed, self.bias, "none", [], "")
        return y.reshape(*shape[:-1], y.shape[-1])

    def drop_packed(self) -> None:
        for name in self._cache_attrs:
            self.__dict__.pop(name, None)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        for name in self._cache_attrs:
            state.pop(name, None)
        return state


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    """The same storage, offset, shape and strides (a kept reference keeps a's storage alive, so an equal
    pointer cannot be a new allocation at a freed address)."""
    return (a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a.storage_offset() == b.storage_offset() and a.shape == b.shape and a.stride() == b.stride())


def drop_packed_weights(model: torch.nn.Module) -> None:
    """Forget every packed copy (the next call repacks), the fused decoder's included (its projections are
    outside the module tree). For writers that bypass the version counter."""
    fused = fused_decoder(model)
    for mod in [*model.modules(), *(fused.fused_linears() if fused is not None else ())]:
        if isinstance(mod, PackedLinear):
            mod.drop_packed()


def pack_linear_weights(model: torch.nn.Module) -> int:
    """Make every `nn.Linear` of a bf16 CPU model a `PackedLinear` in place; returns how many. 0 when the
    model is not bf16 on CPU or the CPU lacks oneDNN bf16 (nothing changed)."""
    params = list(model.parameters())
    if not params or params[0].device.type != "cpu" or params[0].dtype != torch.bfloat16:
        return 0
    if not packed_bf16_supported():
        return 0
    n = 0
    for mod in model.modules():
        if type(mod) is torch.nn.Linear:
            mod.__class__ = PackedLinear
            n += 1
    return n
