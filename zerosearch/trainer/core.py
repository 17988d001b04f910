"""The controller's per-step math between rollout and update: rewards onto tokens, the in-reward KL,
advantages, and the batch metrics. Pure torch on the controller (no Ray, no FSDP), so it is testable alone.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from zerosearch.algos import apply_kl_in_reward, get_adv_estimator
from zerosearch.config.schema import AlgorithmConfig

Batch = dict[str, torch.Tensor]


def last_policy_index(response_mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of the last policy token of each row (-1 when a row has none)."""
    R = response_mask.shape[1]
    pos = torch.arange(R).expand_as(response_mask)
    return torch.where(response_mask > 0, pos, torch.full_like(pos, -1)).max(dim=1).values


def token_level_scores(scores: Sequence[float], response_mask: torch.Tensor) -> torch.Tensor:
    """Outcome scores placed on each row's last policy token: (B, R), 0 elsewhere.

    The last *policy* token, not the last token: a trajectory can end with an inserted observation.
    """
    out = torch.zeros_like(response_mask, dtype=torch.float32)
    idx = last_policy_index(response_mask)
    rows = (idx >= 0).nonzero().squeeze(-1)
    out[rows, idx[rows]] = torch.tensor(list(scores), dtype=torch.float32)[rows]
    return out


def compute_advantages(batch: Batch, algo: AlgorithmConfig, group_ids: Sequence[str],
                       kl_coef: float | None = None) -> tuple[Batch, dict[str, float]]:
    """Adds token_level_rewards, advantages and returns to the batch.

    With algo.use_kl_in_reward, the KL to the reference (on the sampling policy's log-probs) is
    subtracted from the token rewards first, with coefficient `kl_coef` (the controller's value).
    """
    metrics: dict[str, float] = {}
    mask = batch["response_mask"]
    rewards = batch["token_level_scores"]
    if algo.use_kl_in_reward:
        rewards, metrics = apply_kl_in_reward(rewards, batch["old_log_prob"], batch["ref_log_prob"], mask,
                                              kl_coef if kl_coef is not None else algo.kl_coef, algo.kl_penalty)
    estimator = get_adv_estimator(algo.adv_estimator)
    adv, ret = estimator(rewards, mask, values=batch.get("values"), group_ids=list(group_ids), gamma=algo.gamma,
                         lam=algo.lam, norm_by_std=algo.norm_adv_by_std)
    batch["token_level_rewards"], batch["advantages"], batch["returns"] = rewards, adv, ret
    return batch, metrics


def _stats(name: str, x: torch.Tensor) -> dict[str, float]:
    if x.numel() == 0:
        return {}
    return {f"{name}/mean": float(x.mean()), f"{name}/max": float(x.max()), f"{name}/min": float(x.min())}


def batch_metrics(batch: Batch) -> dict[str, float]:
    """verl's data metrics: scores, rewards, advantages, returns, values over policy tokens / sequences."""
    mask = batch["response_mask"] > 0
    seq_score = batch["token_level_scores"].sum(-1)
    seq_reward = batch["token_level_rewards"].sum(-1)
    m: dict[str, Any] = {}
    m.update(_stats("critic/score", seq_score))
    m.update(_stats("critic/rewards", seq_reward))
    m.update(_stats("critic/advantages", batch["advantages"][mask]))
    m.update(_stats("critic/returns", batch["returns"][mask]))
    if "values" in batch:
        m.update(_stats("critic/values", batch["values"][mask]))
    prompt_len = batch["attention_mask"][:, :batch["prompts"].shape[1]].sum(-1).float()
    m.update(_stats("prompt_length", prompt_len))
    if "rollout_log_probs" in batch and "old_log_prob" in batch:
        diff = (batch["rollout_log_probs"] - batch["old_log_prob"]).abs()[mask]
        if diff.numel():
            # engine vs trainer log-probs of the same tokens under the same weights: catches stale weights
            m["rollout/log_prob_diff_mean"] = float(diff.mean())
            m["rollout/log_prob_diff_max"] = float(diff.max())
    return m
