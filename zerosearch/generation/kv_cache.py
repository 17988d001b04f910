"""A KV cache that appends in place: `GrowingCache`, transformers' `DynamicCache` without the copy per step.

`DynamicCache` grows each layer's keys and values with `torch.cat` at every decode step, copying the whole
cache of the batch (at 25 M parameters, batch 16, bf16 on CPU: 16 copies of about 0.8 MB a step, a tenth
of the decode time). `GrowingLayer` keeps spare room at the end of the sequence axis and writes each new
token into it; capacity grows geometrically, so a sequence of n tokens is copied O(log n) times.

What callers see is unchanged: `layer.keys` / `layer.values` are [batch, kv_heads, length, head_dim] (views
of the first `length` positions of the buffer), and assigning them (as `batch_select_indices`, `crop`, or
the continuous batcher's merges do) adopts the assigned tensor. A write only ever goes past the end of
every view handed out, so a view taken earlier (a parked cache, an attention input) never changes.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowingLayer(DynamicLayer):
    """One layer's keys and values with spare capacity on the sequence axis (dim -2)."""

    _layer_type = None  # keeps transformers from registering this class for config-built caches
    min_spare = 64  # positions reserved beyond the current length at each reallocation

    def __init__(self, **kwargs):
        self._bufs: dict[str, torch.Tensor | None] = {"keys": None, "values": None}
        self._lens = {"keys": 0, "values": 0}
        super().__init__(**kwargs)

    def _get(self, name: str) -> torch.Tensor | None:
        buf = self._bufs[name]
        if buf is None or buf.dim() != 4:
            return buf
        return buf[:, :, :self._lens[name]]

    def _set(self, name: str, t: torch.Tensor | None) -> None:
        # adopt as is: capacity = its length, so the next append reallocates rather than writing into memory
        # the assigned tensor may share with someone else
        self._bufs[name] = t
        self._lens[name] = t.shape[-2] if t is not None and t.dim() == 4 else 0

    keys = property(lambda self: self._get("keys"), lambda self, t: self._set("keys", t))
    values = property(lambda self: self._get("values"), lambda self, t: self._set("values", t))

    def _append(self, name: str, new: torch.Tensor) -> torch.Tensor:
        """new [B, KV, t, D] appended; returns the view of all positions so far."""
        buf, n, t = self._bufs[name], self._lens[name], new.shape[-2]
        fits = (buf is not None and buf.dim() == 4 and buf.shape[-2] >= n + t and buf.shape[:2] == new.shape[:2]
                and buf.shape[-1] == new.shape[-1] and buf.dtype == new.dtype)
        if not fits:
            if n and (buf.shape[:2] != new.shape[:2] or buf.shape[-1] != new.shape[-1]):
                raise ValueError(f"cache {name} of shape {tuple(buf.shape[:2])}x{n}x{buf.shape[-1]} cannot take "
                                 f"states of shape {tuple(new.shape)} (batch, heads or head size differ)")
            cap = n + t + max(self.min_spare, (n + t) // 2)
            grown = new.new_empty((*new.shape[:2], cap, new.shape[-1]))
            if n:
                grown[:, :, :n].copy_(buf[:, :, :n])
            buf = self._bufs[name] = grown
        buf[:, :, n:n + t].copy_(new)
        self._lens[name] = n + t
        return buf[:, :, :n + t]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """key_states / value_states [B, KV, t, D]; returns all keys and values so far, [B, KV, n + t, D]."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        return self._append("keys", key_states), self._append("values", value_states)


class GrowingCache(DynamicCache):
    """`DynamicCache` whose layers are `GrowingLayer`s. `GrowingCache(layers=[(keys, values), ...])` starts
    from existing per-layer tensors [B, KV, len, D]."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        super().__init__()
        self.layer_class_to_replicate = GrowingLayer
        for idx, (k, v) in enumerate(layers or ()):
            self.update(k, v, idx)
