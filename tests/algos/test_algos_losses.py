"""Properties of the losses: aggregation by hand, masked gradients, ratio-1 gradients, clipping, registry."""

from __future__ import annotations

import math

import pytest
import torch

from zerosearch.algos import AGG_MODES, POLICY_LOSSES, KL_ESTIMATORS, get_policy_loss
from zerosearch.algos.losses import agg_loss, gspo_loss, kl_loss, policy_loss, total_actor_loss, value_loss

# Holes inside rows 0 and 1, padding everywhere, and row 3 with no policy token at all.
MASK = torch.tensor([
    [1, 1, 0, 0, 1, 0],
    [1, 0, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 1],
    [0, 0, 0, 0, 0, 0],
], dtype=torch.float32)
OFF = MASK == 0


def batch(seed: int = 0, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = MASK.shape
    return {
        "old_log_prob": -torch.rand(shape, generator=gen, dtype=dtype) * 3,
        "log_prob": -torch.rand(shape, generator=gen, dtype=dtype) * 3,
        "ref_log_prob": -torch.rand(shape, generator=gen, dtype=dtype) * 3,
        "advantages": torch.randn(shape, generator=gen, dtype=dtype),
        "values": torch.randn(shape, generator=gen, dtype=dtype),
        "old_values": torch.randn(shape, generator=gen, dtype=dtype),
        "returns": torch.randn(shape, generator=gen, dtype=dtype),
    }


# ---- aggregation ----------------------------------------------------------------------------------------

LOSS_MAT = torch.tensor([
    [1.0, 2.0, 100.0, 100.0, 3.0, 100.0],   # tokens 1, 2, 3: sum 6, mean 2
    [4.0, 100.0, 5.0, 6.0, 100.0, 100.0],   # tokens 4, 5, 6: sum 15, mean 5
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],         # sum 6, mean 1
    [100.0, 100.0, 100.0, 100.0, 100.0, 100.0],  # no tokens: ignored by every mode
])


@pytest.mark.parametrize(("mode", "expected"), [
    ("token-mean", 27.0 / 12.0),
    ("token-sum", 27.0),
    ("seq-mean-token-sum", 27.0 / 3.0),
    ("seq-mean-token-mean", (2.0 + 5.0 + 1.0) / 3.0),
    ("seq-mean-token-sum-norm", 27.0 / 3.0 / 6.0),
])
def test_agg_modes_by_hand(mode: str, expected: float) -> None:
    assert float(agg_loss(LOSS_MAT, MASK, mode)) == pytest.approx(expected)


def test_agg_norm_len_constant_and_empty_mask() -> None:
    assert float(agg_loss(LOSS_MAT, MASK, "seq-mean-token-sum-norm", norm_len=4096)) == pytest.approx(9.0 / 4096)
    for mode in AGG_MODES:
        assert float(agg_loss(LOSS_MAT, torch.zeros_like(MASK), mode)) == 0.0


@pytest.mark.parametrize("mode", AGG_MODES)
def test_agg_micro_batches_with_global_counts_sum_to_full_batch(mode: str) -> None:
    # Gradient accumulation: each micro-batch divided by the whole batch's counts sums to the full loss.
    full = agg_loss(LOSS_MAT, MASK, mode)
    tokens, seqs = MASK.sum(), (MASK.sum(-1) > 0).sum()
    parts = sum(agg_loss(LOSS_MAT[i:i + 2], MASK[i:i + 2], mode, total_tokens=tokens, total_seqs=seqs)
                for i in (0, 2))
    torch.testing.assert_close(parts, full)


def test_agg_unknown_mode() -> None:
    with pytest.raises(ValueError, match="unknown loss aggregation mode 'mean'.*token-mean.*seq-mean-token-sum-norm"):
        agg_loss(LOSS_MAT, MASK, "mean")


# ---- gradients at masked positions ---------------------------------------------------------------------

def _poison(x: torch.Tensor) -> torch.Tensor:
    """NaN on holes and padding, as garbage log-probs of padded tokens could be."""
    return torch.where(OFF, torch.full_like(x, float("nan")), x)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("mode", AGG_MODES)
def test_policy_loss_gradient_zero_off_mask(name: str, mode: str) -> None:
    b = batch()
    log_prob = _poison(b["log_prob"]).requires_grad_()
    loss, metrics = get_policy_loss(name)(_poison(b["old_log_prob"]), log_prob, _poison(b["advantages"]), MASK,
                                          clip_low=0.2, clip_high=0.28, clip_c=3.0, agg=mode, norm_len=None)
    loss.backward()
    assert torch.isfinite(loss) and all(math.isfinite(v) for v in metrics.values())
    assert torch.all(log_prob.grad[OFF] == 0)
    assert torch.any(log_prob.grad[~OFF] != 0)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_value_loss_gradient_zero_off_mask(mode: str) -> None:
    b = batch()
    values = _poison(b["values"]).requires_grad_()
    loss, clipfrac = value_loss(values, _poison(b["old_values"]), _poison(b["returns"]), MASK, 0.2, mode)
    loss.backward()
    assert torch.isfinite(loss) and math.isfinite(clipfrac)
    assert torch.all(values.grad[OFF] == 0)
    assert torch.any(values.grad[~OFF] != 0)


