"""Advantage estimators: GAE, GRPO / Dr.GRPO, RLOO, REINFORCE (as ZeroSearch shipped it), REINFORCE++.

All tensors are (batch, response_len). `response_mask` is 1 on policy tokens and 0 on right padding and
on holes inside the response (the `<information>` blocks the environment inserted). Rewards must sit on
policy tokens (the outcome score on the last one, optionally minus a per-token KL): a non-zero reward on
a masked position is an upstream bug and raises, because GAE and REINFORCE++ would silently drop it.
Every output is exactly 0 at masked positions. Nothing here needs gradients.

Configs pick an estimator by name: `get_adv_estimator(name)` returns a function with one signature,

    fn(token_level_rewards, response_mask, *, values=None, group_ids=None, gamma=1.0, lam=1.0,
       norm_by_std=True, epsilon=1e-6) -> (advantages, returns)

and ignores the keywords its estimator does not use.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from zerosearch.algos.masked import as_mask, group_index, masked_whiten

__all__ = [
    "compute_gae",
    "compute_grpo",
    "compute_rloo",
    "compute_reinforce",
    "compute_reinforce_plus_plus",
    "compute_reinforce_plus_plus_baseline",
    "AdvantageEstimator",
    "ADV_ESTIMATORS",
    "get_adv_estimator",
]

AdvantageEstimator = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def _check(token_level_rewards: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Validate shapes and reward placement; return the mask as a bool tensor."""
    if token_level_rewards.dim() != 2 or token_level_rewards.shape != response_mask.shape:
        raise ValueError(
            "token_level_rewards and response_mask must both be (batch, response_len), got "
            f"{tuple(token_level_rewards.shape)} and {tuple(response_mask.shape)}")
    on = as_mask(response_mask, token_level_rewards) != 0
    if bool(((token_level_rewards != 0) & ~on).any()):
        raise ValueError("token_level_rewards is non-zero on a masked position (padding or an inserted "
                         "<information> hole); rewards belong on policy tokens (the last one for the outcome)")
    return on


