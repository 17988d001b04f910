"""A leaner forward for the HF engine's decoding on CPU: fused projections, one attention call per layer.

At rollout batch sizes a CPU decode step is bound by streaming the weights and by per-call overhead, not by
arithmetic: transformers' decoder layer makes seven linear calls (q, k, v, o, gate, up, down) and a dozen
Python-level steps (mask building, attention dispatch, cache bookkeeping) per layer per token. For the
families ZeroSearch trains (Qwen2.5 and LLaMA-3.2: `FUSED_DECODE_TYPES`) this module

- makes each layer's q/k/v weights (and biases) views into one [q+k+v, hidden] tensor and its gate/up
  weights views into one [2 x intermediate, hidden] tensor, so a layer does four linear calls, not seven.
  The HF modules keep their parameters (the same names, shapes and values; the state dict is unchanged), and
  a weight update that copies into them (`load_state_dict`) writes the fused tensors too;
- runs the decoder stack itself (`FusedDecoder.__call__`): the same operations as transformers' forward
  (RMSNorm, rotary embedding, grouped-query sdpa with `enable_gqa`, SiLU gate), with the attention mask
  built once per call from the 2-D padding mask.

Not bit-identical to transformers' forward in every case: a fused matmul may pick another oneDNN/MKL kernel
than the three it replaces (at one thread in bf16 the logits differ in the last bits; at two threads they
were identical). The trainer measures engine against trainer log-probs either way (`rollout/log_prob_diff`).
Measured: docs/PERFORMANCE.md, "Decoding on CPU".
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

FUSED_DECODE_TYPES = frozenset({"qwen2", "llama"})
_ATTR = "_zs_fused_decoder"


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why `enable_fused_decode` would leave this model on transformers' forward, or None when it applies."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type not in FUSED_DECODE_TYPES:
        return f"model type {model_type!r} (fused decoding covers {', '.join(sorted(FUSED_DECODE_TYPES))})"
    inner = getattr(model, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(model, "lm_head") or not hasattr(inner, "rotary_emb"):
        return "not the expected layout (model.model.layers, model.model.rotary_emb, model.lm_head)"
    if getattr(config, "hidden_act", None) != "silu":
        return f"activation {getattr(config, 'hidden_act', None)!r} (fused decoding assumes silu)"
    if getattr(config, "_attn_implementation", None) not in ("sdpa", "sdpa_gqa", "eager"):
        return f"attention {config._attn_implementation!r}"
    for layer in layers:
        a, m = layer.self_attn, layer.mlp
        if getattr(a, "sliding_window", None) is not None:
            return "sliding-window attention"
        if any(hasattr(a, n) for n in ("q_norm", "k_norm")):
            return "per-head q/k norms"
        qkv = (a.q_proj, a.k_proj, a.v_proj)
        if len({p.bias is None for p in qkv}) != 1 or len({p.bias is None for p in (m.gate_proj, m.up_proj)}) != 1:
            return "q/k/v (or gate/up) projections that differ in having a bias"
        if not all(type(p).forward is type(a.o_proj).forward for p in (*qkv, m.gate_proj, m.up_proj)):
            return "projections of mixed module types"
    return None


def _fuse(linears: list[torch.nn.Module]) -> torch.nn.Linear:
    """Re-point `linears`' weights (and biases) at row slices of one new tensor; returns a Linear of the same
    class over the whole tensor (not registered anywhere: the model's module tree is unchanged)."""
    w0 = linears[0].weight
    fused_w = torch.cat([lin.weight.detach() for lin in linears])
    fused_b = torch.cat([lin.bias.detach() for lin in linears]) if linears[0].bias is not None else None
    out = type(linears[0])(fused_w.shape[1], fused_w.shape[0], bias=fused_b is not None, device=w0.device,
                           dtype=w0.dtype)
    out.weight = torch.nn.Parameter(fused_w, requires_grad=False)
    if fused_b is not None:
        out.bias = torch.nn.Parameter(fused_b, requires_grad=False)
    start = 0
    for lin in linears:
        n = lin.weight.shape[0]
        # a Parameter over a slice shares the fused tensor's storage and version counter: an in-place write
        # to the HF module's weight (load_state_dict, an optimizer) is a write to the fused weight
        lin.weight = torch.nn.Parameter(fused_w[start:start + n], requires_grad=lin.weight.requires_grad)
        if fused_b is not None:
            lin.bias = torch.nn.Parameter(fused_b[start:start + n], requires_grad=lin.bias.requires_grad)
        start += n
    return out


class FusedDecoder:
    """The decoder stack of a Qwen2/LLaMA causal LM over fused projections, called like the model for the
    sampler's inputs and returning the last position's logits.

    Not an nn.Module on purpose: held as a plain attribute of the model, it adds nothing to the model's
    module tree, parameters or state dict.
    """

    def __init__(self, model: torch.nn.Module):
        self.model = model
        layers = _layers(model)
        self.qkv = [_fuse([l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj]) for l in layers]
        self.gate_up = [_fuse([l.mlp.gate_proj, l.mlp.up_proj]) for l in layers]
        # every re-pointed weight and bias, with the address it must keep: `intact` compares them all
        self._views = [(lin, name, getattr(lin, name).data_ptr())
                       for l in layers
                       for lin in (l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.mlp.gate_proj,
                                   l.mlp.up_proj)
                       for name in ("weight", "bias") if getattr(lin, name) is not None]
        self.splits = [(l.self_attn.q_proj.weight.shape[0], l.self_attn.k_proj.weight.shape[0]) for l in layers]
        # the modeling module's own rotary application (LLaMA-3 rope scaling lives in rotary_emb's cos/sin)
        self._rotary = sys.modules[type(layers[0].self_attn).__module__].apply_rotary_pos_emb
        self.fallbacks = 0  # calls that went to transformers' forward because `intact()` was false

    def fused_linears(self) -> list[torch.nn.Linear]:
        return self.qkv + self.gate_up

    def intact(self) -> bool:
        """Whether every re-pointed HF weight and bias still lives where it did in the fused tensors. False
        after something replaced one (`model.to(...)`, a deep copy, a new Parameter, an assignment to
        `.data`) or when the model is in training mode (this forward has no dropout): the sampler then falls
        back to transformers' forward rather than decode with weights the model no longer has."""
        if self.model.training:
            return False
        return all(getattr(lin, name) is not None and getattr(lin, name).data_ptr() == ptr
                   for lin, name, ptr in self._views)

    def note_fallback(self) -> None:
        """Count a call sent to transformers' forward, and say so once: correct, but the speed is lost."""
        self.fallbacks += 1
        if self.fallbacks == 1:
            logger.warning("rollout.cpu_decode_kernels: the fused decoder is off for this model from now on (%s); "
                           "decoding through transformers' forward, the same tokens, slower",
                           "the model is in training mode" if self.model.training else
                           "a fused weight or bias was replaced after fusing, e.g. by model.to() or a new Parameter")

    @torch.no_grad()
    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                 past_key_values: Any, **_: Any) -> torch.Tensor:
        """input_ids [B, S] (the new tokens), attention_mask [B, P + S] (1 = a real token, over the cached P
        positions and the new ones), position_ids [B, S], past_key_values a DynamicCache (updated in place).
        Returns the last position's logits [B, vocab]."""
        inner = self.model.model
        h = inner.embed_tokens(input_ids)  # [B, S, hidden]
        b, s = input_ids.shape
        cos, sin = inner.rotary_emb(h, position_ids)
        mask = _attention_mask(attention_mask, s)
        for i, layer in enumerate(_layers(self.model)):
            attn, mlp = layer.self_attn, layer.mlp
            nq, nk = self.splits[i]
            x = layer.input_layernorm(h)
            qkv = self.qkv[i](x)  # [B, S, q + 2 kv]
            q = qkv[..., :nq].view(b, s, -1, attn.head_dim).transpose(1, 2)  # [B, H, S, D]
            k = qkv[..., nq:nq + nk].view(b, s, -1, attn.head_dim).transpose(1, 2)  # [B, KV, S, D]
            v = qkv[..., nq + nk:].view(b, s, -1, attn.head_dim).transpose(1, 2)
            q, k = self._rotary(q, k, cos, sin)
            k, v = past_key_values.update(k, v, attn.layer_idx)  # [B, KV, P + S, D]
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=attn.scaling,
                                               enable_gqa=k.shape[1] != q.shape[1])
            h = h + attn.o_proj(o.transpose(1, 2).reshape(b, s, -1))
            x = layer.post_attention_layernorm(h)
            gu = self.gate_up[i](x)  # [B, S, 2 x intermediate]
            half = gu.shape[-1] // 2
            h = h + mlp.down_proj(mlp.act_fn(gu[..., :half]) * gu[..., half:])
        return self.model.lm_head(inner.norm(h[:, -1:]))[:, -1]


