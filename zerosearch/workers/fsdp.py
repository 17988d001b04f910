"""FSDP2 plumbing: process groups, loading and sharding HF models, full state dicts.

The same code runs on CPU (gloo) and GPU (NCCL). FSDP2 (`fully_shard`) is used rather than FSDP1: it
works on CPU with gloo, in fp32 and bf16 mixed precision, and its state-dict path is stable there (FSDP1's
CPU-offload state dict crashes on CPU, ../shared/ENVIRONMENT.md).
"""

from __future__ import annotations

import datetime
import os
import warnings
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# FSDP2 warns that HF heads return views; nothing here modifies model outputs in place (slicing, .float()).
warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")


def resolve_device(device: str) -> str:
    """auto -> cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("trainer.device=cuda but no CUDA device is visible")
    return device


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """A compute dtype (`actor.param_dtype`, `critic.param_dtype`): auto -> bf16 on GPU, fp32 on CPU (fp32
    keeps CPU runs exact and reproducible)."""
    if name == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return DTYPES[name]


def master_dtype(name: str) -> torch.dtype:
    """The dtype of the trained weights and so of their gradients and AdamW state (`model.dtype`): auto ->
    fp32 on every device. Compute precision is separate (`resolve_dtype` of param_dtype, FSDP2 casts)."""
    return torch.float32 if name == "auto" else DTYPES[name]


def init_distributed(rank: int, world_size: int, master_addr: str, master_port: int, device: str) -> None:
    """Join the process group (gloo on CPU, NCCL on GPU). Idempotent."""
    if dist.is_initialized():
        return
    os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    backend = "nccl" if device == "cuda" else "gloo"
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=datetime.timedelta(minutes=30))


def device_for_rank(device: str) -> torch.device:
    if device == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def load_causal_lm(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                   trust_remote_code: bool = False, gradient_checkpointing: bool = False) -> nn.Module:
    """Load a HF causal LM in full on this rank (it is sharded afterwards)."""
    from transformers import AutoModelForCausalLM

    _check_attn(attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn_implementation,
                                                 trust_remote_code=trust_remote_code)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    return model


def load_value_model(path: str, dtype: torch.dtype, attn_implementation: str = "sdpa",
                     trust_remote_code: bool = False, gradient_checkpointing: bool = False) -> nn.Module:
    """A critic: the LM backbone with a scalar head (token classification, 1 label, no dropout)."""
    from transformers import AutoConfig, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    _check_attn(attn_implementation)
    hf_logging.set_verbosity_error()  # the value head is new by design; its "MISSING score.*" report is noise
    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    config.num_labels = 1
    config.classifier_dropout = 0.0
    model = AutoModelForTokenClassification.from_pretrained(
        path, config=config, dtype=dtype, attn_implementation=attn_implementation,
        trust_remote_code=trust_remote_code)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def _check_attn(attn_implementation: str) -> None:
    if attn_implementation == "flash_attention_2":
        from zerosearch.utils.optional import require

        require("flash_attn", "model.attn_implementation=flash_attention_2")


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks to shard one by one (each becomes one all-gather unit)."""
    base = getattr(model, "model", None) or getattr(model, getattr(model, "base_model_prefix", ""), None)
    layers = getattr(base, "layers", None)
    if layers is None:
        raise ValueError(f"cannot find decoder layers of {type(model).__name__} to shard")
    return list(layers)


def shard_model(model: nn.Module, param_dtype: torch.dtype, reduce_dtype: torch.dtype = torch.float32,
                cpu_offload: bool = False) -> nn.Module:
    """Apply FSDP2 to every decoder layer and the root.

    With world size 1 this still wraps the model, so one code path serves every world size.
    Mixed precision: parameters are kept in their loaded dtype (fp32 masters) and cast to `param_dtype`
    for compute; gradients are reduced in `reduce_dtype`.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    kwargs: dict[str, Any] = {"mp_policy": mp}
    if cpu_offload:
        kwargs["offload_policy"] = CPUOffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def full_state_dict(model: nn.Module, rank0_only: bool = False) -> dict[str, torch.Tensor]:
    """The unsharded state dict, keys as the HF model's.

    rank0_only=True gathers to CPU on rank 0 only (others get {}): for saving. Otherwise every rank gets
    the full tensors: for updating a colocated rollout engine.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=rank0_only)
    return get_model_state_dict(model, options=opts)


def full_state_dict_as(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The unsharded state dict on every rank, in `dtype`, keys as the HF model's (for a rollout engine).

    Each shard is cast *before* its all-gather, one tensor at a time: the peak is the full model in `dtype`
    (e.g. bf16, 2 bytes a parameter), never a full fp32 copy of the masters (4 bytes a parameter, 30 GB at
    7B) beside it. Shards offloaded to CPU are moved to the process group's device for the gather.
    """
    from torch.distributed.tensor import DTensor

    gather_device = device_for_rank("cuda" if dist.is_initialized() and dist.get_backend() == "nccl" else "cpu")
    out: dict[str, torch.Tensor] = {}
    gathered: dict[int, torch.Tensor] = {}  # tied weights appear under two keys: gather them once
    with torch.no_grad():
        # keep_vars: the Parameters themselves, so tied ones share an id
        for key, param in model.state_dict(keep_vars=True).items():
            if isinstance(param, DTensor):
                if id(param) not in gathered:
                    gathered[id(param)] = param.detach().to(device=gather_device, dtype=dtype).full_tensor()
                out[key] = gathered[id(param)]
            else:
                out[key] = param.detach().to(dtype=dtype) if param.is_floating_point() else param.detach()
    return out


def load_full_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict into an FSDP2 model on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Global gradient norm across shards (clipping to max_norm when > 0); returns the pre-clip norm."""
    grads = [p for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norm = torch.nn.utils.clip_grad_norm_(grads, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)


def training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """A role's sharded model and optimizer state (for torch.distributed.checkpoint) plus its scheduler."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    return {"model": model_sd, "optim": optim_sd, "scheduler": scheduler.state_dict()}


def load_training_state(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                        state: dict[str, Any]) -> None:
    """Load what `training_state` returned (after torch.distributed.checkpoint filled it in)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    scheduler.load_state_dict(state["scheduler"])
