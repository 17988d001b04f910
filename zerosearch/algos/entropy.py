"""Token entropy from logits, in chunks of tokens, with a backward that recomputes instead of storing.

H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v   (p = softmax(z))

A (batch, response_len, vocab) softmax is as large as the logits themselves: for a 150k-token vocabulary
and 8k tokens that is ~5 GB in fp32, and autograd would keep it (and an fp32 upcast of bf16 logits)
alive until backward. Here the forward walks over `chunk_size` tokens at a time, keeps nothing but the
logits (which the caller already holds), and the backward recomputes each chunk's softmax:
    dH/dz_v = -p_v (z_v - sum_u p_u z_u)
so the extra memory is one chunk of (chunk_size, vocab), forward and backward.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["entropy_from_logits", "entropy_from_logits_naive"]


def _chunk_terms(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For a (chunk, vocab) block: probabilities, logsumexp and sum_v p_v z_v."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    p = torch.exp(z - lse)
    # p * z is 0 * -inf = NaN on vocabulary entries masked with -inf; they contribute nothing.
    pz = torch.where(p > 0, p * z, torch.zeros_like(z))
    return p, lse.squeeze(-1), pz.sum(dim=-1, keepdim=True)


class _ChunkedEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, chunk_size: int, compute_dtype: torch.dtype) -> torch.Tensor:
        n = logits.shape[0]
        out = torch.empty(n, dtype=compute_dtype, device=logits.device)
        for start in range(0, n, chunk_size):
            z = logits[start:start + chunk_size].to(compute_dtype)
            _, lse, mean_z = _chunk_terms(z)
            out[start:start + chunk_size] = lse - mean_z.squeeze(-1)
        ctx.save_for_backward(logits)
        ctx.chunk_size = chunk_size
        ctx.compute_dtype = compute_dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (logits,) = ctx.saved_tensors
        grad = torch.empty_like(logits)
        for start in range(0, logits.shape[0], ctx.chunk_size):
            z = logits[start:start + ctx.chunk_size].to(ctx.compute_dtype)
            p, _, mean_z = _chunk_terms(z)
            g = torch.where(p > 0, -p * (z - mean_z), torch.zeros_like(z))
            grad[start:start + ctx.chunk_size] = (g * grad_out[start:start + ctx.chunk_size, None]).to(grad.dtype)
        return grad, None, None


def entropy_from_logits(logits: torch.Tensor, chunk_size: int = 2048) -> torch.Tensor:
    """Entropy of softmax(logits) per token, computed `chunk_size` tokens at a time.

    Args:
        logits: (batch, response_len, vocab), or any (..., vocab).
        chunk_size: tokens per chunk; bounds the extra memory to (chunk_size, vocab) in fp32.

    Returns:
        (batch, response_len) (the leading shape of `logits`), in fp32 (fp64 for fp64 logits); mask it
        with the response mask before aggregating. Differentiable, with a memory-light backward.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)
    return _ChunkedEntropy.apply(flat, chunk_size, compute_dtype).reshape(lead)


def entropy_from_logits_naive(logits: torch.Tensor) -> torch.Tensor:
    """The textbook entropy with a full softmax; for tests and tiny vocabularies only."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    p = torch.softmax(z, dim=-1)
    return -(p * torch.log_softmax(z, dim=-1)).sum(dim=-1)
