"""KL estimators, the in-reward KL, the KL controllers and the chunked entropy."""

from __future__ import annotations

import pytest
import torch

from zerosearch.algos import (
    KL_ESTIMATORS,
    AdaptiveKLController,
    FixedKLController,
    apply_kl_in_reward,
    entropy_from_logits,
    kl_penalty,
    make_kl_controller,
)
from zerosearch.algos.entropy import entropy_from_logits_naive

MASK = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0, 0.0]])


@pytest.mark.parametrize("kind", sorted(KL_ESTIMATORS))
def test_kl_exactly_zero_when_equal(kind: str) -> None:
    logp = -torch.rand(3, 7, dtype=torch.float64) * 5
    assert torch.all(kl_penalty(logp, logp.clone(), kind) == 0)


def test_kl_estimators_by_hand_and_aliases() -> None:
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    d = logp - ref  # .5, -1
    torch.testing.assert_close(kl_penalty(logp, ref, "k1"), d)
    torch.testing.assert_close(kl_penalty(logp, ref, "abs"), d.abs())
    torch.testing.assert_close(kl_penalty(logp, ref, "k2"), d ** 2 / 2)
    torch.testing.assert_close(kl_penalty(logp, ref, "k3"), torch.exp(-d) - 1 + d)
    for alias, name in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")):
        torch.testing.assert_close(kl_penalty(logp, ref, alias), kl_penalty(logp, ref, name))
    # k3's clamps: a huge disagreement gives a finite 10.
    assert float(kl_penalty(torch.tensor([-100.0]), torch.tensor([0.0]), "k3")) == 10.0
    with pytest.raises(ValueError, match="unknown KL estimator 'full'; known: abs, k1, k2, k3, kl, low_var_kl, mse"):
        kl_penalty(logp, ref, "full")


def test_apply_kl_in_reward() -> None:
    scores = torch.tensor([[0.0, 0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.5, 0.0, 0.0]])
    old = -torch.rand(2, 5)
    ref = old - 0.1  # k1 = 0.1 on every token
    rewards, metrics = apply_kl_in_reward(scores, old, ref, MASK, 0.5, "kl")
    torch.testing.assert_close(rewards, scores - 0.05 * MASK)
    assert torch.all(rewards[MASK == 0] == 0)
    assert metrics["actor/reward_kl_penalty"] == pytest.approx(0.1)
    assert metrics["actor/reward_kl_penalty_coeff"] == 0.5


def test_kl_controllers() -> None:
    fixed = FixedKLController(0.001)
    fixed.update(5.0, 256)
    assert fixed.value == 0.001
    adaptive = AdaptiveKLController(0.1, target_kl=0.1, horizon=1000)
    adaptive.update(0.15, 100)  # error .5 clipped to .2: value *= 1 + .2 * 100 / 1000
    assert adaptive.value == pytest.approx(0.1 * 1.02)
    adaptive.update(0.09, 100)  # error -.1
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.99)
    adaptive.update(float("nan"), 100)
    assert adaptive.value == pytest.approx(0.1 * 1.02 * 0.99)
    assert isinstance(make_kl_controller("adaptive", 0.1), AdaptiveKLController)
    assert isinstance(make_kl_controller("fixed", 0.1), FixedKLController)
    with pytest.raises(ValueError, match="known: adaptive, fixed"):
        make_kl_controller("pid", 0.1)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 4096])
def test_entropy_chunked_equals_naive(chunk_size: int) -> None:
    logits = torch.randn(2, 5, 11, dtype=torch.float64) * 4
    out = entropy_from_logits(logits, chunk_size=chunk_size)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out, entropy_from_logits_naive(logits))
    # Gradients too: the backward recomputes the softmax chunk by chunk.
    weights = torch.randn(2, 5, dtype=torch.float64)
    x1, x2 = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    (g1,) = torch.autograd.grad((entropy_from_logits(x1, chunk_size=chunk_size) * weights).sum(), x1)
    (g2,) = torch.autograd.grad((entropy_from_logits_naive(x2) * weights).sum(), x2)
    torch.testing.assert_close(g1, g2)


def test_entropy_gradcheck_and_dtypes() -> None:
    logits = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: entropy_from_logits(z, chunk_size=3), (logits,))
    bf16 = torch.randn(3, 9).to(torch.bfloat16)
    assert entropy_from_logits(bf16).dtype == torch.float32
    torch.testing.assert_close(entropy_from_logits(bf16), entropy_from_logits_naive(bf16.float()))
    # A uniform distribution over V has entropy log V; a -inf (banned) entry contributes nothing.
    assert float(entropy_from_logits(torch.zeros(1, 8))[0]) == pytest.approx(torch.log(torch.tensor(8.0)).item())
    banned = torch.tensor([[0.0, 0.0, float("-inf"), 0.0]], requires_grad=True)
    h = entropy_from_logits(banned)
    h.sum().backward()
    assert float(h.detach()) == pytest.approx(torch.log(torch.tensor(3.0)).item())
    assert torch.isfinite(banned.grad).all() and float(banned.grad[0, 2]) == 0.0
    with pytest.raises(ValueError, match="chunk_size"):
        entropy_from_logits(logits, chunk_size=0)
