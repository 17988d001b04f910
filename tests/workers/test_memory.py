"""The per-GPU memory accounting (workers/memory.py) against a hand count for a tiny model, against the real
modules' parameter counts, and against the published sizes of Qwen2.5-3B/7B."""

from __future__ import annotations

import dataclasses

import pytest

from tests.workers.worker_fixtures import tiny_model_dir, worker_config
from zerosearch.workers.memory import QWEN2_5_3B, QWEN2_5_7B, ModelShape, estimate_memory, peak_gpu_bytes


def _hand_count(V: int) -> tuple[int, int, int]:
    """Parameters of SPEC (hidden 64, 2 layers, 2 heads of 32, 1 kv head, MLP 128, tied), counted by hand:
    (one layer, the policy, the critic)."""
    q = 64 * 64 + 64       # q_proj with bias
    k = 64 * 32 + 32       # one kv head of 32: k_proj with bias
    v = 64 * 32 + 32
    o = 64 * 64            # o_proj, no bias
    mlp = 3 * 64 * 128     # gate, up, down
    norms = 2 * 64         # input and post-attention RMSNorm
    layer = q + k + v + o + mlp + norms
    assert layer == 37120
    policy = V * 64 + 64 + 2 * layer            # tied lm_head: the embedding once, + the final norm
    critic = V * 64 + 64 + 2 * layer + 64 + 1   # no lm_head; score head hidden -> 1 with its bias
    return layer, policy, critic


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


def test_shape_counts_equal_the_hand_count_and_the_real_modules(model_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from zerosearch.workers.fsdp import load_value_model

    shape = ModelShape.from_hf_config(model_dir)
    assert (shape.hidden, shape.layers, shape.heads, shape.kv_heads, shape.dh) == (64, 2, 2, 1, 32)
    layer, policy, critic = _hand_count(shape.vocab)
    assert (shape.layer_params, shape.n_params, shape.critic_params) == (layer, policy, critic)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert sum(p.numel() for p in model.parameters()) == policy
    value = load_value_model(str(model_dir), torch.float32)
    assert sum(p.numel() for p in value.parameters()) == critic


def test_published_qwen_sizes():
    assert QWEN2_5_3B.n_params == 3_085_938_688  # "3.09B" on the model card
    assert QWEN2_5_7B.n_params == 7_615_616_512  # "7.61B"
    assert QWEN2_5_7B.n_params - QWEN2_5_7B.root_params == 6_525_618_176  # "6.53B non-embedding"


def test_estimate_memory_equals_the_hand_count(model_dir):
    V = ModelShape.from_hf_config(model_dir).vocab
    layer, P, Pc = _hand_count(V)
    root = V * 64 + 64
    W, gpu = 2, 1000.0
    # GRPO (KL loss: a reference), hf engine, fixed micro-batches of 8 rows of up to 600 tokens
    cfg = worker_config(model_dir, "model.dtype=float32", "actor.param_dtype=bfloat16", "rollout.engine=hf",
                        "actor.micro_batch_size_per_worker=8", "rollout.max_total_length=600",
                        "data.max_prompt_length=400")
    parts = estimate_memory(cfg, ModelShape.from_hf_config(model_dir), W, gpu)
    assert parts["host"] == {}
    assert parts["gpu"] == {
        "actor/weights": P * 4 / 2, "actor/grads": P * 4 / 2, "actor/adamw": 2 * P * 4 / 2,
        "actor/compute_copy": (root + 2 * layer) * 2, "actor/logits": 8 * 600 * V * 4,
        "rollout/hf_copy": P * 2, "rollout/vllm": 0.0, "sync/gather": P * 2, "ref/weights": P * 2 / 2}
    assert peak_gpu_bytes(parts) == sum(parts["gpu"].values())

    # PPO with vLLM at 0.6 of the GPU, the actor offloaded to the host, the critic kept on the GPU
    cfg = worker_config(model_dir, "algorithm=ppo", "rollout.engine=vllm", "rollout.gpu_memory_utilization=0.6",
                        "actor.cpu_offload=true", "critic.cpu_offload=false", "actor.use_dynamic_bsz=true",
                        "actor.max_tokens_per_micro_batch=300")
    parts = estimate_memory(cfg, ModelShape.from_hf_config(model_dir), W, gpu)
    assert parts["host"] == {"actor/weights": P * 2.0, "actor/grads": P * 2.0, "actor/adamw": P * 4.0,
                             "ref/weights": P * 1.0}  # the reference in the compute dtype (auto: bf16 on GPU)
    g = parts["gpu"]
    assert g["rollout/hf_copy"] == 0.0 and g["rollout/vllm"] == 600.0 and g["actor/logits"] == 300 * V * 4
    assert (g["critic/weights"], g["critic/grads"], g["critic/adamw"]) == (Pc * 2.0, Pc * 2.0, Pc * 4.0)
    assert g["critic/compute_copy"] == (root + 65 + 2 * layer) * 2

    bf16 = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, dtype="bfloat16"))
    assert estimate_memory(bf16, ModelShape.from_hf_config(model_dir), W, gpu)["host"]["actor/adamw"] == P * 2.0
