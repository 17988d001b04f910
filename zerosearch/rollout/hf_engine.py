"""A generation engine on plain transformers: batched KV-cache decoding in token space.

Why not `model.generate`: a rollout needs the sampled ids *and* their log-probs, stop strings that end a
sequence mid-batch, a per-sequence token cap (the context budget differs per trajectory) and weights
shared with the trainer. A direct loop over `model(...)` with a `DynamicCache` does all of that, and
drops finished sequences from the batch as it goes (the cache is compacted), which matters when most
trajectories stop early at `</search>`.

Works on CPU and GPU; colocated with a trainer it decodes with the trainer's module directly.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F

from zerosearch.rollout.types import GenerationEngine, GenerationOutput, SamplingParams


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick the next token of every row.

    Args:
        logits: (batch, vocab) float logits of the next position.
    Returns:
        ids (batch,) and their log-probs (batch,) under softmax(logits / T) *before* top-k/top-p filtering
        (T = 1 when greedy): the distribution the trainer recomputes from the same logits.
    """
    logits = logits.float()
    if params.greedy:
        logp = F.log_softmax(logits, dim=-1)
        ids = logp.argmax(dim=-1)
        return ids, logp.gather(-1, ids[:, None]).squeeze(-1)
    scaled = logits / params.temperature
    logp = F.log_softmax(scaled, dim=-1)
    filtered = scaled
    if params.top_k > 0 and params.top_k < filtered.shape[-1]:
        kth = torch.topk(filtered, params.top_k, dim=-1).values[:, -1:]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(filtered, dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        # drop a token when the mass *before* it already reaches top_p (the first token always stays)
        drop_sorted = (cum - sorted_logits.softmax(-1)) >= params.top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        filtered = filtered.masked_fill(drop, float("-inf"))
    probs = filtered.softmax(-1)
    ids = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
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


class HFEngine(GenerationEngine):
    """Batched sampling with a KV cache on a transformers causal LM.

    Args:
        model: a causal LM module (e.g. the trainer's unsharded rollout copy) in eval mode.
        tokenizer: its tokenizer (for stop strings and padding).
        micro_batch_size: sequences decoded together; larger batches are split.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, micro_batch_size: int = 256):
        self.model = model
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._stop_checkers: dict[tuple[str, ...], StopChecker] = {}
        self._generator: torch.Generator | None = None

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        micro_batch_size: int = 256, attn_implementation: str = "sdpa") -> "HFEngine":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
        return cls(model.to(device).eval(), tok, micro_batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Copy a full state dict into the engine's module in place (keys as the HF model's)."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {k for k in missing if k.endswith("lm_head.weight")} if getattr(
            self.model.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise ValueError(f"weight update does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None) -> list[GenerationOutput]:
        if max_new_tokens is not None and len(max_new_tokens) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(max_new_tokens)} entries for {len(prompts)} prompts")
        caps = [min(params.max_new_tokens, c) for c in max_new_tokens] if max_new_tokens is not None else [
            params.max_new_tokens] * len(prompts)
        gen = None
        if not params.greedy:
            gen = torch.Generator(device="cpu")
            if params.seed is not None:
                gen.manual_seed(params.seed)
            else:
                if self._generator is None:
                    self._generator = torch.Generator(device="cpu")
                    self._generator.seed()
                gen = self._generator
        # longest prompts first keeps micro-batches similar in length (less padding)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        results: list[GenerationOutput | None] = [None] * len(prompts)
        for s in range(0, len(order), self.micro_batch_size):
            idx = order[s:s + self.micro_batch_size]
            outs = self._generate_batch([list(prompts[i]) for i in idx], params, [caps[i] for i in idx], gen)
            for i, o in zip(idx, outs):
                results[i] = o
        return results  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, caps: list[int],
                        gen: torch.Generator | None) -> list[GenerationOutput]:
        from transformers import DynamicCache

        dev = self.device
        B = len(prompts)
        outs = [GenerationOutput([], [], "length") for _ in range(B)]
        live = [i for i in range(B) if caps[i] > 0]
        if not live:
            return outs
        stops = self._stop_checkers.setdefault(params.stop_strings, StopChecker(self.tokenizer, params.stop_strings))
        stop_ids = set(params.stop_token_ids)
        L = max(len(p) for p in prompts)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, L), dtype=torch.long)
        for i, p in enumerate(prompts):
            if p:
                input_ids[i, L - len(p):] = torch.tensor(p)
                attn[i, L - len(p):] = 1
        input_ids, attn = input_ids.to(dev), attn.to(dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        logits = self.model(input_ids=input_ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                            use_cache=True).logits[:, -1, :]
        cur_pos = pos[:, -1]
        rows = torch.arange(B, device=dev)  # batch slot -> original row
        alive = torch.ones(B, dtype=torch.bool)
        for i in range(B):
            if caps[i] <= 0:
                alive[i] = False
        for _step in range(max(caps)):
            ids, logp = sample_next(logits, params, gen)
            ids_l, logp_l = ids.tolist(), logp.tolist()
            for slot, row in enumerate(rows.tolist()):
                if not alive[slot]:
                    continue
                o = outs[row]
                o.token_ids.append(ids_l[slot])
                o.log_probs.append(logp_l[slot])
                if ids_l[slot] in stop_ids:
                    o.finish_reason, o.stop = "stop", self.tokenizer.decode([ids_l[slot]])
                    alive[slot] = False
                elif (hit := stops.check(o.token_ids)) is not None:
                    o.finish_reason, o.stop = "stop", hit
                    alive[slot] = False
                elif len(o.token_ids) >= caps[row]:
                    alive[slot] = False
            if not alive.any():
                break
            keep = alive.nonzero().squeeze(-1)
            if len(keep) < len(rows) * 0.75:  # compact: drop finished rows from the batch and the cache
                idx = keep.to(dev)
                cache.batch_select_indices(idx)
                attn, cur_pos, rows, ids = attn[idx], cur_pos[idx], rows[idx], ids[idx]
                alive = torch.ones(len(keep), dtype=torch.bool)
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
            cur_pos = cur_pos + 1
            logits = self.model(input_ids=ids[:, None].to(dev), attention_mask=attn, position_ids=cur_pos[:, None],
                                past_key_values=cache, use_cache=True).logits[:, -1, :]
        return outs
