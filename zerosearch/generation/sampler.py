"""Batched KV-cache sampling on a transformers causal LM, in token space.

Why not `model.generate`: rollouts need the sampled ids *and* their log-probs, stop strings that end a
sequence mid-batch, a per-sequence token cap (the context budget differs per trajectory), and sampling
that does not depend on which other sequences share the batch. A direct loop over `model(...)` with a
KV cache (`kv_cache.GrowingCache`: a `DynamicCache` that appends in place) does all of that, and drops
finished sequences from the batch as it goes (the cache is compacted), which matters when most
trajectories stop early at `</search>`.

Used by the rollout's HF engine (zerosearch.generation.hf_engine) and the in-process simulation LLM
(zerosearch.search.sim_transports), so both sample the same way.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from zerosearch.generation.fused_decode import fused_decoder
from zerosearch.generation.types import GenerationOutput, GenerationStream


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


@functools.lru_cache(maxsize=None)
def _accepts_logits_to_keep(model_class: type) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model_class.forward).parameters
    except (TypeError, ValueError):
        return False


def _next_logits(model: torch.nn.Module, **inputs: Any) -> torch.Tensor:
    """The model's logits at the last position of each row, [B, vocab]. Asks for that position alone where
    the model can (`logits_to_keep=1`): a prefill's full logits are B x L x vocab (at a 152k vocabulary,
    64 rows of 600 tokens would be 11 GB in bf16). A model with a fused decoder attached
    (`generation.fused_decode`, the HF engine on CPU) is run through it."""
    fused = fused_decoder(model)
    if fused is not None:
        if fused.intact():
            return fused(**inputs)
        fused.note_fallback()
    if _accepts_logits_to_keep(type(model)):
        inputs["logits_to_keep"] = 1
    return model(**inputs).logits[:, -1, :]


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
    from zerosearch.generation.kv_cache import GrowingCache

    cache = GrowingCache()
    logits = _next_logits(model, input_ids=input_ids, attention_mask=attn, position_ids=pos, past_key_values=cache,
                          use_cache=True)
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
        logits = _next_logits(model, input_ids=ids[:, None].to(dev), attention_mask=attn,
                              position_ids=cur_pos[:, None], past_key_values=cache, use_cache=True)
    return outs


@dataclass
class _Row:
    """A running sequence: its key, output so far, token cap, row generator, and the prompt it joined with."""

    key: Any
    out: GenerationOutput
    cap: int
    gen: torch.Generator | None
    prompt: list[int]


class ContinuousBatch(GenerationStream):
    """Continuous batching over the same KV-cache sampler: sequences join and leave between decode steps.

    `sample_batch` serves a fixed set of rows: every row of a call waits for the call's longest. Here each
    `step()` decodes one token for every running sequence, returns the ones that finished (they leave the
    batch and the cache at once), and admits the sequences `add`ed since the last step (one prefill for
    all of them, merged into the running cache). With row seeds a sequence draws exactly the uniforms it
    would draw in `sample_batch`, so its ids match the batched sampler's (log-probs to float round-off:
    the padding around it, and with KV reuse how its cache was computed, differ).

    KV reuse (`reuse_kv`): a multi-turn trajectory comes back under the same key with its previous context,
    the turn it generated and an observation. A finished sequence's cache rows are kept (parked) under its
    key, and when the key is added again with a prompt that extends the parked context, only the new tokens
    are prefilled against it; otherwise the whole prompt is. Parked caches live until the key returns or
    the stream closes.

    Admission: a prefill is a forward pass of its own, so joining one sequence at a time would cost a forward
    per arrival. Queued sequences join when nothing is running, when they number at least `admit_share` of
    the running batch, or when the oldest has waited `admit_wait_steps` steps (a sequence that waits still
    draws the same tokens: only its start moves).

    Cache layout: (B, T) attention mask over (B, heads, T, head_dim) keys and values; every running row ends
    at the newest column. Rows are padded on the left, and a row that reused a parked cache also between its
    parked part and its new tokens (the mask hides those columns; positions are passed per row). Merging pads
    the shorter side on the left, and columns that are padding in every row are trimmed when rows leave.

    Args:
        max_batch: running sequences at most (the HF engine's micro-batch size); more wait in the queue.
        max_new_tokens: a cap on every sequence, over the one passed to `add` (the stream's sampling params).
        admit_share, admit_wait_steps: the admission rule above (0 / 0: admit at every step).
        reuse_kv: keep finished sequences' caches for their next turn.
        (the rest as `sample_batch`)
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, temperature: float, top_p: float = 1.0,
                 top_k: int = -1, stop_token_ids: Sequence[int] = (), stop_checker: StopChecker | None = None,
                 generator: torch.Generator | None = None, pad_id: int = 0, max_batch: int = 256,
                 max_new_tokens: int | None = None, admit_share: float = 0.25, admit_wait_steps: int = 4,
                 reuse_kv: bool = True):
        if max_batch < 1:
            raise ValueError(f"max_batch={max_batch}: must be >= 1")
        self.max_batch, self.cap = max_batch, max_new_tokens
        self.admit_share, self.admit_wait_steps, self.reuse_kv = admit_share, admit_wait_steps, reuse_kv
        self.steps = self.prefills = 0  # decode steps and admission prefills so far
        self.prefill_tokens = self.reused_tokens = 0  # tokens prefilled, and prompt tokens served from parked caches
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.stop_ids = set(stop_token_ids)
        self.stop_checker, self.generator, self.pad_id = stop_checker, generator, pad_id
        self.dev = next(model.parameters()).device
        self._rows: list[_Row] = []  # running, in cache order
        self._pending: list[_Row] = []
        self._pending_since: list[int] = []  # the step count when each queued sequence was added
        self._done: list[tuple[Any, GenerationOutput]] = []
        # key -> (the context ids its cache covers, per layer (keys, values) of shape (heads, len, head_dim))
        self._parked: dict[Any, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self._cache: Any = None
        self._attn = self._pos = self._logits = None  # (B, T), (B,), (B, V)

    def add(self, key: Any, prompt: Sequence[int], max_new_tokens: int, seed: int | None = None) -> None:
        """Queue a sequence; it joins the batch at the next `step()` (a cap <= 0 returns it empty)."""
        if self.cap is not None:
            max_new_tokens = min(max_new_tokens, self.cap)
        if max_new_tokens <= 0 or not prompt:
            self._parked.pop(key, None)
            self._done.append((key, GenerationOutput()))
            return
        gen = None
        if seed is not None and self.temperature > 0:
            gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        self._pending.append(_Row(key, GenerationOutput(), max_new_tokens, gen, list(prompt)))
        self._pending_since.append(self.steps)

    @property
    def active(self) -> int:
        """Sequences running or waiting to join."""
        return len(self._rows) + len(self._pending) + len(self._done)

    @torch.no_grad()
    def step(self) -> list[tuple[Any, GenerationOutput]]:
        """Sample one token for every running sequence, admit the queued ones; returns the finished ones."""
        done, self._done = self._done, []
        if self._rows:
            done += self._decode()
            self.steps += 1
        if self._pending and len(self._rows) < self.max_batch and (
                not self._rows or len(self._pending) >= self.admit_share * len(self._rows)
                or self.steps - self._pending_since[0] >= self.admit_wait_steps):
            self._admit()
        return done

    def close(self) -> None:
        self._rows, self._pending, self._pending_since, self._done = [], [], [], []
        self._parked = {}
        self._cache = self._attn = self._pos = self._logits = None

    def _decode(self) -> list[tuple[Any, GenerationOutput]]:
        gens = [r.gen for r in self._rows]
        uniforms = None
        if all(g is not None for g in gens):
            uniforms = torch.stack([torch.rand((), generator=g) for g in gens])
        ids, logp = sample_next(self._logits, self.temperature, self.top_p, self.top_k, uniforms, self.generator)
        ids_l, logp_l = ids.tolist(), logp.tolist()
        finished, keep = [], []
        for slot, r in enumerate(self._rows):
            o = r.out
            o.token_ids.append(ids_l[slot])
            o.log_probs.append(logp_l[slot])
            if ids_l[slot] in self.stop_ids:
                o.finish_reason, o.stop = "stop", self.tokenizer.decode([ids_l[slot]])
            elif self.stop_checker is not None and (hit := self.stop_checker.check(o.token_ids)) is not None:
                o.finish_reason, o.stop = "stop", hit
            elif len(o.token_ids) < r.cap:
                keep.append(slot)
                continue
            finished.append((r.key, o))
            if self.reuse_kv:
                self._park(slot, r)
        if len(keep) < len(self._rows):
            self._select(keep)
            ids = ids[keep] if keep else ids[:0]
        if keep:
            self._attn = torch.cat([self._attn, self._attn.new_ones((len(keep), 1))], dim=1)
            self._pos = self._pos + 1
            self._logits = _next_logits(self.model, input_ids=ids[:, None].to(self.dev), attention_mask=self._attn,
                                        position_ids=self._pos[:, None], past_key_values=self._cache,
                                        use_cache=True)
        return finished

    def _park(self, slot: int, r: _Row) -> None:
        """Keep a finished row's cache: it covers its prompt and every generated token but the last (which
        was sampled, never fed)."""
        covered = r.prompt + r.out.token_ids[:-1]
        cols = self._attn[slot].nonzero().squeeze(-1)
        if len(cols) != len(covered):  # cannot happen; a mismatch would reuse the wrong rows, so never park it
            return
        self._parked[r.key] = (covered, [(layer.keys[slot][:, cols], layer.values[slot][:, cols])
                                         for layer in self._cache.layers])

    def _select(self, keep: list[int]) -> None:
        """Drop finished rows from the batch and the cache, then the left columns no row attends to."""
        self._rows = [self._rows[s] for s in keep]
        if not keep:
            self._cache = self._attn = self._pos = self._logits = None
            return
        idx = torch.tensor(keep, device=self.dev)
        self._cache.batch_select_indices(idx)
        self._attn, self._pos, self._logits = self._attn[idx], self._pos[idx], self._logits[idx]
        first = int(self._attn.any(dim=0).nonzero()[0])
        if first > 0:
            self._attn = self._attn[:, first:]
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]

    def _admit(self) -> None:
        """Prefill the queued sequences together (only their new tokens where a parked cache covers the
        rest) and merge them into the running batch."""
        from zerosearch.generation.kv_cache import GrowingCache

        room = self.max_batch - len(self._rows)
        new, self._pending = self._pending[:room], self._pending[room:]
        self._pending_since = self._pending_since[room:]
        self.prefills += 1
        pasts: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = []
        suffixes: list[list[int]] = []
        for r in new:
            parked = self._parked.pop(r.key, None)
            if parked is not None and len(r.prompt) > len(parked[0]) and r.prompt[:len(parked[0])] == parked[0]:
                pasts.append(parked[1])
                suffixes.append(r.prompt[len(parked[0]):])
            else:
                pasts.append(None)
                suffixes.append(r.prompt)
        lens = [0 if p is None else p[0][0].shape[1] for p in pasts]
        P, S, B = max(lens), max(len(x) for x in suffixes), len(new)
        self.prefill_tokens += sum(len(x) for x in suffixes)
        self.reused_tokens += sum(lens)
        input_ids = torch.full((B, S), self.pad_id, dtype=torch.long)
        attn = torch.zeros((B, P + S), dtype=torch.long)
        pos = torch.zeros((B, S), dtype=torch.long)
        for i, (suf, n) in enumerate(zip(suffixes, lens)):
            input_ids[i, S - len(suf):] = torch.tensor(suf)
            attn[i, P - n:P] = 1
            attn[i, P + S - len(suf):] = 1
            pos[i, S - len(suf):] = torch.arange(n, n + len(suf))
        input_ids, attn, pos = input_ids.to(self.dev), attn.to(self.dev), pos.to(self.dev)
        cache = GrowingCache()
        if P > 0:  # the parked caches, left-padded to one length
            ref = next(p for p in pasts if p is not None)
            layers = []
            for li, (k0, v0) in enumerate(ref):
                k = k0.new_zeros((B, k0.shape[0], P, k0.shape[2]))
                v = v0.new_zeros((B, v0.shape[0], P, v0.shape[2]))
                for i, p in enumerate(pasts):
                    if p is not None:
                        k[i, :, P - lens[i]:], v[i, :, P - lens[i]:] = p[li]
                layers.append((k, v))
            cache = GrowingCache(layers)
        logits = _next_logits(self.model, input_ids=input_ids, attention_mask=attn, position_ids=pos,
                              past_key_values=cache, use_cache=True)
        last_pos = pos[:, -1]
        if not self._rows:
            self._cache, self._attn, self._pos, self._logits, self._rows = cache, attn, last_pos, logits, new
            return
        T = max(self._attn.shape[1], attn.shape[1])
        for old_layer, new_layer in zip(self._cache.layers, cache.layers):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, T), _left_pad(new_layer.keys, T)])
            old_layer.values = torch.cat([_left_pad(old_layer.values, T), _left_pad(new_layer.values, T)])
        self._attn = torch.cat([_left_pad(self._attn, T, dim=1), _left_pad(attn, T, dim=1)])
        self._pos = torch.cat([self._pos, last_pos])
        self._logits = torch.cat([self._logits, logits.to(self._logits.dtype)])
        self._rows += new


def _left_pad(x: torch.Tensor, length: int, dim: int = 2) -> torch.Tensor:
    """Zero-pad x on the left of `dim` to `length` (KV caches: (B, heads, T, head_dim); masks: (B, T))."""
    missing = length - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)
