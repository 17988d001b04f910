"""fp32 master weights with bf16 compute: the GPU presets' dtype settings, forced to CPU, on real FSDP2 (one
gloo rank). One actor update at lr 1e-6 moves every weight by what fp32 AdamW predicts (the first Adam
step: w <- w (1 - lr wd) - lr g / (|g| + eps), about lr * sign(g)); with bf16 masters the same check fails,
because a step of 1e-6 is below bf16's resolution for all but the tiniest weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.workers.worker_fixtures import one_rank_group, rollout_batch, tiny_model_dir, worker_config  # noqa: F401
from zerosearch.workers import fsdp

PRESET = "experiment=zerosearch_qwen2.5_3b"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def _one_update(cfg) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor], float]:
    """Weights before, after, the gradients AdamW used (all float64, full) and the lr of the step."""
    from zerosearch.workers.actor import PolicyWorker

    torch.manual_seed(0)
    w = PolicyWorker(cfg, 0, 1, "cpu")
    assert w.compute_dtype == torch.bfloat16
    batch = rollout_batch(8, seed=3)
    batch.update(w.compute_log_prob(batch))
    if w.ref is not None:
        batch.update(w.compute_ref_log_prob(batch))
    # through state_dict: FSDP2 reshards there (a root kept unsharded after a forward holds plain tensors)
    params = dict(w.actor.state_dict(keep_vars=True))
    before = {k: p.full_tensor().double() for k, p in params.items()}
    out = w.update_actor(batch)
    assert out["actor/skipped_steps"] == 0.0
    params = dict(w.actor.state_dict(keep_vars=True))
    after = {k: p.full_tensor().double() for k, p in params.items()}
    grads = {k: p.grad.full_tensor().double() for k, p in params.items() if p.grad is not None}
    assert all(p.dtype == fsdp.master_dtype(cfg.model.dtype) for p in params.values())
    return before, after, grads, out["actor/lr"]


def _matches_adamw(before, after, grads, lr: float, wd: float) -> tuple[float, float]:
    """(share of weights with a non-zero gradient whose step equals fp32 AdamW's first step within fp32
    rounding, share of those weights that moved at all)."""
    ok = moved = total = 0
    eps32 = torch.finfo(torch.float32).eps
    for k, g in grads.items():
        w0, w1 = before[k], after[k]
        pred = w0 * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        live = g != 0
        tol = 2 * eps32 * w0.abs() + 1e-12  # two fp32 roundings (decay, step) of the stored weight
        ok += int(((w1 - pred).abs() <= tol)[live].sum())
        moved += int((w1 != w0)[live].sum())
        total += int(live.sum())
    assert total > 1000
    return ok / total, moved / total


def _preset_dtypes_on_cpu(model_dir: Path, *overrides: str):
    """The preset with its GPU dtype resolution made explicit (param_dtype auto -> bf16 on CUDA), on CPU."""
    cfg = worker_config(model_dir, PRESET, "actor.lr_warmup_steps=0", *overrides)
    assert cfg.actor.lr == 1e-6, "the preset's learning rate"
    gpu_compute = {torch.bfloat16: "bfloat16", torch.float32: "float32"}[fsdp.resolve_dtype(cfg.actor.param_dtype, "cuda")]
    assert gpu_compute == "bfloat16"
    return dataclasses.replace(cfg, actor=dataclasses.replace(cfg.actor, param_dtype=gpu_compute))


def test_fp32_masters_take_the_adamw_step_and_bf16_masters_lose_it(one_rank_group, model_dir):  # noqa: F811
    cfg = _preset_dtypes_on_cpu(model_dir)
    assert fsdp.master_dtype(cfg.model.dtype) == torch.float32, "the preset's masters must be fp32"
    before, after, grads, lr = _one_update(cfg)
    assert lr == 1e-6
    ok, moved = _matches_adamw(before, after, grads, lr, cfg.actor.weight_decay)
    assert ok == 1.0 and moved > 0.99, (ok, moved)
    # the readable form: a weight of ordinary size with a clear gradient moved by about lr * sign(g)
    for k, g in grads.items():
        clear = (g.abs() > 1e-4) & (before[k].abs() < 0.05)
        step = (after[k] - before[k])[clear]
        assert torch.allclose(step, -lr * torch.sign(g[clear]), rtol=0.05, atol=0.0), k

    with pytest.warns(UserWarning, match=r"model.dtype=bfloat16 keeps the master weights and AdamW's state in bf16"):
        cfg_bf16 = _preset_dtypes_on_cpu(model_dir, "model.dtype=bfloat16")
    before, after, grads, lr = _one_update(cfg_bf16)
    ok_bf16, moved_bf16 = _matches_adamw(before, after, grads, lr, cfg_bf16.actor.weight_decay)
    # measured: 0.001% of the weights take the predicted step, 2.3% move at all (the smallest ones, by a
    # rounded amount), the rest stay put; with fp32 masters 100% take it
    assert ok_bf16 < 0.1 and moved_bf16 < 0.1, (ok_bf16, moved_bf16)
