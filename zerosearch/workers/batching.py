"""Micro-batching and the response-side forward passes shared by actor, reference and critic.

A batch is a dict of tensors laid out as zerosearch.rollout.collate builds it: `input_ids`,
`attention_mask`, `position_ids` (B, P+R), `responses` and `response_mask` (B, R), plus per-token
tensors the trainer adds (`old_log_prob`, `ref_log_prob`, `advantages`, `values`, `returns`: (B, R)).
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import nn

Batch = dict[str, torch.Tensor]


def batch_size(batch: Batch) -> int:
    return int(batch["responses"].shape[0])


def select(batch: Batch, idx: torch.Tensor | slice) -> Batch:
    return {k: v[idx] for k, v in batch.items()}


def split_fixed(batch: Batch, size: int) -> list[Batch]:
    """Consecutive chunks of `size` rows (the last may be smaller)."""
    n = batch_size(batch)
    return [select(batch, slice(i, i + size)) for i in range(0, n, size)]


def token_groups(batch: Batch, max_tokens: int, min_groups: int = 1) -> list[torch.Tensor]:
    """Row indices of the dynamic micro-batches (each sorted ascending).

    Rows are packed longest first while rows x longest row <= max_tokens; a single row longer than
    max_tokens gets a micro-batch of its own. With `min_groups`, the largest groups are halved until there
    are that many: FSDP ranks must run the same number of forward passes (each one all-gathers
    parameters), so every rank asks for the most groups any rank needs (`same_count_token_groups`).
    """
    lengths = batch["attention_mask"].sum(-1)
    order = torch.argsort(lengths, descending=True, stable=True)
    groups: list[list[int]] = []
    cur: list[int] = []
    cur_max = 0
    for i in order.tolist():
        L = int(lengths[i])
        if cur and max(cur_max, L) * (len(cur) + 1) > max_tokens:
            groups.append(cur)
            cur, cur_max = [], 0
        cur.append(i)
        cur_max = max(cur_max, L)
    if cur:
        groups.append(cur)
    if min_groups > len(order):
        raise ValueError(f"cannot cut {len(order)} rows into {min_groups} micro-batches")
    while len(groups) < min_groups:
        k = max(range(len(groups)), key=lambda j: len(groups[j]))
        g = groups[k]
        groups[k:k + 1] = [g[:len(g) // 2], g[len(g) // 2:]]
    return [torch.tensor(sorted(g)) for g in groups]


def max_over_ranks(n: int, device: torch.device | str | None = None) -> int:
    """The largest `n` over the ranks of the default process group (`n` itself when there is none)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def same_count_token_groups(batch: Batch, max_tokens: int, device: torch.device | str | None = None) -> list[torch.Tensor]:
    """`token_groups`, with as many groups on this rank as on the rank that needs the most (a collective:
    every rank must call it)."""
    groups = token_groups(batch, max_tokens)
    n = max_over_ranks(len(groups), device)
    return groups if n == len(groups) else token_groups(batch, max_tokens, min_groups=n)


def trim(batch: Batch) -> tuple[Batch, int]:
    """Drop columns that are padding in every row: left of the prompts, right of the responses.

    Returns the trimmed batch and how many response columns remain (R'); per-token tensors of shape
    (B, R) are cut to (B, R') too.
    """
    attn = batch["attention_mask"]
    R = batch["responses"].shape[1]
    P = attn.shape[1] - R
    prompt_cols = attn[:, :P].any(0).nonzero()
    left = int(prompt_cols[0]) if len(prompt_cols) else P
    resp_cols = attn[:, P:].any(0).nonzero()
    r_keep = int(resp_cols[-1]) + 1 if len(resp_cols) else 1
    out = {}
    for k, v in batch.items():
        if v.dim() >= 2 and v.shape[1] == P + R:
            out[k] = v[:, left:P + r_keep]
        elif v.dim() >= 2 and v.shape[1] == R:
            out[k] = v[:, :r_keep]
        else:
            out[k] = v
    return out, r_keep


def response_logits(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Logits predicting each response token: (B, R, V) float32, for a *trimmed* batch."""
    R = batch["responses"].shape[1]
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device), use_cache=False, logits_to_keep=R + 1)
    return out.logits[:, :-1, :].float()


def token_log_probs(logits: torch.Tensor, ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[ids]: (B, R) from logits (B, R, V) and ids (B, R)."""
    if temperature != 1.0:
        logits = logits / temperature
    return logits.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def response_values(model: nn.Module, batch: Batch, device: torch.device) -> torch.Tensor:
    """Critic values of the state before each response token: (B, R) float32, for a trimmed batch."""
    R = batch["responses"].shape[1]
    out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device), use_cache=False)
    return out.logits[:, -R - 1:-1, 0].float()


def micro_batches(batch: Batch, size: int, dynamic: bool, max_tokens: int,
                  device: torch.device | str | None = None) -> Iterator[Batch]:
    """Fixed-size micro-batches, or token-packed ones with the same count on every rank (`device`: where
    the count is all-reduced, the process group's device)."""
    if dynamic:
        yield from (select(batch, idx) for idx in same_count_token_groups(batch, max_tokens, device))
    else:
        yield from split_fixed(batch, size)


def map_rows(fn: Callable[[Batch], tuple[torch.Tensor, ...]], batch: Batch, size: int, dynamic: bool,
             max_tokens: int, device: torch.device | str | None = None) -> tuple[torch.Tensor, ...]:
    """Apply a per-row function over micro-batches (fixed size, or packed by tokens with the same count on
    every rank) and put the rows back in their original order.

    `fn` gets a *trimmed* micro-batch and returns a tuple of (rows, R') tensors; each is padded back to the
    batch's R columns. Returns the tuple of (B, R) float tensors on the CPU.
    """
    B, R = batch["responses"].shape
    groups = (same_count_token_groups(batch, max_tokens, device) if dynamic
              else [torch.arange(i, min(i + size, B)) for i in range(0, B, size)])
    outs: list[torch.Tensor] = []
    for idx in groups:
        mb, _ = trim(select(batch, idx))
        for k, t in enumerate(fn(mb)):
            if k == len(outs):
                outs.append(torch.zeros((B, R), dtype=torch.float32))
            outs[k][idx] = pad_to(t.float().cpu(), R)
    return tuple(outs)


def pad_to(x: torch.Tensor, R: int) -> torch.Tensor:
    """Right-pad a (B, R') tensor with zeros back to (B, R)."""
    if x.shape[1] == R:
        return x
    return torch.nn.functional.pad(x, (0, R - x.shape[1]))


def loss_scale(mode: str, mask: torch.Tensor, global_tokens: float, global_seqs: float, world_size: int) -> float:
    """Weight of one micro-batch's aggregated loss so that the sum over micro-batches and ranks equals the
    aggregation over the whole mini-batch (FSDP averages gradients over ranks, hence the world_size).

    token-mean: local token share; seq-mean-*: local sequence share; token-sum: plain sum.
    """
    if mode == "token-sum":
        return float(world_size)
    if mode == "token-mean":
        return float(mask.sum()) / max(global_tokens, 1.0) * world_size
    seqs = float((mask.sum(-1) > 0).sum())
    return seqs / max(global_seqs, 1.0) * world_size
