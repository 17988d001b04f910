"""KL between the policy and the frozen reference: per-token estimators, the in-reward penalty, and the
coefficient controllers.

The estimators follow Schulman's note "Approximating KL divergence" (2020). With d = logp - ref_logp,
on tokens sampled from the policy:
    k1 ("kl")          = d                                  unbiased, high variance, can be negative
    k2 ("mse")         = d^2 / 2                            biased, low variance, >= 0
    k3 ("low_var_kl")  = exp(-d) - 1 + d                    unbiased, low variance, >= 0
    abs                = |d|
k3 is computed as exp(k) - k - 1 with k = clamp(ref - logp, -20, 20), the result clamped to [-10, 10]
(the reference's guards against overflow on tokens where the two policies disagree wildly).

Two ways to use them, and one sign: KL always *penalises* divergence.
- as a loss term (GRPO style): total loss = pg_loss + kl_loss_coef * agg(kl_penalty(...))
- inside the reward (PPO style): token_level_rewards = token_level_scores - kl_coef * kl_penalty(...)
"""

from __future__ import annotations

import math
from typing import Callable, Union

import torch

from zerosearch.algos.masked import as_mask, masked_mean

__all__ = [
    "kl_penalty",
    "KL_ESTIMATORS",
    "apply_kl_in_reward",
    "FixedKLController",
    "AdaptiveKLController",
    "KLController",
    "make_kl_controller",
]


def _k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob - ref_log_prob


def _k2(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_prob - ref_log_prob).square()


def _k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    k = torch.clamp(ref_log_prob - log_prob, min=-20.0, max=20.0)
    return torch.clamp(torch.exp(k) - k - 1.0, min=-10.0, max=10.0)


def _abs(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return (log_prob - ref_log_prob).abs()


# Name -> estimator; the verl names (kl, mse, low_var_kl) are aliases of Schulman's k1, k2, k3.
KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "k1": _k1,
    "kl": _k1,
    "k2": _k2,
    "mse": _k2,
    "k3": _k3,
    "low_var_kl": _k3,
    "abs": _abs,
}


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate of the policy against the reference.

    Args:
        log_prob: (batch, response_len) log-probs of the sampled tokens under the policy.
        ref_log_prob: (batch, response_len) log-probs of the same tokens under the reference.
        kind: k1/kl | k2/mse | k3/low_var_kl | abs.

    Returns:
        (batch, response_len), not masked: aggregate it with the response mask (`agg_loss`), which also
        keeps the gradient at masked positions exactly 0. Exactly 0 wherever log_prob == ref_log_prob.
    """
    try:
        estimator = KL_ESTIMATORS[kind]
    except KeyError:
        raise ValueError(f"unknown KL estimator '{kind}'; known: {', '.join(sorted(KL_ESTIMATORS))}") from None
    return estimator(log_prob, ref_log_prob)


def apply_kl_in_reward(
    token_level_scores: torch.Tensor,
    old_log_prob: torch.Tensor,
    ref_log_prob: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
    kind: str = "kl",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Subtract the per-token KL penalty from the scores (PPO style, Ziegler et al., 2019).

    token_level_rewards = token_level_scores - kl_coef * KL_t on policy tokens, scores unchanged elsewhere.
    The KL is taken on the log-probs of the policy that sampled the batch (`old_log_prob`), with no
    gradient: it shapes the reward, it is not optimised through.

    Args:
        token_level_scores: (batch, response_len) outcome score on the last policy token, 0 elsewhere.
        old_log_prob: (batch, response_len) log-probs under the sampling policy.
        ref_log_prob: (batch, response_len) log-probs under the reference.
        response_mask: (batch, response_len).
        kl_coef: the coefficient (a controller's `.value`).
        kind: the KL estimator, as in `kl_penalty`.

    Returns:
        token_level_rewards: (batch, response_len).
        metrics: `actor/reward_kl_penalty` (the mean over sequences of each sequence's token-mean KL: the
            number to feed `KLController.update`) and `actor/reward_kl_penalty_coeff`.
    """
    with torch.no_grad():
        on = as_mask(response_mask, token_level_scores) != 0
        kl = kl_penalty(old_log_prob, ref_log_prob, kind).to(token_level_scores.dtype)
        kl = torch.where(on, kl, torch.zeros_like(kl))
        rewards = token_level_scores - kl_coef * kl
        per_seq = masked_mean(kl, on, dim=-1)
        current_kl = float(per_seq.mean().item()) if per_seq.numel() else 0.0
    return rewards, {"actor/reward_kl_penalty": current_kl, "actor/reward_kl_penalty_coeff": float(kl_coef)}


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt (kept so both controllers are used the same way)."""


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al., 2019, "Fine-Tuning Language Models from Human Preferences").

    After each batch: e = clip(current_kl / target - 1, -0.2, 0.2);  value *= 1 + e * n_steps / horizon.
    The coefficient grows while the KL is above target and shrinks while below, by at most 20% per
    `horizon` samples.
    """

    def __init__(self, init_kl_coef: float, target_kl: float, horizon: int) -> None:
        if target_kl <= 0 or horizon <= 0:
            raise ValueError(f"target_kl and horizon must be positive, got {target_kl} and {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target_kl)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Adapt the coefficient to the KL just measured over a batch of `n_steps` samples."""
        if not math.isfinite(current_kl):
            return  # a NaN KL must not poison the coefficient for the rest of the run
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon


KLController = Union[FixedKLController, AdaptiveKLController]


def make_kl_controller(kind: str, kl_coef: float, target_kl: float = 0.1, horizon: int = 10000) -> KLController:
    """`fixed` or `adaptive`, from the config's algorithm.kl_ctrl / kl_coef / kl_target / kl_horizon."""
    if kind == "fixed":
        return FixedKLController(kl_coef)
    if kind == "adaptive":
        return AdaptiveKLController(kl_coef, target_kl, horizon)
    raise ValueError(f"unknown KL controller '{kind}'; known: adaptive, fixed")
