"""Batched KV-cache sampling on a transformers causal LM, in token space.

Why not `model.generate`: rollouts need the sampled ids *and* their log-probs, stop strings that end a
sequence mid-batch, a per-sequence token cap (the context budget differs per trajectory), and sampling
that does not depend on which other sequences share the batch. A direct loop over `model(...)` with a
`DynamicCache` does all of that, and drops finished sequences from the batch as it goes (the cache is
compacted), which matters when most trajectories stop early at `</search>`.

Used by the rollout's HF engine (zerosearch.generation.hf_engine) and the in-process simulation LLM
(zerosearch.search.sim_transports), so both sample the same way.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from zerosearch.generation.types import GenerationOutput


def filter_logits(scaled: torch.Tensor, top_p: float, top_k: int) -> torch.Tensor:
    """Top-k then nucleus filtering of (batch, vocab) temperature-scaled logits (-inf outside)."""
    filtered = scaled
    if 0 < top_k < filtered.shape[-1]:
        kth = torch.topk(filtered, top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass *before* it already reaches top_p (the first token always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    return filtered


def sample_next(logits: torch.Tensor, temperature: float, top_p: float = 1.0, top_k: int = -1,
                uniforms: torch.Tensor | None = None, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token of every row.

    Args:
        logits: (batch, vocab) logits of the next position.
        temperature: 0 = greedy.
        uniforms: (batch,) one uniform number per row (per-row seeded sampling by inverse CDF); when None,
            `torch.multinomial` with `generator` is used.
    Returns:
        ids (batch,) and their log-probs (batch,) under softmax(logits / T) *before* top-k/top-p filtering
        (T = 1 when greedy): the distribution the trainer recomputes from the same logits.
    """
    logits = logits.float()
    if temperature <= 0:
        logp = F.log_softmax(logits, dim=-1)
        ids = logp.argmax(dim=-1)
        return ids, logp.gather(-1, ids[:, None]).squeeze(-1)
    scaled = logits / temperature
    logp = F.log_softmax(scaled, dim=-1)
    probs = filter_logits(scaled, top_p, top_k).softmax(-1)
    if uniforms is None:
        ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    else:
        cdf = probs.cumsum(-1)
        ids = (cdf < uniforms.to(cdf)[:, None] * cdf[:, -1:]).sum(-1).clamp(max=probs.shape[-1] - 1)
        # never land on a filtered-out token (a zero-probability step of the CDF)
        bad = probs.gather(-1, ids[:, None]).squeeze(-1) <= 0
        if bad.any():
            ids[bad] = probs[bad].argmax(-1)
    return ids, logp.gather(-1, ids[:, None]).squeeze(-1)


class StopChecker:
    """Decides, per row, whether newly generated text completed a stop string.

    Decoding every row at every step would dominate at small model sizes, so a row is only decoded when
    its newest token's text contains the last character of some stop string (precomputed per id).
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]):
        self.tokenizer = tokenizer
        self.stop_strings = tuple(s for s in stop_strings if s)
        self._last_chars = {s[-1] for s in self.stop_strings}
        self._may_end: dict[int, bool] = {}
        self._window = max((len(s) for s in self.stop_strings), default=0) + 4  # tokens >= 1 char each

    def _token_may_end(self, token_id: int) -> bool:
        hit = self._may_end.get(token_id)
        if hit is None:
            text = self.tokenizer.decode([token_id])
            hit = self._may_end[token_id] = any(c in text for c in self._last_chars)
        return hit

    def check(self, ids: list[int]) -> str | None:
        """The stop string that the last token completed, or None."""
        if not self.stop_strings or not self._token_may_end(ids[-1]):
            return None
        # same window start for both, so an occurrence counted only in `tail` ends in the newest token
        tail = self.tokenizer.decode(ids[-self._window:])
        before = self.tokenizer.decode(ids[-self._window:-1])
        for s in self.stop_strings:
            if tail.count(s) > before.count(s):
                return s
        return None


@torch.no_grad()
def sample_batch(model: torch.nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], caps: Sequence[int], *,
                 temperature: float, top_p: float = 1.0, top_k: int = -1, stop_token_ids: Sequence[int] = (),
                 stop_checker: StopChecker | None = None, row_seeds: Sequence[int] | None = None,
                 generator: torch.Generator | None = None, pad_id: int = 0) -> list[GenerationOutput]:
    """Continue every prompt by up to caps[i] tokens, with a shared KV cache and left padding.

    Args:
        prompts: token ids per row.
        caps: max new tokens per row (0 = nothing generated).
        row_seeds: one seed per row: each row draws from its own generator, so its sample does not depend
            on the batch it shares (a resumed run or a different batching draws the same). None = one
            `generator` for the batch.
    """
    dev = next(model.parameters()).device
    B = len(prompts)
    outs = [GenerationOutput() for _ in range(B)]
    if not B or max(caps, default=0) <= 0:
        return outs
    gens = None
    if row_seeds is not None and temperature > 0:
        gens = [torch.Generator().manual_seed(int(s) & 0x7FFF_FFFF_FFFF_FFFF) for s in row_seeds]
    stop_ids = set(stop_token_ids)
    L = max(len(p) for p in prompts)
    input_ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    for i, p in enumerate(prompts):
        if p:
            input_ids[i, L - len(p):] = torch.tensor(list(p))
            attn[i, L - len(p):] = 1
    input_ids, attn = input_ids.to(dev), attn.to(dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    from transformers import DynamicCache

    cache = DynamicCache()
    logits = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                   use_cache=True).logits[:, -1, :]
    cur_pos = pos[:, -1]
    rows = list(range(B))  # batch slot -> original row
    alive = [caps[i] > 0 for i in range(B)]
    for _step in range(max(caps)):
        uniforms = torch.stack([torch.rand((), generator=gens[r]) for r in rows]) if gens is not None else None
        ids, logp = sample_next(logits, temperature, top_p, top_k, uniforms, generator)
        ids_l, logp_l = ids.tolist(), logp.tolist()
        for slot, row in enumerate(rows):
            if not alive[slot]:
                continue
            o = outs[row]
            o.token_ids.append(ids_l[slot])
            o.log_probs.append(logp_l[slot])
            if ids_l[slot] in stop_ids:
                o.finish_reason, o.stop = "stop", tokenizer.decode([ids_l[slot]])
                alive[slot] = False
            elif stop_checker is not None and (hit := stop_checker.check(o.token_ids)) is not None:
                o.finish_reason, o.stop = "stop", hit
                alive[slot] = False
            elif len(o.token_ids) >= caps[row]:
                alive[slot] = False
        if not any(alive):
            break
        keep = [s for s, a in enumerate(alive) if a]
        if len(keep) < len(rows) * 0.75:  # compact: drop finished rows from the batch and the cache
            idx = torch.tensor(keep, device=dev)
            cache.batch_select_indices(idx)
            attn, cur_pos, ids = attn[idx], cur_pos[idx], ids[idx]
            rows = [rows[s] for s in keep]
            alive = [True] * len(keep)
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
        cur_pos = cur_pos + 1
        logits = model(input_ids=ids[:, None].to(dev), attention_mask=attn, position_ids=cur_pos[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1, :]
    return outs
