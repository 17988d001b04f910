"""The rollout engine on plain transformers: the shared batched KV-cache sampler
(zerosearch.generation.sampler) behind the GenerationEngine interface.

Works on CPU and GPU; colocated with a trainer it decodes with the trainer's rollout copy of the weights,
updated in place after each step.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import torch

from zerosearch.generation.cpu_kernels import (EAGER_EQUALS_SDPA, SDPA_GQA, drop_packed_weights, pack_linear_weights,
                                               use_sdpa_gqa)
from zerosearch.generation.fused_decode import disable_fused_decode, enable_fused_decode, unsupported_reason
from zerosearch.generation.sampler import ContinuousBatch, StopChecker, sample_batch
from zerosearch.generation.types import GenerationEngine, GenerationOutput, GenerationStream, SamplingParams
from zerosearch.utils.seeding import stable_seed

logger = logging.getLogger(__name__)


class HFEngine(GenerationEngine):
    """Batched sampling with a KV cache on a transformers causal LM.

    Args:
        model: a causal LM module in eval mode.
        tokenizer: its tokenizer (stop strings, padding).
        micro_batch_size: sequences decoded together; larger batches are split.
        cpu_kernels: on CPU, decode with `sdpa_gqa` attention and prepacked bf16 weights
            (`generation.cpu_kernels`: the same tokens, faster), and for Qwen2/LLaMA through the fused
            decoder (`generation.fused_decode`: fused q/k/v and gate/up projections; the same tokens up to
            the last bits of a matmul). `attention`, `packed_linears` and `fused_decode` say what was applied.
        fused_decode: with `cpu_kernels`, whether to use the fused decoder (False: benchmarks' comparison).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Any, micro_batch_size: int = 256,
                 cpu_kernels: bool = True, fused_decode: bool = True):
        self.model = model
        on_cpu = next(model.parameters()).device.type == "cpu"
        if cpu_kernels and on_cpu:
            use_sdpa_gqa(model)
        self.packed_linears = pack_linear_weights(model) if cpu_kernels and on_cpu else 0
        # after packing: the fused projections take the class (PackedLinear or Linear) of those they replace
        self.fused_decode = cpu_kernels and fused_decode and on_cpu and enable_fused_decode(model) is not None
        if not self.fused_decode:
            disable_fused_decode(model)  # a model fused by an earlier engine: this engine's setting holds
        self.attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if cpu_kernels and on_cpu:
            # a kernel that could not be applied costs speed, not correctness: say so once, with the reason
            bf16 = next(model.parameters()).dtype == torch.bfloat16
            missing = ([f"attention stays {self.attention} (sdpa_gqa applies to sdpa, and to eager for "
                        f"{', '.join(sorted(EAGER_EQUALS_SDPA))})"] if self.attention != SDPA_GQA else [])
            if bf16 and not self.packed_linears:
                missing.append("bf16 weights unpacked (this CPU or build has no oneDNN bf16)")
            if fused_decode and not self.fused_decode:
                missing.append(f"transformers' forward, not the fused decoder: {unsupported_reason(model)}")
            if missing:
                logger.warning("rollout.cpu_decode_kernels: %s", "; ".join(missing))
        self.tokenizer = tokenizer
        self.micro_batch_size = micro_batch_size
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self._stop_checkers: dict[tuple[str, ...], StopChecker] = {}
        self._generator = torch.Generator(device="cpu")
        self._generator.seed()

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", dtype: torch.dtype = torch.float32,
                        micro_batch_size: int = 256, attn_implementation: str = "sdpa",
                        cpu_kernels: bool = True) -> "HFEngine":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation)
        return cls(model.to(device).eval(), tok, micro_batch_size, cpu_kernels)

    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Copy a full state dict into the engine's module in place (keys as the HF model's)."""
        missing, unexpected = self.model.load_state_dict(state_dict, strict=False)
        tied = {k for k in missing if k.endswith("lm_head.weight")} if getattr(
            self.model.config, "tie_word_embeddings", False) else set()
        if set(missing) - tied or unexpected:
            raise ValueError(f"weight update does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
                             f"unexpected {sorted(unexpected)[:5]}")
        drop_packed_weights(self.model)  # load_state_dict bumps the versions too; this does not rely on it

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        n = len(prompts)
        if max_new_tokens is not None and len(max_new_tokens) != n:
            raise ValueError(f"max_new_tokens has {len(max_new_tokens)} entries for {n} prompts")
        if seeds is not None and len(seeds) != n:
            raise ValueError(f"seeds has {len(seeds)} entries for {n} prompts")
        if seeds is None and params.seed is not None:
            seeds = [stable_seed(params.seed, i) for i in range(n)]
        caps = [min(params.max_new_tokens, c) for c in max_new_tokens] if max_new_tokens is not None else [
            params.max_new_tokens] * n
        stops = self._stop_checkers.setdefault(params.stop_strings, StopChecker(self.tokenizer, params.stop_strings))
        # longest prompts first keeps micro-batches similar in length (less padding)
        order = sorted(range(n), key=lambda i: -len(prompts[i]))
        results: list[GenerationOutput | None] = [None] * n
        for s in range(0, n, self.micro_batch_size):
            idx = order[s:s + self.micro_batch_size]
            outs = sample_batch(self.model, self.tokenizer, [prompts[i] for i in idx], [caps[i] for i in idx],
                                temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
                                stop_token_ids=params.stop_token_ids, stop_checker=stops,
                                row_seeds=[seeds[i] for i in idx] if seeds is not None else None,
                                generator=self._generator, pad_id=self.pad_id)
            for i, o in zip(idx, outs):
                results[i] = o
        return results  # type: ignore[return-value]

    def open_stream(self, params: SamplingParams) -> GenerationStream:
        """Continuous batching on the same sampler (`sampler.ContinuousBatch`), at most `micro_batch_size`
        sequences decoding at once; a sequence's cap is min(params.max_new_tokens, its own)."""
        stops = self._stop_checkers.setdefault(params.stop_strings, StopChecker(self.tokenizer, params.stop_strings))
        return ContinuousBatch(
            self.model, self.tokenizer, temperature=params.temperature, top_p=params.top_p, top_k=params.top_k,
            stop_token_ids=params.stop_token_ids, stop_checker=stops, generator=self._generator, pad_id=self.pad_id,
            max_batch=self.micro_batch_size, max_new_tokens=params.max_new_tokens)

