"""VLLMEngine's choices that need no vllm: the log-prob mode and the keyword arguments from the config."""

from __future__ import annotations

from dataclasses import replace

import pytest

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.generation.types import SamplingParams
from zerosearch.generation.vllm_engine import choose_logprobs_mode, engine_kwargs_from_config, logprobs_exact


@pytest.mark.parametrize("temperature,top_p,top_k,mode", [
    (1.0, 1.0, -1, "processed_logprobs"),  # ZeroSearch's training setting: both modes exact
    (0.7, 1.0, -1, "processed_logprobs"),  # only processed applies the temperature
    (1.0, 0.9, -1, "raw_logprobs"),  # only raw ignores the filter
    (1.0, 1.0, 20, "raw_logprobs"),
    (0.7, 0.9, -1, "processed_logprobs"),  # no exact mode
])
def test_choose_logprobs_mode(temperature, top_p, top_k, mode):
    assert choose_logprobs_mode(temperature, top_p, top_k) == mode
    exact = not (temperature != 1.0 and (top_p < 1.0 or top_k > 0))
    assert logprobs_exact(mode, SamplingParams(temperature=temperature, top_p=top_p, top_k=top_k)) == exact


def test_greedy_is_exact_in_both_modes():
    for mode in ("processed_logprobs", "raw_logprobs"):
        assert logprobs_exact(mode, SamplingParams(temperature=0.0, top_k=5, top_p=0.5))
    assert not logprobs_exact("raw_logprobs", SamplingParams(temperature=0.7))


def test_engine_kwargs_from_config():
    cfg = ZeroSearchConfig()
    cfg.rollout = replace(cfg.rollout, gpu_memory_utilization=0.3, tensor_parallel_size=2, enforce_eager=True,
                          max_total_length=1234, top_p=0.95)
    cfg.trainer = replace(cfg.trainer, seed=7)
    kw = engine_kwargs_from_config(cfg)
    assert kw["gpu_memory_utilization"] == 0.3 and kw["tensor_parallel_size"] == 2 and kw["enforce_eager"]
    assert kw["max_model_len"] == 1234 and kw["seed"] == 7
    assert kw["logprobs_mode"] == "raw_logprobs"  # T = 1 with top_p filtering
    import torch

    # the compute dtype actor.param_dtype=auto: float32 on CPU, bfloat16 on GPU
    assert kw["dtype"] == ("bfloat16" if torch.cuda.is_available() else "float32")
    cfg.actor = replace(cfg.actor, param_dtype="bfloat16")
    assert engine_kwargs_from_config(cfg)["dtype"] == "bfloat16"
    cfg.model = replace(cfg.model, dtype="float32")  # the masters' dtype never reaches the engine
    assert engine_kwargs_from_config(cfg)["dtype"] == "bfloat16"
