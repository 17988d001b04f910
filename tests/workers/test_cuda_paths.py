"""The CUDA-only paths, run when a device is lent (`gpu` marker: skipped without CUDA): FSDP2 over NCCL with
fp32 master weights and bf16 compute taking fp32 AdamW's step, and the HF engine's sampler on the device
reporting the log-probs a full forward recomputes. The same logic runs on CPU in test_master_precision.py
and tests/rollout/test_engine_consistency.py; these check what only a GPU has (NCCL, CUDA kernels, bf16
autocast of FSDP2's mixed precision on the device)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import pytest
import torch

from tests.workers.test_master_precision import PRESET, _matches_adamw
from tests.workers.worker_fixtures import rollout_batch, tiny_model_dir, worker_config

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def nccl_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.fail("a process group is already initialised in this test process")
    torch.cuda.set_device(0)
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("nccl", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_nccl_fsdp2_fp32_masters_bf16_compute_take_the_adamw_step(nccl_group, model_dir):
    from zerosearch.workers import fsdp
    from zerosearch.workers.actor import PolicyWorker

    cfg = worker_config(model_dir, PRESET, "actor.lr_warmup_steps=0")
    cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, device="cuda"))
    torch.manual_seed(0)
    w = PolicyWorker(cfg, 0, 1, "cuda")
    assert w.compute_dtype == torch.bfloat16  # param_dtype auto on CUDA
    batch = rollout_batch(8, seed=3)
    batch.update(w.compute_log_prob(batch))
    if w.ref is not None:
        batch.update(w.compute_ref_log_prob(batch))
    params = dict(w.actor.state_dict(keep_vars=True))
    assert all(p.dtype == torch.float32 and p.device.type == "cuda" for p in params.values())
    before = {k: p.full_tensor().double().cpu() for k, p in params.items()}
    out = w.update_actor(batch)
    assert out["actor/skipped_steps"] == 0.0 and out["actor/lr"] == 1e-6
    params = dict(w.actor.state_dict(keep_vars=True))
    after = {k: p.full_tensor().double().cpu() for k, p in params.items()}
    grads = {k: p.grad.full_tensor().double().cpu() for k, p in params.items() if p.grad is not None}
    assert all(p.dtype == fsdp.master_dtype(cfg.model.dtype) for p in params.values())
    ok, moved = _matches_adamw(before, after, grads, 1e-6, cfg.actor.weight_decay)
    assert ok == 1.0 and moved > 0.99, (ok, moved)
    # the rollout engine got the new weights in the compute dtype, on the device
    w.sync_rollout_weights()
    outs = w.generate([[5, 6, 7, 8]], dataclasses.replace(_greedy(), max_new_tokens=4))
    assert len(outs[0].token_ids) == 4


def _greedy():
    from zerosearch.generation.types import SamplingParams

    return SamplingParams(temperature=0.0, max_new_tokens=8)


def test_hf_engine_on_cuda_reports_the_log_probs_a_forward_recomputes(model_dir):
    from zerosearch.generation.hf_engine import HFEngine
    from zerosearch.generation.types import SamplingParams

    engine = HFEngine.from_pretrained(str(model_dir), device="cuda", dtype=torch.float32)
    prompts = [[5, 6, 7, 8, 9], [11, 12], [13, 14, 15]]
    outs = engine.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=8, seed=3))
    for p, o in zip(prompts, outs):
        ids = torch.tensor([p + o.token_ids], device="cuda")
        with torch.no_grad():
            logits = engine.model(ids).logits[0, len(p) - 1:-1].float() / 0.7
        want = torch.log_softmax(logits, -1).gather(-1, ids[0, len(p):, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(o.log_probs, device="cuda"), want, atol=1e-3), (o.log_probs, want)
    again = engine.generate(prompts, SamplingParams(temperature=0.7, max_new_tokens=8, seed=3))
    assert [o.token_ids for o in again] == [o.token_ids for o in outs]  # seeded on the device too