def _zero_off_mask(x: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
    return torch.where(on, x, torch.zeros_like(x))


def _group_stats(scores: torch.Tensor, group_ids: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample group mean, unbiased group std and group size, each (batch,).

    A group of one sample gets mean 0 and std 1, so its GRPO advantage is its raw score (the reference
    convention: with nothing to compare against, the score itself is the only signal).
    """
    idx = group_index(group_ids, scores.shape[0], scores.device)
    n_groups = int(idx.max().item()) + 1 if idx.numel() else 0
    count = torch.zeros(n_groups, dtype=scores.dtype, device=scores.device).index_add_(0, idx, torch.ones_like(scores))
    total = torch.zeros_like(count).index_add_(0, idx, scores)
    mean = total / count
    sq_dev = torch.zeros_like(count).index_add_(0, idx, (scores - mean[idx]) ** 2)
    std = torch.sqrt(sq_dev / (count - 1).clamp_min(1.0))
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(std), std)
    return mean[idx], std[idx], count[idx]


@torch.no_grad()
def compute_gae(
    token_level_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al., 2016), skipping holes, then whitened.

    Backwards over t, on policy tokens only:
        delta_t = r_t + gamma * V_next - V_t;   A_t = delta_t + gamma * lam * A_next
    where V_next and A_next are those of the next *policy* token (0 after the last one): a hole is
    skipped as if the inserted tokens were not there, because the policy did not act on them.

    Args:
        token_level_rewards: (batch, response_len).
        values: (batch, response_len) critic values V_t.
        response_mask: (batch, response_len).
        gamma: discount factor.
        lam: GAE lambda.

    Returns:
        advantages: (batch, response_len), whitened over masked tokens (mean, unbiased variance).
        returns: (batch, response_len), A_t + V_t before whitening (the critic's target).
    """
    on = _check(token_level_rewards, response_mask)
    values = values.to(token_level_rewards.dtype)
    batch, length = token_level_rewards.shape
    next_value = torch.zeros(batch, dtype=values.dtype, device=values.device)
    running = torch.zeros_like(next_value)
    advantages = torch.zeros_like(token_level_rewards)
    for t in reversed(range(length)):
        delta = token_level_rewards[:, t] + gamma * next_value - values[:, t]
        # At a hole both carries pass through unchanged.
        running = torch.where(on[:, t], delta + gamma * lam * running, running)
        next_value = torch.where(on[:, t], values[:, t], next_value)
        advantages[:, t] = running
    returns = _zero_off_mask(advantages + values, on)
    advantages = _zero_off_mask(masked_whiten(advantages, on), on)
    return advantages, returns


@torch.no_grad()
def compute_grpo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Any,
    norm_by_std: bool = True,
    epsilon: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO outcome advantages (DeepSeekMath, Shao et al., 2024); Dr.GRPO (Liu et al., 2025) without std.

    s_i = sum_t r_{i,t};  A_i = (s_i - mean_g) / (std_g + epsilon), or s_i - mean_g when not norm_by_std,
    with mean and unbiased std over the samples sharing sample i's group id (a group of one: mean 0,
    std 1). A_i is broadcast to every policy token of sample i.

    Args:
        token_level_rewards: (batch, response_len).
        response_mask: (batch, response_len).
        group_ids: (batch,) ids of the prompt each sample answers; list, numpy array or tensor, of ints
            or strings.
        norm_by_std: divide by the group std (False is Dr.GRPO).
        epsilon: added to the std (TRL uses 1e-4, verl 1e-6).

    Returns:
        (advantages, returns), both (batch, response_len) and equal (no critic).
    """
    on = _check(token_level_rewards, response_mask)
    scores = token_level_rewards.sum(dim=-1)
    mean, std, _ = _group_stats(scores, group_ids)
    adv = (scores - mean) / (std + epsilon) if norm_by_std else scores - mean
    adv = _zero_off_mask(adv.unsqueeze(-1).expand_as(token_level_rewards), on)
    return adv, adv.clone()


@torch.no_grad()
def compute_rloo(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLOO (Ahmadian et al., 2024): the baseline is the mean score of the *other* samples of the group.

    A_i = s_i - mean_{j != i} s_j = n / (n - 1) * (s_i - mean_g) for a group of n >= 2; a group of one
    has no other sample and keeps its raw score (as the reference does). Broadcast over policy tokens.

    Returns:
        (advantages, returns), both (batch, response_len) and equal.
    """
    on = _check(token_level_rewards, response_mask)
    scores = token_level_rewards.sum(dim=-1)
    mean, _, count = _group_stats(scores, group_ids)
    adv = torch.where(count > 1, count / (count - 1).clamp_min(1.0) * (scores - mean), scores)
    adv = _zero_off_mask(adv.unsqueeze(-1).expand_as(token_level_rewards), on)
    return adv, adv.clone()


@torch.no_grad()
def compute_reinforce(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE as ZeroSearch shipped it: the outcome score s_i on every policy token, no baseline.

    Returns:
        (advantages, returns), both (batch, response_len) and equal.
    """
    on = _check(token_level_rewards, response_mask)
    scores = token_level_rewards.sum(dim=-1, keepdim=True).expand_as(token_level_rewards)
    adv = _zero_off_mask(scores, on)
    return adv, adv.clone()


@torch.no_grad()
def compute_reinforce_plus_plus(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ (Hu, 2025): discounted token returns, whitened over the batch's policy tokens.

    G_t = r_t + gamma * G_next over policy tokens, backwards; a hole passes G through unchanged (no
    reward, no discount), like GAE. Advantages are G whitened over the mask (unbiased variance).

    Returns:
        advantages: (batch, response_len), whitened.
        returns: (batch, response_len), the discounted returns G_t.
    """
    on = _check(token_level_rewards, response_mask)
    batch, length = token_level_rewards.shape
    running = torch.zeros(batch, dtype=token_level_rewards.dtype, device=token_level_rewards.device)
    returns = torch.zeros_like(token_level_rewards)
    for t in reversed(range(length)):
        running = torch.where(on[:, t], token_level_rewards[:, t] + gamma * running, running)
        returns[:, t] = running
    returns = _zero_off_mask(returns, on)
    advantages = _zero_off_mask(masked_whiten(returns, on), on)
    return advantages, returns


@torch.no_grad()
def compute_reinforce_plus_plus_baseline(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """REINFORCE++ with a group-mean baseline (Hu, 2025): s_i - mean_g, broadcast, whitened over the mask.

    A group of one has mean 0 (its raw score is kept before whitening).

    Returns:
        (advantages, returns), both (batch, response_len) and equal.
    """
    on = _check(token_level_rewards, response_mask)
    scores = token_level_rewards.sum(dim=-1)
    mean, _, _ = _group_stats(scores, group_ids)
    centred = (scores - mean).unsqueeze(-1).expand_as(token_level_rewards)
    adv = _zero_off_mask(masked_whiten(_zero_off_mask(centred, on), on), on)
    return adv, adv.clone()


# ---- the registry: one signature for every estimator ------------------------------------------------

def _need(value: Optional[Any], what: str, name: str) -> Any:
    if value is None:
        raise ValueError(f"advantage estimator '{name}' needs {what}")
    return value


def _gae(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, values: Optional[torch.Tensor] = None,
         group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0, norm_by_std: bool = True,
         epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_gae(token_level_rewards, _need(values, "values (a critic)", "gae"), response_mask, gamma, lam)


def _grpo(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, values: Optional[torch.Tensor] = None,
          group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0, norm_by_std: bool = True,
          epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_grpo(token_level_rewards, response_mask, _need(group_ids, "group_ids", "grpo"),
                        norm_by_std=norm_by_std, epsilon=epsilon)


def _dr_grpo(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, values: Optional[torch.Tensor] = None,
             group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0, norm_by_std: bool = True,
             epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    # The name itself means "no std normalisation", whatever norm_by_std says.
    return compute_grpo(token_level_rewards, response_mask, _need(group_ids, "group_ids", "dr_grpo"),
                        norm_by_std=False, epsilon=epsilon)


def _rloo(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *, values: Optional[torch.Tensor] = None,
          group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0, norm_by_std: bool = True,
          epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_rloo(token_level_rewards, response_mask, _need(group_ids, "group_ids", "rloo"))


def _reinforce(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *,
               values: Optional[torch.Tensor] = None, group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0,
               norm_by_std: bool = True, epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_reinforce(token_level_rewards, response_mask)


def _reinforce_pp(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *,
                  values: Optional[torch.Tensor] = None, group_ids: Any = None, gamma: float = 1.0, lam: float = 1.0,
                  norm_by_std: bool = True, epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_reinforce_plus_plus(token_level_rewards, response_mask, gamma)


def _reinforce_pp_baseline(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, *,
                           values: Optional[torch.Tensor] = None, group_ids: Any = None, gamma: float = 1.0,
                           lam: float = 1.0, norm_by_std: bool = True,
                           epsilon: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    return compute_reinforce_plus_plus_baseline(
        token_level_rewards, response_mask, _need(group_ids, "group_ids", "reinforce_plus_plus_baseline"))


ADV_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "gae": _gae,
    "grpo": _grpo,
    "dr_grpo": _dr_grpo,
    "drgrpo": _dr_grpo,
    "rloo": _rloo,
    "reinforce": _reinforce,
    "reinforce_plus_plus": _reinforce_pp,
    "reinforce_plus_plus_baseline": _reinforce_pp_baseline,
}


def get_adv_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered under `name`; ValueError listing the known names otherwise."""
    try:
        return ADV_ESTIMATORS[name]
    except KeyError:
        raise ValueError(
            f"unknown advantage estimator '{name}'; known: {', '.join(sorted(ADV_ESTIMATORS))}") from None
