"""Generation engines by name (generation/factory.py) and the policy worker's use of it: an unknown name is a
clear error, the hf engine decodes with a copy of the policy in the compute dtype, and a `model_path`
override is what every copy of the policy (actor, rollout engine) is loaded from."""

from __future__ import annotations

import pytest
import torch

from tests.workers.worker_fixtures import SPEC, one_rank_group, tiny_model_dir, worker_config  # noqa: F401
from zerosearch.generation.factory import GENERATION_ENGINES, build_generation_engine, needs_policy_copy


def test_unknown_engine_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown generation engine 'vlm' \(rollout.engine\); known: hf, vllm"):
        build_generation_engine("vlm", None, None, "x")
    assert needs_policy_copy("hf") and not needs_policy_copy("vllm")


def test_validation_accepts_exactly_the_registered_engines(tmp_path):
    from zerosearch.config.validate import ConfigError

    for name in GENERATION_ENGINES:
        assert worker_config(tmp_path, f"rollout.engine={name}").rollout.engine == name
    with pytest.raises(ConfigError, match="rollout.engine='sglang'"):
        worker_config(tmp_path, "rollout.engine=sglang")


def test_hf_engine_takes_the_policy_copy_in_the_compute_dtype(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = tiny_model_dir(tmp_path / "m")
    cfg = worker_config(d)
    with pytest.raises(ValueError, match="rollout.engine=hf decodes with a copy of the policy"):
        build_generation_engine("hf", cfg, None, str(d))
    policy = AutoModelForCausalLM.from_pretrained(d)
    eng = build_generation_engine("hf", cfg, AutoTokenizer.from_pretrained(d), str(d), policy=policy,
                                  compute_dtype=torch.bfloat16)
    params = list(eng.model.parameters())
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in params)
    assert not eng.model.training and eng.micro_batch_size == cfg.rollout.micro_batch_size


def test_model_path_override_reaches_the_actor_and_the_rollout_engine(one_rank_group, tmp_path):  # noqa: F811
    from transformers import AutoModelForCausalLM

    from zerosearch.workers.actor import PolicyWorker
    from zerosearch.workers.fsdp import full_state_dict_as

    a = tiny_model_dir(tmp_path / "a")
    b = tiny_model_dir(tmp_path / "b", SPEC.__class__(**{**SPEC.__dict__, "seed": 5}))
    w = PolicyWorker(worker_config(a, "actor.use_kl_loss=false"), 0, 1, "cpu", model_path=str(b))
    want = AutoModelForCausalLM.from_pretrained(b).state_dict()
    other = AutoModelForCausalLM.from_pretrained(a).state_dict()
    key = "model.layers.0.mlp.up_proj.weight"
    assert not torch.equal(want[key], other[key])
    assert torch.equal(full_state_dict_as(w.actor, torch.float32)[key], want[key])
    assert torch.equal(w.engine.model.state_dict()[key], want[key])
