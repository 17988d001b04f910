"""Properties of the advantage estimators: masking, holes, groups, registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zerosearch.algos import ADV_ESTIMATORS, get_adv_estimator, masked_whiten
from zerosearch.algos.advantages import (
    compute_gae,
    compute_grpo,
    compute_reinforce,
    compute_reinforce_plus_plus,
    compute_reinforce_plus_plus_baseline,
    compute_rloo,
)

# Two rows with holes (inserted <information> tokens) and right padding, one plain, one of a single token.
MASK = torch.tensor([
    [1, 1, 0, 0, 1, 1, 0, 0],
    [1, 0, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 0, 0, 0],
], dtype=torch.float32)
GROUPS = [0, 0, 1, 1]


def outcome_rewards(scores: list[float], mask: torch.Tensor = MASK) -> torch.Tensor:
    """Each score on its row's last policy token."""
    rewards = torch.zeros_like(mask)
    last = (mask * torch.arange(mask.shape[1])).argmax(dim=1)
    rewards[torch.arange(mask.shape[0]), last] = torch.tensor(scores)
    return rewards


def pack(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Remove the holes: each row's policy tokens moved to the left, padding after."""
    packed, packed_mask = torch.zeros_like(x), torch.zeros_like(mask)
    for i in range(x.shape[0]):
        keep = mask[i] != 0
        packed[i, : int(keep.sum())] = x[i, keep]
        packed_mask[i, : int(keep.sum())] = 1
    return packed, packed_mask


def unpack(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Re-insert the holes as 0."""
    out = torch.zeros_like(mask)
    for i in range(mask.shape[0]):
        keep = mask[i] != 0
        out[i, keep] = packed[i, : int(keep.sum())]
    return out


def test_gae_hand_computed() -> None:
    # gamma .9, lam .8: deltas .6, .16, -.32; A = .6, .16 + .72*.6 = .592, -.32 + .72*.592 = .10624
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.2, 0.4]])
    _, ret = compute_gae(rewards, values, torch.ones(1, 3), 0.9, 0.8)
    torch.testing.assert_close(ret, torch.tensor([[0.60624, 0.792, 1.0]]))
    # The same with a hole inserted at index 1: its value (99) and reward position are skipped.
    _, ret = compute_gae(torch.tensor([[0.0, 0.0, 0.0, 1.0]]), torch.tensor([[0.5, 99.0, 0.2, 0.4]]),
                         torch.tensor([[1.0, 0.0, 1.0, 1.0]]), 0.9, 0.8)
    torch.testing.assert_close(ret, torch.tensor([[0.60624, 0.0, 0.792, 1.0]]))


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (0.99, 0.95), (0.9, 0.5)])
def test_gae_hole_equals_hole_removed(gamma: float, lam: float) -> None:
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(MASK.shape, generator=gen)
    rewards = outcome_rewards([1.0, 0.0, 0.5, 1.0]) + 0.1 * torch.randn(MASK.shape, generator=gen) * MASK
    adv, ret = compute_gae(rewards, values, MASK, gamma, lam)
    p_rewards, p_mask = pack(rewards, MASK)
    p_values, _ = pack(values, MASK)
    p_adv, p_ret = compute_gae(p_rewards, p_values, p_mask, gamma, lam)
    torch.testing.assert_close(adv, unpack(p_adv, MASK))
    torch.testing.assert_close(ret, unpack(p_ret, MASK))


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_reinforce_plus_plus_hole_equals_hole_removed(gamma: float) -> None:
    rewards = outcome_rewards([1.0, 0.0, 0.5, 1.0])
    adv, ret = compute_reinforce_plus_plus(rewards, MASK, gamma)
    p_rewards, p_mask = pack(rewards, MASK)
    p_adv, p_ret = compute_reinforce_plus_plus(p_rewards, p_mask, gamma)
    torch.testing.assert_close(adv, unpack(p_adv, MASK))
    torch.testing.assert_close(ret, unpack(p_ret, MASK))
    # gamma 1: the return of every policy token is the outcome score.
    if gamma == 1.0:
        torch.testing.assert_close(ret, torch.tensor([1.0, 0.0, 0.5, 1.0])[:, None] * MASK)


@pytest.mark.parametrize("name", sorted(ADV_ESTIMATORS))
def test_outputs_exactly_zero_off_mask(name: str) -> None:
    rewards = outcome_rewards([1.0, -0.5, 0.25, 2.0])
    values = torch.randn(MASK.shape, generator=torch.Generator().manual_seed(1))
    adv, ret = get_adv_estimator(name)(rewards, MASK, values=values, group_ids=GROUPS, gamma=0.95, lam=0.9)
    assert adv.shape == ret.shape == MASK.shape
    assert torch.all(adv[MASK == 0] == 0) and torch.all(ret[MASK == 0] == 0)
    assert torch.isfinite(adv).all() and torch.isfinite(ret).all()


def test_grpo_sums_to_zero_within_groups() -> None:
    gen = torch.Generator().manual_seed(2)
    mask = (torch.rand(12, 10, generator=gen) > 0.3).float()
    mask[:, 0] = 1
    scores = torch.rand(12, generator=gen).tolist()
    groups = [i // 4 for i in range(12)]
    for norm_by_std in (True, False):
        adv, _ = compute_grpo(outcome_rewards(scores, mask), mask, groups, norm_by_std=norm_by_std)
        per_sample = adv[:, 0]
        for g in range(3):
            assert abs(float(per_sample[4 * g: 4 * g + 4].sum())) < 1e-5
        # The same value on every policy token of a sample.
        assert torch.all((adv == per_sample[:, None]) | (mask == 0))


def test_grpo_std_and_rloo_by_hand() -> None:
    scores = [1.0, 0.0, 0.5, 0.5]
    rewards = outcome_rewards(scores)
    adv, _ = compute_grpo(rewards, MASK, GROUPS)
    # group 0: mean .5, unbiased std sqrt(.5); group 1: all equal, std 0 -> 0 / (0 + 1e-6) = 0
    std = 0.5 ** 0.5 + 1e-6
    expected = torch.tensor([0.5 / std, -0.5 / std, 0.0, 0.0])
    torch.testing.assert_close(adv[:, 0], expected)
    adv, _ = compute_rloo(rewards, MASK, GROUPS)
    torch.testing.assert_close(adv[:, 0], torch.tensor([1.0, -1.0, 0.0, 0.0]))  # s_i - the other's score


def test_group_of_one() -> None:
    rewards = outcome_rewards([0.7, 1.0, 0.0, 0.25])
    groups = ["a", "b", "b", "c"]  # a and c are alone
    adv, _ = compute_grpo(rewards, MASK, groups)
    assert abs(float(adv[0, 0]) - 0.7 / (1 + 1e-6)) < 1e-6  # mean 0, std 1
    assert abs(float(adv[3, 0]) - 0.25 / (1 + 1e-6)) < 1e-6
    adv, _ = compute_grpo(rewards, MASK, groups, norm_by_std=False)
    assert float(adv[0, 0]) == pytest.approx(0.7)
    adv, _ = compute_rloo(rewards, MASK, groups)
    assert float(adv[0, 0]) == pytest.approx(0.7)  # nothing to leave out: the raw score


@pytest.mark.parametrize("name", ["grpo", "rloo", "reinforce_plus_plus_baseline", "dr_grpo"])
def test_group_ids_any_container(name: str) -> None:
    rewards = outcome_rewards([1.0, 0.0, 0.5, 0.25])
    fn = get_adv_estimator(name)
    reference, _ = fn(rewards, MASK, group_ids=[0, 0, 1, 1])
    for ids in ([7, 7, 3, 3], np.array([0, 0, 1, 1]), torch.tensor([0, 0, 1, 1]), ["u0", "u0", "u1", "u1"],
                np.array(["x", "x", "y", "y"]), np.array(["x", "x", "y", "y"], dtype=object), ("p", "p", 5, 5)):
        adv, _ = fn(rewards, MASK, group_ids=ids)
        torch.testing.assert_close(adv, reference, atol=0, rtol=0)


def test_group_ids_wrong_length_or_type() -> None:
    with pytest.raises(ValueError, match="4 samples"):
        compute_grpo(outcome_rewards([1.0, 0.0, 0.5, 0.25]), MASK, [0, 0, 1])
    with pytest.raises(TypeError):
        compute_grpo(outcome_rewards([1.0, 0.0, 0.5, 0.25]), MASK, "0011")


def test_dr_grpo_alias_ignores_norm_by_std() -> None:
    rewards = outcome_rewards([1.0, 0.0, 0.5, 0.25])
    expected, _ = compute_grpo(rewards, MASK, GROUPS, norm_by_std=False)
    for name in ("dr_grpo", "drgrpo"):
        adv, _ = get_adv_estimator(name)(rewards, MASK, group_ids=GROUPS, norm_by_std=True)
        torch.testing.assert_close(adv, expected)


def test_reinforce_is_outcome_on_every_policy_token() -> None:
    adv, ret = compute_reinforce(outcome_rewards([1.0, 0.0, 0.5, 0.25]), MASK)
    torch.testing.assert_close(adv, torch.tensor([1.0, 0.0, 0.5, 0.25])[:, None] * MASK)
    torch.testing.assert_close(ret, adv)


def test_reinforce_plus_plus_baseline_by_hand() -> None:
    scores = torch.tensor([1.0, 0.0, 0.5, 0.25])
    adv, _ = compute_reinforce_plus_plus_baseline(outcome_rewards(scores.tolist()), MASK, GROUPS)
    centred = (scores - torch.tensor([0.5, 0.5, 0.375, 0.375]))[:, None] * MASK
    torch.testing.assert_close(adv, masked_whiten(centred, MASK) * MASK)


def test_masked_whiten_uses_unbiased_variance_over_mask_only() -> None:
    x = torch.tensor([[1.0, 2.0, 1e6], [3.0, 1e6, 4.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    kept = torch.tensor([1.0, 2.0, 3.0, 4.0])
    expected = (kept - kept.mean()) / torch.sqrt(kept.var(unbiased=True) + 1e-8)
    torch.testing.assert_close(masked_whiten(x, mask)[mask == 1], expected)


def test_reward_on_masked_position_raises() -> None:
    rewards = torch.zeros_like(MASK)
    rewards[0, 2] = 1.0  # a hole
    with pytest.raises(ValueError, match="masked position"):
        compute_grpo(rewards, MASK, GROUPS)


def test_registry_rejects_unknown_and_missing_inputs() -> None:
    with pytest.raises(ValueError, match="unknown advantage estimator 'ppo'.*gae.*grpo.*rloo"):
        get_adv_estimator("ppo")
    rewards = outcome_rewards([1.0, 0.0, 0.5, 0.25])
    with pytest.raises(ValueError, match="values"):
        get_adv_estimator("gae")(rewards, MASK)
    with pytest.raises(ValueError, match="group_ids"):
        get_adv_estimator("grpo")(rewards, MASK)