@pytest.mark.parametrize("kind", sorted(KL_ESTIMATORS))
def test_kl_loss_gradient_zero_off_mask(kind: str) -> None:
    b = batch()
    log_prob = _poison(b["log_prob"]).requires_grad_()
    loss = kl_loss(log_prob, _poison(b["ref_log_prob"]), MASK, kind)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.all(log_prob.grad[OFF] == 0)


# ---- ratio 1: the clipped loss is the plain policy gradient --------------------------------------------

@pytest.mark.parametrize("mode", AGG_MODES)
def test_ppo_at_ratio_one_is_plain_policy_gradient(mode: str) -> None:
    b = batch()
    log_prob = b["log_prob"].clone().requires_grad_()
    loss, metrics = policy_loss(b["log_prob"], log_prob, b["advantages"], MASK, 0.2, 0.28, 3.0, mode)
    (grad,) = torch.autograd.grad(loss, log_prob)
    plain_logp = b["log_prob"].clone().requires_grad_()
    (plain,) = torch.autograd.grad(agg_loss(-b["advantages"] * plain_logp, MASK, mode), plain_logp)
    torch.testing.assert_close(grad, plain, atol=1e-12, rtol=1e-12)
    assert metrics["pg_clipfrac"] == 0.0 and metrics["ppo_kl"] == 0.0 and metrics["pg_clipfrac_lower"] == 0.0


def test_gspo_at_ratio_one_is_plain_policy_gradient() -> None:
    b = batch()
    log_prob = b["log_prob"].clone().requires_grad_()
    loss, _ = gspo_loss(b["log_prob"], log_prob, b["advantages"], MASK, 3e-4, 4e-4)
    (grad,) = torch.autograd.grad(loss, log_prob)
    plain_logp = b["log_prob"].clone().requires_grad_()
    (plain,) = torch.autograd.grad(agg_loss(-b["advantages"] * plain_logp, MASK, "seq-mean-token-mean"), plain_logp)
    torch.testing.assert_close(grad, plain, atol=1e-12, rtol=1e-12)


# ---- clipping by hand ----------------------------------------------------------------------------------

ONE = torch.ones(1, 1)


def _ppo(ratio: float, adv: float, **kw: float) -> tuple[float, dict[str, float]]:
    loss, metrics = policy_loss(torch.zeros(1, 1), torch.full((1, 1), math.log(ratio)), torch.full((1, 1), adv), ONE,
                                **kw)
    return float(loss), metrics


def test_clip_higher() -> None:
    assert _ppo(1.25, 1.0, clip_high=0.2)[0] == pytest.approx(-1.2)
    assert _ppo(1.25, 1.0, clip_high=0.28)[0] == pytest.approx(-1.25)
    assert _ppo(1.25, 1.0, clip_high=0.2)[1]["pg_clipfrac"] == 1.0
    assert _ppo(0.5, -1.0, clip_low=0.2)[0] == pytest.approx(0.8)  # pessimistic: max(0.5, 0.8)


def test_dual_clip() -> None:
    loss, metrics = _ppo(5.0, -1.0, clip_c=3.0)  # max(5, 1.2) = 5, bounded by 3
    assert loss == pytest.approx(3.0) and metrics["pg_clipfrac_lower"] == 1.0
    assert _ppo(5.0, -1.0, clip_c=None)[0] == pytest.approx(5.0)
    assert _ppo(5.0, 1.0, clip_c=3.0)[0] == pytest.approx(-1.2)  # positive advantages are not dual-clipped
    with pytest.raises(ValueError, match="clip_c"):
        _ppo(1.0, 1.0, clip_c=0.5)


def test_value_loss_by_hand() -> None:
    # v = 1.0, v_old = 0.0, R = 2.0, clip .2: v_clip = .2; max((1-2)^2, (.2-2)^2) = 3.24; loss 1.62, clipped
    loss, clipfrac = value_loss(ONE, torch.zeros(1, 1), torch.full((1, 1), 2.0), ONE, 0.2)
    assert float(loss) == pytest.approx(1.62) and clipfrac == 1.0
    loss, clipfrac = value_loss(ONE, torch.zeros(1, 1), torch.full((1, 1), 2.0), ONE, None)
    assert float(loss) == pytest.approx(0.5) and clipfrac == 0.0


# ---- the actor total, the registry ---------------------------------------------------------------------

def test_total_actor_loss_signs() -> None:
    pg, ent, kl = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    assert float(total_actor_loss(pg, entropy=ent, entropy_coeff=0.1, kl=kl, kl_coef=0.01)) == pytest.approx(
        1.0 - 0.2 + 0.03)
    assert float(total_actor_loss(pg)) == 1.0


def test_policy_loss_registry() -> None:
    assert get_policy_loss("vanilla") is get_policy_loss("ppo")
    with pytest.raises(ValueError, match="unknown policy loss 'grpo'; known: gspo, ppo, vanilla"):
        get_policy_loss("grpo")
