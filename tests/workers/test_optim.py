"""The trainer's AdamW is the fused kernel, and it takes the same step as the reference (foreach) AdamW."""

from __future__ import annotations

import torch

from zerosearch.workers.optim import build_optimizer


def _params(seed: int) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for shape in ((64, 32), (32,), (7, 5, 3))]


def test_fused_adamw_takes_the_reference_steps():
    fused_params, ref_params = _params(0), _params(0)
    frozen = torch.nn.Parameter(torch.zeros(3), requires_grad=False)
    fused = build_optimizer([*fused_params, frozen], lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99))
    assert fused.defaults["fused"] is True
    assert sum(len(g["params"]) for g in fused.param_groups) == 3  # frozen parameters are left out
    ref = torch.optim.AdamW(ref_params, lr=1e-3, weight_decay=0.01, betas=(0.9, 0.99), foreach=True)
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        for a, b in zip(fused_params, ref_params):
            grad = torch.randn(a.shape, generator=g)
            a.grad, b.grad = grad.clone(), grad.clone()
        fused.step()
        ref.step()
    for a, b, start in zip(fused_params, ref_params, _params(0)):
        assert not torch.equal(a.detach(), start)  # the steps moved the weights
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)
