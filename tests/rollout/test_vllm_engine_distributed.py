"""VLLMEngine inside trainer ranks: 2 CPU processes with a gloo process group, as the FSDP2 workers run it.

Each rank builds its own in-process engine (vLLM joins the existing process group), generates, takes a
weight update and closes; the trainer's group must still work afterwards (vLLM's shutdown would destroy it).
About 20-30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import pytest

from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

pytestmark = pytest.mark.vllm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, model_dir: str, out_dir: str, port: int) -> None:
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    from transformers import AutoModelForCausalLM

    from zerosearch.generation.hf_engine import HFEngine
    from zerosearch.generation.types import SamplingParams
    from zerosearch.generation.vllm_engine import VLLMEngine

    result: dict = {"rank": rank}
    hf = HFEngine.from_pretrained(model_dir)
    prompt = hf.tokenizer.encode(["Answer the given question.", "The year 1969, the river"][rank])
    params = SamplingParams(temperature=0.0, max_new_tokens=12)
    eng = VLLMEngine(model_dir, dtype="float32", enforce_eager=True, max_model_len=256,
                     kv_cache_memory_bytes=32 << 20, seed=rank)
    result["before"] = eng.generate([prompt], params)[0].token_ids
    result["hf_before"] = hf.generate([prompt], params)[0].token_ids
    new = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(i))
           for i, (k, v) in enumerate(AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items())}
    eng.update_weights(new)
    hf.update_weights(new)
    result["after"] = eng.generate([prompt], params)[0].token_ids
    result["hf_after"] = hf.generate([prompt], params)[0].token_ids
    eng.close()
    result["dist_alive"] = dist.is_initialized()
    t = torch.ones(1)
    dist.all_reduce(t)
    result["all_reduce"] = t.item()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def test_engine_in_two_gloo_ranks(tmp_path_factory: pytest.TempPathFactory):
    import torch.multiprocessing as mp

    model_dir = make_tiny_model(tmp_path_factory.mktemp("tiny_dist"), TinySpec.preset("tiny", num_heads=4, num_kv_heads=2))
    out = tmp_path_factory.mktemp("dist_out")
    ctx = mp.start_processes(_rank_main, args=(str(model_dir), str(out), _free_port()), nprocs=2, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + 240
    try:
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                pytest.fail("ranks did not finish in 240 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    for rank in (0, 1):
        r = json.loads((out / f"rank{rank}.json").read_text())
        assert r["before"] == r["hf_before"] and r["after"] == r["hf_after"]
        assert r["after"] != r["before"]
        assert r["dist_alive"] and r["all_reduce"] == 2.0
