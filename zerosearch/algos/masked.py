"""Masked reductions over (batch, response_len) tensors, and group ids -> dense group indices.

A response mask is 1 on policy tokens and 0 everywhere else: right padding *and* holes inside the
response (the `<information>` blocks the environment inserted). Every reduction here looks at masked
tokens only, and uses `torch.where` rather than a multiplication so that a NaN or inf sitting on a
masked position (say, a log-prob of a padded token) can never leak into a result or a gradient.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import torch

__all__ = [
    "as_mask",
    "masked_sum",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "group_index",
]

# Added to the variance before the reciprocal square root when whitening (the value verl and TRL use).
WHITEN_EPS = 1e-8


def as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mask as a float tensor of `like`'s dtype and device (accepts bool, int or float masks)."""
    return mask.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Sum of `values` over positions where `mask` is non-zero.

    Args:
        values: (batch, response_len) or any shape broadcastable with `mask`.
        mask: same shape, 1 on the positions to count.
        dim: reduce over this dimension only; None reduces over everything (a scalar).
    """
    m = as_mask(mask, values)
    kept = torch.where(m != 0, values * m, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: Optional[int] = None) -> torch.Tensor:
    """Mean of `values` over masked positions; 0 (not NaN) where the mask is empty."""
    m = as_mask(mask, values)
    count = m.sum() if dim is None else m.sum(dim=dim)
    # An empty mask has a zero numerator too, so any positive floor gives 0 rather than 0/0.
    return masked_sum(values, m, dim) / count.clamp_min(1e-8)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `values` over all masked positions (a scalar).

    With `unbiased`, Bessel's correction n/(n-1) is applied, as the reference does. With n <= 1 the
    correction is skipped (the variance of one value is 0) instead of dividing by zero: one masked token
    then whitens to 0, which is what any sensible estimate would give.
    """
    m = as_mask(mask, values)
    mean = masked_mean(values, m)
    var = masked_mean((values - mean) ** 2, m)
    if unbiased:
        n = m.sum()
        # n/(n-1) for n >= 2; for n in {0, 1} the denominator is floored at 1 (and var is 0 there anyway).
        var = var * n / (n - 1).clamp_min(1.0)
    return var


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values - mean) / sqrt(var + 1e-8), with mean and unbiased var taken over masked tokens only.

    Args:
        values: (batch, response_len).
        mask: (batch, response_len), 1 on policy tokens.
        shift_mean: False adds the mean back (scales without centring).

    Returns:
        (batch, response_len); unmasked positions are whitened with the same statistics (callers that
        need exact zeros there multiply by the mask, as every estimator in this package does).
    """
    m = as_mask(mask, values)
    mean = masked_mean(values, m)
    var = masked_var(values, m, unbiased=True)
    whitened = (values - mean) * torch.rsqrt(var + WHITEN_EPS)
    return whitened if shift_mean else whitened + mean


def group_index(group_ids: Any, batch_size: int, device: torch.device | None = None) -> torch.Tensor:
    """Map per-sample group ids (ints or strings) to dense indices 0..G-1, in order of first appearance.

    Args:
        group_ids: one id per sample: a list/tuple, a numpy array (of ints, strings or objects) or a 1-D
            tensor. Anything with `.tolist()` is converted without importing numpy here.
        batch_size: the number of samples, checked against the ids.
        device: where the returned tensor lives.

    Returns:
        (batch,) int64 tensor of group indices.
    """
    if isinstance(group_ids, torch.Tensor):
        ids = group_ids.reshape(-1).tolist()
    elif hasattr(group_ids, "tolist"):  # numpy arrays, without importing numpy
        ids = list(group_ids.tolist())
    elif isinstance(group_ids, (str, bytes)) or not isinstance(group_ids, Sequence):
        raise TypeError(f"group_ids must be a list, a numpy array or a tensor, got {type(group_ids).__name__}")
    else:
        ids = list(group_ids)
    if len(ids) != batch_size:
        raise ValueError(f"group_ids has {len(ids)} entries but the batch has {batch_size} samples")
    dense: dict[Any, int] = {}
    index = [dense.setdefault(g, len(dense)) for g in ids]
    return torch.tensor(index, dtype=torch.long, device=device)
