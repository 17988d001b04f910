"""The RL math, in torch only: advantage estimators, policy / value / KL / entropy losses, loss
aggregation and KL controllers. Nothing here knows Ray, FSDP, vLLM or transformers.

Modules:
    masked      masked sum / mean / variance / whitening; group ids -> dense indices
    advantages  GAE, GRPO (Dr.GRPO), RLOO, REINFORCE, REINFORCE++ (+ group baseline); ADV_ESTIMATORS
    losses      agg_loss, PPO (clip-higher, dual clip), GSPO, value loss, KL loss; POLICY_LOSSES
    kl          KL estimators k1/k2/k3/abs, the in-reward penalty, fixed and adaptive controllers
    entropy     chunked entropy from logits with a memory-light backward

Tensors are (batch, response_len) and every function takes a `response_mask` that is 0 on padding and
on the `<information>` holes inside a response; outputs are exactly 0 there.
"""

from zerosearch.algos.advantages import (
    ADV_ESTIMATORS,
    compute_gae,
    compute_grpo,
    compute_reinforce,
    compute_reinforce_plus_plus,
    compute_reinforce_plus_plus_baseline,
    compute_rloo,
    get_adv_estimator,
)
from zerosearch.algos.entropy import entropy_from_logits
from zerosearch.algos.kl import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    apply_kl_in_reward,
    kl_penalty,
    make_kl_controller,
)
from zerosearch.algos.losses import (
    AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    get_policy_loss,
    gspo_loss,
    kl_loss,
    policy_loss,
    total_actor_loss,
    value_loss,
)
from zerosearch.algos.masked import group_index, masked_mean, masked_sum, masked_var, masked_whiten

__all__ = [
    "ADV_ESTIMATORS",
    "AGG_MODES",
    "KL_ESTIMATORS",
    "POLICY_LOSSES",
    "AdaptiveKLController",
    "FixedKLController",
    "agg_loss",
    "apply_kl_in_reward",
    "compute_gae",
    "compute_grpo",
    "compute_reinforce",
    "compute_reinforce_plus_plus",
    "compute_reinforce_plus_plus_baseline",
    "compute_rloo",
    "entropy_from_logits",
    "get_adv_estimator",
    "get_policy_loss",
    "group_index",
    "gspo_loss",
    "kl_loss",
    "kl_penalty",
    "make_kl_controller",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "policy_loss",
    "total_actor_loss",
    "value_loss",
]
