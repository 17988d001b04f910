"""The policy worker with rollout.engine=vllm (one gloo rank in a fresh process, as a trainer rank runs it):
no unsharded HF copy of the policy is kept, a `model_path` override reaches the vLLM engine (it decodes the
override's weights, not model.path's), and the weight sync (gathered in the compute dtype) keeps them."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest

from tests.workers.worker_fixtures import SPEC, tiny_model_dir

pytestmark = pytest.mark.vllm


def _rank(model_a: str, model_b: str, out: str, store: str) -> None:
    import dataclasses

    import torch
    import torch.distributed as dist

    from tests.workers.worker_fixtures import worker_config
    from zerosearch.generation.hf_engine import HFEngine
    from zerosearch.generation.types import SamplingParams
    from zerosearch.workers.actor import PolicyWorker

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    cfg = worker_config(Path(model_a), "rollout.engine=vllm", "rollout.enforce_eager=true",
                        "rollout.gpu_memory_utilization=0.1", "rollout.max_total_length=256",
                        "data.max_prompt_length=128", "actor.use_kl_loss=false")
    w = PolicyWorker(cfg, 0, 1, "cpu", model_path=model_b)
    modules = sorted(k for k, v in vars(w).items() if isinstance(v, torch.nn.Module))
    prompt = w.tokenizer.encode("some text for merges, questions")
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    got = w.generate([prompt], params)[0]
    w.sync_rollout_weights()
    after_sync = w.generate([prompt], params)[0]
    res = {"engine": type(w.engine).__name__, "engine_path": w.engine.model_path, "modules": modules,
           "got": got.token_ids, "got_lp": got.log_probs, "after_sync_lp": after_sync.log_probs,
           "model_path": w.model_path,
           "dtype": str(w.compute_dtype), "cfg_path": cfg.model.path}
    w.engine.close()
    for name, path in (("hf_a", model_a), ("hf_b", model_b)):  # log-probs of the same tokens under each model
        res[name] = HFEngine.from_pretrained(path).generate([prompt + got.token_ids[:-1]], dataclasses.replace(
            params, max_new_tokens=1))[0].log_probs
    Path(out).write_text(json.dumps(res))
    dist.destroy_process_group()


def test_vllm_worker_keeps_no_policy_copy_and_serves_the_model_path_override(tmp_path):
    a = tiny_model_dir(tmp_path / "a")
    b = tiny_model_dir(tmp_path / "b", SPEC.__class__(**{**SPEC.__dict__, "seed": 5}))
    out = tmp_path / "res.json"
    p = mp.get_context("spawn").Process(target=_rank, args=(str(a), str(b), str(out), str(tmp_path / "store")))
    p.start()
    p.join(300)
    if p.is_alive():
        p.kill()
        pytest.fail("the vLLM worker process hung")
    assert p.exitcode == 0 and out.exists(), f"rank failed (exit {p.exitcode})"
    r = json.loads(out.read_text())
    assert r["engine"] == "VLLMEngine" and r["cfg_path"] == str(a)
    assert r["model_path"] == r["engine_path"] == str(b), "model_path must reach the vLLM engine"
    assert r["modules"] == ["actor"], f"no unsharded policy copy beside the sharded actor: {r['modules']}"
    # the last token's greedy log-prob: that of model_path's weights (b), not model.path's (a)
    lp, lp_sync, lp_b, lp_a = r["got_lp"][-1], r["after_sync_lp"][-1], r["hf_b"][0], r["hf_a"][0]
    assert abs(lp_a - lp_b) > 1e-3, "the two tiny models must differ for the check to mean anything"
    assert abs(lp - lp_b) < 1e-4 and abs(lp_sync - lp_b) < 1e-4, (lp, lp_sync, lp_b, lp_a)
