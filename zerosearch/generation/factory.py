"""Generation engines by name (`rollout.engine`), as the algorithms are (`algos.get_adv_estimator`).

A builder gets everything an engine of one trainer rank may need and takes what it uses:

    builder(cfg, tokenizer, model_path, policy, device, compute_dtype) -> GenerationEngine

- `model_path`: the policy's weights on disk (the trainer's `model_path` override included), for engines
  that load their own copy (vLLM);
- `policy`: an unsharded copy of the policy module that the engine takes over (moved and cast in place),
  for engines that decode in memory (HF); None for the others;
- `compute_dtype`: the dtype the engine runs in (`actor.param_dtype`), whatever the master weights' dtype.

`needs_policy_copy(name)` tells the caller whether to make that copy: an engine that loads its own weights
(vLLM) gets none, so none is made (at 7B in bf16, 15 GB per GPU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from zerosearch.generation.types import GenerationEngine

EngineBuilder = Callable[[Any, Any, str, "torch.nn.Module | None", torch.device, torch.dtype], GenerationEngine]


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: its builder and whether it decodes with an in-memory copy of the policy."""

    build: EngineBuilder
    uses_policy_copy: bool


def _build_hf(cfg: Any, tokenizer: Any, model_path: str, policy: torch.nn.Module | None, device: torch.device,
              compute_dtype: torch.dtype) -> GenerationEngine:
    from zerosearch.generation.hf_engine import HFEngine

    if policy is None:
        raise ValueError("rollout.engine=hf decodes with a copy of the policy module: pass policy=")
    # unsharded, in the compute dtype, never trained: the trainer loads new weights after each update
    model = policy.to(device=device, dtype=compute_dtype).eval()
    model.config.use_cache = True
    for p in model.parameters():
        p.requires_grad_(False)
    return HFEngine(model, tokenizer, cfg.rollout.micro_batch_size, cfg.rollout.cpu_decode_kernels)


def _build_vllm(cfg: Any, tokenizer: Any, model_path: str, policy: torch.nn.Module | None, device: torch.device,
                compute_dtype: torch.dtype) -> GenerationEngine:
    from zerosearch.generation.vllm_engine import VLLMEngine

    return VLLMEngine.from_config(cfg, tokenizer, model_path=model_path)


GENERATION_ENGINES: dict[str, EngineSpec] = {
    "hf": EngineSpec(_build_hf, uses_policy_copy=True),
    "vllm": EngineSpec(_build_vllm, uses_policy_copy=False),
}


def get_engine_spec(name: str) -> EngineSpec:
    """The engine registered under `name`; ValueError listing the known names otherwise."""
    try:
        return GENERATION_ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown generation engine '{name}' (rollout.engine); known: "
                         f"{', '.join(sorted(GENERATION_ENGINES))}") from None


def needs_policy_copy(name: str) -> bool:
    """Whether engine `name` decodes with an unsharded in-memory copy of the policy."""
    return get_engine_spec(name).uses_policy_copy


def build_generation_engine(name: str, cfg: Any, tokenizer: Any, model_path: str, *,
                            policy: torch.nn.Module | None = None, device: torch.device | str = "cpu",
                            compute_dtype: torch.dtype = torch.float32) -> GenerationEngine:
    """Build the engine registered under `name` for one rank (see the module docstring for the arguments)."""
    return get_engine_spec(name).build(cfg, tokenizer, str(model_path), policy, torch.device(device), compute_dtype)