def _layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The decoder layers transformers' forward runs: the first `config.num_hidden_layers`."""
    return list(model.model.layers[:model.config.num_hidden_layers])


def _attention_mask(padding: torch.Tensor, s: int) -> torch.Tensor:
    """bool [B, 1, S, P + S] (True = attend) from the 2-D padding mask [B, P + S] for S new positions:
    causal over the new positions, no padded key. A padded query position (left padding) attends to itself
    alone, so no row of the softmax is empty (its output is never used)."""
    keep = padding.bool()
    if s == 1:
        return keep[:, None, None, :]
    total = keep.shape[1]
    key = torch.arange(total, device=keep.device)[None, :]
    query = (total - s + torch.arange(s, device=keep.device))[:, None]
    mask = ((key <= query)[None] & keep[:, None, :]) | (key == query)[None]
    return mask[:, None]


def enable_fused_decode(model: torch.nn.Module) -> FusedDecoder | None:
    """Fuse the projections of a supported model in place and attach the decoder (the sampler then calls
    it: `fused_decoder`). Idempotent. None (nothing changed) when `unsupported_reason` names a reason."""
    existing = fused_decoder(model)
    if existing is not None:
        return existing
    if unsupported_reason(model) is not None:
        return None
    decoder = FusedDecoder(model)
    object.__setattr__(model, _ATTR, decoder)  # a plain attribute, past nn.Module's registration
    return decoder


def fused_decoder(model: torch.nn.Module) -> FusedDecoder | None:
    """The decoder `enable_fused_decode` attached to `model`, if any."""
    return model.__dict__.get(_ATTR)


def disable_fused_decode(model: torch.nn.Module) -> None:
    """Detach the fused decoder: the sampler goes back to transformers' forward. The weights stay views of
    the fused tensors, which changes nothing for transformers."""
    model.__dict__.pop(_ATTR, None)
