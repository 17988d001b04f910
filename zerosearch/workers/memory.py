"""Per-GPU memory of a training run, counted from the config and the model's shape (no GPU needed).

What one rank holds, by part (bytes), with FSDP2 full sharding over `world_size` ranks:

    actor/weights        model.dtype masters, 1/world of the parameters     P x bytes(model.dtype) / W
    actor/grads          the same shape and dtype as the masters             P x bytes(model.dtype) / W
    actor/adamw          exp_avg and exp_avg_sq, in the masters' dtype       2 P x bytes(model.dtype) / W
    actor/compute_copy   FSDP2 all-gathers units in param_dtype during a pass: the root (embeddings, final
                         norm, an untied lm_head) stays gathered, plus two decoder layers (the one computing
                         and the one prefetched)
    actor/logits         one micro-batch's fp32 logits: max_tokens_per_micro_batch x vocab x 4 (the bound:
                         every token a response token), only with use_dynamic_bsz (else rows x max length)
    rollout/hf_copy      rollout.engine=hf: an unsharded copy in param_dtype; vllm: 0
    rollout/vllm         rollout.engine=vllm: gpu_memory_utilization x gpu_bytes (vLLM's weights and KV
                         cache live inside this share; vLLM checks it is free when it starts)
    sync/gather          the weight sync's transient: the full model in param_dtype (fsdp.full_state_dict_as)
    ref/weights          with a KL term: the frozen reference, sharded, stored in param_dtype
    critic/*             PPO: weights, grads, AdamW (critic shape: no lm_head, a hidden x 1 score head with bias)

Parts with CPU offload (`actor.cpu_offload`, `critic.cpu_offload`) are reported under `host` instead of
`gpu`. Activations other than the logits are not counted (with gradient checkpointing they are the layer
inputs, tokens x hidden x 2 bytes x layers, a few GB at 16k tokens).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelShape:
    """The sizes that fix a Qwen2/Llama-style decoder's parameter count.

    Attributes:
        qkv_bias: q/k/v projections have a bias (Qwen2 yes, Llama no).
    """

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tie_word_embeddings: bool
    qkv_bias: bool = True
    head_dim: int | None = None

    @classmethod
    def from_hf_config(cls, config: dict[str, Any] | str | Path) -> "ModelShape":
        """From a config.json (its dict or path, or the model folder)."""
        if not isinstance(config, dict):
            p = Path(config)
            config = json.loads((p / "config.json" if p.is_dir() else p).read_text())
        return cls(hidden=config["hidden_size"], layers=config["num_hidden_layers"],
                   heads=config["num_attention_heads"],
                   kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
                   intermediate=config["intermediate_size"], vocab=config["vocab_size"],
                   tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                   qkv_bias=config.get("model_type") == "qwen2" or bool(config.get("attention_bias", False)),
                   head_dim=config.get("head_dim"))

    @property
    def dh(self) -> int:
        return self.head_dim or self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """One decoder layer: q, k, v, o projections (+ q/k/v biases), gate/up/down MLP, two RMSNorms."""
        q, kv = self.heads * self.dh, self.kv_heads * self.dh
        attn = self.hidden * (q + 2 * kv) + q * self.hidden + ((q + 2 * kv) if self.qkv_bias else 0)
        return attn + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def root_params(self) -> int:
        """What sits outside the decoder layers: embeddings, final norm, an untied lm_head."""
        emb = self.vocab * self.hidden
        return emb + self.hidden + (0 if self.tie_word_embeddings else emb)

    @property
    def n_params(self) -> int:
        return self.root_params + self.layers * self.layer_params

    @property
    def critic_params(self) -> int:
        """The value model: the backbone without lm_head, plus a hidden -> 1 score head with its bias."""
        return self.vocab * self.hidden + self.hidden + self.layers * self.layer_params + self.hidden + 1


# Published config.json values (huggingface.co/Qwen/Qwen2.5-3B, Qwen2.5-7B).
QWEN2_5_3B = ModelShape(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, vocab=151936,
                        tie_word_embeddings=True)
QWEN2_5_7B = ModelShape(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064,
                        tie_word_embeddings=False)


def _dtype_name(name: str, device: str = "cuda") -> str:
    """A config dtype as it resolves on `device` (masters: auto = float32; compute: auto = bf16 on GPU)."""
    return name if name != "auto" else ("bfloat16" if device == "cuda" else "float32")


def estimate_memory(cfg: Any, shape: ModelShape, world_size: int, gpu_bytes: float) -> dict[str, dict[str, float]]:
    """Bytes per rank by part, split into {"gpu": {...}, "host": {...}} (see the module docstring).

    Args:
        cfg: a `ZeroSearchConfig`.
        shape: the policy's shape (the critic is assumed to share the backbone).
        world_size: FSDP ranks (GPUs) the states are sharded over.
        gpu_bytes: one GPU's memory, for vLLM's share.
    """
    W = world_size
    master = BYTES["float32" if cfg.model.dtype == "auto" else cfg.model.dtype]
    compute = BYTES[_dtype_name(cfg.actor.param_dtype)]
    P = shape.n_params
    gpu: dict[str, float] = {}
    host: dict[str, float] = {}

    def put(name: str, nbytes: float, offloaded: bool = False) -> None:
        (host if offloaded else gpu)[name] = float(nbytes)

    off = cfg.actor.cpu_offload
    put("actor/weights", P * master / W, off)
    put("actor/grads", P * master / W, off)
    put("actor/adamw", 2 * P * master / W, off)
    put("actor/compute_copy", (shape.root_params + 2 * shape.layer_params) * compute)
    a = cfg.actor
    tokens = a.max_tokens_per_micro_batch if a.use_dynamic_bsz else (
        a.micro_batch_size_per_worker * cfg.rollout.max_total_length)
    put("actor/logits", tokens * shape.vocab * 4)
    put("rollout/hf_copy", P * compute if cfg.rollout.engine == "hf" else 0.0)
    put("rollout/vllm", cfg.rollout.gpu_memory_utilization * gpu_bytes if cfg.rollout.engine == "vllm" else 0.0)
    put("sync/gather", P * compute)
    if a.use_kl_loss or cfg.algorithm.use_kl_in_reward:
        put("ref/weights", P * compute / W, off)
    if cfg.algorithm.adv_estimator == "gae":
        c = cfg.critic
        c_off = c.cpu_offload if c.cpu_offload is not None else off
        Pc = shape.critic_params
        put("critic/weights", Pc * master / W, c_off)
        put("critic/grads", Pc * master / W, c_off)
        put("critic/adamw", 2 * Pc * master / W, c_off)
        put("critic/compute_copy", (Pc - shape.layers * shape.layer_params + 2 * shape.layer_params)
            * BYTES[_dtype_name(c.param_dtype)])
    return {"gpu": gpu, "host": host}


def peak_gpu_bytes(parts: dict[str, dict[str, float]]) -> float:
    """The sum of the GPU parts: everything resident at once (an upper bound: the logits, the sync gather and
    the HF copy's decoding do not all peak together)."""
    return sum(parts["gpu"].values())


KNOWN_SHAPES = {"Qwen/Qwen2.5-3B": QWEN2_5_3B, "Qwen/Qwen2.5-7B": QWEN2_5_7B}


def shape_of(model_path: str) -> ModelShape:
    """The shape from a local model folder's config.json, or a known hub id's published one."""
    if (Path(model_path) / "config.json").exists():
        return ModelShape.from_hf_config(model_path)
    if model_path in KNOWN_SHAPES:
        return KNOWN_SHAPES[model_path]
    raise ValueError(f"model.path={model_path!r}: no config.json there and not one of {', '.join(KNOWN_SHAPES)}")


def report(cfg: Any, world_size: int, gpu_gb: float) -> str:
    """A table of the parts in GiB (GPU and host) for one rank."""
    parts = estimate_memory(cfg, shape_of(cfg.model.path), world_size, gpu_gb * 2**30)
    lines = [f"{cfg.model.path}: {shape_of(cfg.model.path).n_params / 1e9:.2f} B parameters, {world_size} GPUs "
             f"of {gpu_gb:g} GiB, {cfg.algorithm.adv_estimator}, rollout.engine={cfg.rollout.engine}"]
    for where in ("gpu", "host"):
        for k, v in parts[where].items():
            if v:
                lines.append(f"  {where:4s} {k:20s} {v / 2**30:7.2f} GiB")
    lines.append(f"  gpu  total (upper bound) {peak_gpu_bytes(parts) / 2**30:7.2f} GiB of {gpu_gb:g}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """python -m zerosearch.workers.memory [--gpus 8] [--gpu-gb 80] OVERRIDES... (e.g. experiment=zerosearch_qwen2.5_7b)"""
    import argparse

    from zerosearch.run import load_config

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--gpus", type=int, default=8, help="FSDP ranks (GPUs) the states are sharded over")
    ap.add_argument("--gpu-gb", type=float, default=80.0, help="memory of one GPU, GiB")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    print(report(load_config(args.overrides, check_paths=False), args.gpus, args.gpu_gb))


if __name__ == "__main__":
    main()
