"""Losses: loss aggregation, the PPO clipped policy loss (clip-higher, dual clip), GSPO, the clipped value
loss, the KL loss and the actor's total; entropy and the KL estimators are re-exported from their modules.

All per-token tensors are (batch, response_len). `response_mask` is 1 on policy tokens and 0 on right
padding and on holes (inserted `<information>` tokens). Masked positions are replaced by neutral values
*before* any arithmetic (`torch.where`), so their per-token losses are exactly 0, their gradients are
exactly 0, and a NaN or inf there (e.g. a log-prob of padding) can reach neither.

Configs pick a policy loss by name: `get_policy_loss(name)` returns a function with one signature,

    fn(old_log_prob, log_prob, advantages, response_mask, *, clip_low, clip_high, clip_c, agg, norm_len,
       total_tokens=None, total_seqs=None) -> (loss, metrics)
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from zerosearch.algos.entropy import entropy_from_logits
from zerosearch.algos.kl import kl_penalty
from zerosearch.algos.masked import as_mask, masked_mean, masked_sum

__all__ = [
    "AGG_MODES",
    "agg_loss",
    "policy_loss",
    "gspo_loss",
    "value_loss",
    "kl_loss",
    "total_actor_loss",
    "kl_penalty",
    "entropy_from_logits",
    "PolicyLoss",
    "POLICY_LOSSES",
    "get_policy_loss",
]

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

# The log-ratio is clamped before exp so that a wildly off-policy token gives a huge but finite ratio.
LOG_RATIO_CLAMP = 20.0
# GSPO caps the sequence log-ratio (e^10 ~ 2.2e4) for the same reason.
GSPO_LOG_RATIO_CAP = 10.0


def _on(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return as_mask(mask, like) != 0


def _zero_off(x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    return torch.where(on, x, torch.zeros_like(x))


def agg_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    norm_len: Optional[float] = None,
    *,
    total_tokens: Optional[float] = None,
    total_seqs: Optional[float] = None,
) -> torch.Tensor:
    """Aggregate a per-token loss into a scalar (m = mask, l = loss_mat, sums over masked tokens only).

        token-mean               sum(m*l) / sum(m)
        token-sum                sum(m*l)
        seq-mean-token-sum       mean over sequences with >= 1 token of sum_t(m*l)
        seq-mean-token-mean      mean over those sequences of sum_t(m*l) / sum_t(m)
        seq-mean-token-sum-norm  seq-mean-token-sum / norm_len  (norm_len defaults to response_len)

    Args:
        loss_mat: (batch, response_len) per-token loss.
        mask: (batch, response_len).
        mode: one of AGG_MODES.
        norm_len: seq-mean-token-sum-norm's constant (Dr.GRPO: the maximum response length).
        total_tokens: token-mean's denominator, when this batch is one micro-batch of a larger one.
        total_seqs: the seq-mean-* denominator, likewise.

    With gradient accumulation or several data-parallel ranks, pass the counts of the whole mini-batch
    (all micro-batches, all ranks) so that the summed gradients equal those of one big batch; if the
    data-parallel backend averages gradients over ranks, also multiply the loss by the world size.
    """
    on = _on(mask, loss_mat)
    if mode == "token-mean":
        denom = on.sum() if total_tokens is None else total_tokens
        return masked_sum(loss_mat, on) / (denom.clamp_min(1) if isinstance(denom, torch.Tensor) else denom)
    if mode == "token-sum":
        return masked_sum(loss_mat, on)
    if mode not in AGG_MODES:
        raise ValueError(f"unknown loss aggregation mode '{mode}'; known: {', '.join(AGG_MODES)}")
    tokens_per_seq = on.sum(dim=-1)
    seq_loss = masked_sum(loss_mat, on, dim=-1)
    if mode == "seq-mean-token-mean":
        seq_loss = seq_loss / tokens_per_seq.clamp_min(1)
    has_tokens = tokens_per_seq > 0
    n_seqs = has_tokens.sum().clamp_min(1) if total_seqs is None else total_seqs
    loss = masked_sum(seq_loss, has_tokens) / n_seqs
    if mode == "seq-mean-token-sum-norm":
        loss = loss / (loss_mat.shape[-1] if norm_len is None else norm_len)
    return loss


def _metrics(values: list[torch.Tensor], names: tuple[str, ...]) -> dict[str, float]:
    # One device sync for all metrics rather than one per `.item()`.
    return dict(zip(names, torch.stack([v.detach().float() for v in values]).tolist()))


def policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: Optional[float] = 3.0,
    agg: str = "token-mean",
    *,
    norm_len: Optional[float] = None,
    total_tokens: Optional[float] = None,
    total_seqs: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate (Schulman et al., 2017) with clip-higher (DAPO) and dual clip (Ye et al., 2020).

        r = exp(clamp(logp - old, -20, 20))
        l = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high))
        l = min(l, -A * clip_c)   where A < 0 only (dual clip bounds the loss of a bad, off-policy token)
        loss = agg(l)

    Args:
        old_log_prob: (batch, response_len) log-probs under the sampling policy (no gradient).
        log_prob: (batch, response_len) log-probs under the current policy.
        advantages: (batch, response_len).
        response_mask: (batch, response_len).
        clip_low: epsilon below 1.
        clip_high: epsilon above 1 (DAPO clip-higher: 0.28).
        clip_c: dual-clip bound (> 1), None to disable.
        agg: aggregation mode (see `agg_loss`); norm_len, total_tokens, total_seqs are passed to it.

    Returns:
        loss: scalar.
        metrics: pg_clipfrac (share of policy tokens where the clipped term is the larger), ppo_kl
            (masked mean of old - logp), pg_clipfrac_lower (share of policy tokens, over all of them, with
            A < 0 where the dual-clip bound is active), as Python floats.
    """
    if clip_c is not None and clip_c <= 1.0:
        raise ValueError(f"clip_c (the dual-clip bound) must be > 1, got {clip_c}")
    on = _on(response_mask, log_prob)
    log_ratio = torch.clamp(_zero_off(log_prob - old_log_prob, on), -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    adv = _zero_off(advantages.to(ratio.dtype), on)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = torch.maximum(unclipped, clipped)
    negative = adv < 0
    if clip_c is not None:
        dual_bound = -adv * clip_c
        lower_active = (per_token > dual_bound) & negative
        per_token = torch.where(negative, torch.minimum(per_token, dual_bound), per_token)
    else:
        lower_active = torch.zeros_like(on)
    loss = agg_loss(_zero_off(per_token, on), on, agg, norm_len, total_tokens=total_tokens, total_seqs=total_seqs)
    with torch.no_grad():
        metrics = _metrics(
            [masked_mean((clipped > unclipped).float(), on), masked_mean(-log_ratio, on),
             masked_mean(lower_active.float(), on)],
            ("pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"))
    return loss, metrics


def gspo_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    *,
    agg: str = "seq-mean-token-mean",
    norm_len: Optional[float] = None,
    total_tokens: Optional[float] = None,
    total_seqs: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (Zheng et al., 2025): one importance ratio per sequence, clipped like PPO.

        s_i = mean over policy tokens of (logp - old)                    (no gradient)
        log r_{i,t} = min(logp_t - sg(logp_t) + s_i, 10)                 (value s_i, gradient of logp_t)
        l = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high));  loss = agg(l)

    The paper's objective averages over sequences, i.e. agg="seq-mean-token-mean" (the default and the
    `gspo` preset); then the gradient is exactly the paper's s_i * A_i * mean_t grad logp_t. Its clip
    ranges are ~1e-3, not 0.2, because a sequence ratio is much closer to 1 than a token ratio. There is
    no dual clip.

    Args and returns as `policy_loss` (pg_clipfrac_lower is always 0).
    """
    on = _on(response_mask, log_prob)
    token_log_ratio = _zero_off(log_prob - old_log_prob, on)
    seq_log_ratio = (token_log_ratio.sum(dim=-1) / on.sum(dim=-1).clamp_min(1)).detach()
    lp = _zero_off(log_prob, on)
    log_ratio = torch.clamp(lp - lp.detach() + seq_log_ratio.unsqueeze(-1), max=GSPO_LOG_RATIO_CAP)
    ratio = torch.exp(log_ratio)
    adv = _zero_off(advantages.to(ratio.dtype), on)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    per_token = _zero_off(torch.maximum(unclipped, clipped), on)
    loss = agg_loss(per_token, on, agg, norm_len, total_tokens=total_tokens, total_seqs=total_seqs)
    with torch.no_grad():
        metrics = _metrics(
            [masked_mean((clipped > unclipped).float(), on), masked_mean(-token_log_ratio, on),
             torch.zeros((), device=ratio.device)],
            ("pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"))
    return loss, metrics


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip: Optional[float],
    agg: str = "token-mean",
    *,
    norm_len: Optional[float] = None,
    total_tokens: Optional[float] = None,
    total_seqs: Optional[float] = None,
) -> tuple[torch.Tensor, float]:
    """Clipped value loss (as in PPO's reference implementation): the critic may not move far per update.

        v_clip = clamp(v, v_old - clip, v_old + clip)
        loss = 0.5 * agg(max((v - R)^2, (v_clip - R)^2))

    Args:
        values: (batch, response_len) current critic predictions.
        old_values: (batch, response_len) predictions when the batch was collected.
        returns: (batch, response_len) targets (GAE returns).
        response_mask: (batch, response_len).
        clip: the clip range around old_values; None for the plain squared error.
        agg: aggregation mode (see `agg_loss`).

    Returns:
        loss: scalar.
        clipfrac: share of policy tokens where the clipped error is the larger, a Python float.
    """
    on = _on(response_mask, values)
    v = _zero_off(values, on)
    old = _zero_off(old_values.to(v.dtype), on)
    target = _zero_off(returns.to(v.dtype), on)
    err = (v - target) ** 2
    if clip is None:
        per_token, clipped_err = err, err
    else:
        clipped_err = (torch.clamp(v, old - clip, old + clip) - target) ** 2
        per_token = torch.maximum(err, clipped_err)
    loss = 0.5 * agg_loss(per_token, on, agg, norm_len, total_tokens=total_tokens, total_seqs=total_seqs)
    with torch.no_grad():
        clipfrac = float(masked_mean((clipped_err > err).float(), on).item())
    return loss, clipfrac


def kl_loss(
    log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kind: str = "low_var_kl",
    agg: str = "token-mean",
    *,
    norm_len: Optional[float] = None,
    total_tokens: Optional[float] = None,
    total_seqs: Optional[float] = None,
) -> torch.Tensor:
    """KL to the reference as a loss term (GRPO style): agg(kl_penalty(logp, ref, kind)) over policy tokens.

    Add it with a plus sign (`total_actor_loss`): minimising it pulls the policy toward the reference.
    Returns a scalar.
    """
    on = _on(response_mask, log_prob)
    # Masked positions get logp := ref, so their estimate is exactly 0 whatever the inputs held there.
    lp = torch.where(on, log_prob, ref_log_prob.to(log_prob.dtype))
    return agg_loss(kl_penalty(lp, ref_log_prob.to(lp.dtype), kind), on, agg, norm_len,
                    total_tokens=total_tokens, total_seqs=total_seqs)


def total_actor_loss(
    pg_loss: torch.Tensor,
    *,
    entropy: Optional[torch.Tensor] = None,
    entropy_coeff: float = 0.0,
    kl: Optional[torch.Tensor] = None,
    kl_coef: float = 0.0,
) -> torch.Tensor:
    """pg_loss - entropy_coeff * entropy + kl_coef * kl: the one place the signs are written down.

    The entropy (aggregated over policy tokens) is a bonus, so it is subtracted; the KL to the reference is
    a penalty, so it is added: never the other way round, which would push the policy *away* from the
    reference.
    """
    loss = pg_loss
    if entropy is not None and entropy_coeff != 0.0:
        loss = loss - entropy_coeff * entropy
    if kl is not None and kl_coef != 0.0:
        loss = loss + kl_coef * kl
    return loss


# ---- the registry: one signature for every policy loss ----------------------------------------------

PolicyLoss = Callable[..., tuple[torch.Tensor, dict[str, float]]]


def _ppo(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor,
         *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: Optional[float] = 3.0, agg: str = "token-mean",
         norm_len: Optional[float] = None, total_tokens: Optional[float] = None,
         total_seqs: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float]]:
    return policy_loss(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high, clip_c, agg,
                       norm_len=norm_len, total_tokens=total_tokens, total_seqs=total_seqs)


def _gspo(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor, response_mask: torch.Tensor,
          *, clip_low: float = 0.2, clip_high: float = 0.2, clip_c: Optional[float] = 3.0,
          agg: str = "seq-mean-token-mean", norm_len: Optional[float] = None, total_tokens: Optional[float] = None,
          total_seqs: Optional[float] = None) -> tuple[torch.Tensor, dict[str, float]]:
    # clip_c is accepted for the uniform signature; GSPO has no dual clip.
    return gspo_loss(old_log_prob, log_prob, advantages, response_mask, clip_low, clip_high, agg=agg,
                     norm_len=norm_len, total_tokens=total_tokens, total_seqs=total_seqs)


POLICY_LOSSES: dict[str, PolicyLoss] = {"ppo": _ppo, "vanilla": _ppo, "gspo": _gspo}


def get_policy_loss(name: str) -> PolicyLoss:
    """The policy loss registered under `name`; ValueError listing the known names otherwise."""
    try:
        return POLICY_LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown policy loss '{name}'; known: {', '.join(sorted(POLICY_LOSSES))}") from None
