"""What is evaluated: a model folder, a training run's `actor_hf/`, a run folder or a training checkpoint;
the run configuration it is evaluated under; and the generation engine that decodes it.

    src = resolve_model("outputs/run/checkpoints/step_000050", work_dir)   # converts the checkpoint once
    cfg = eval_config(src, ["search.eval_engine=retrieval", ...])
    engine, tokenizer = build_generation(cfg)

A model that comes from a training run is evaluated under that run's config.yaml (prompt template, chat
template, turn and token budgets, reward), so evaluation asks exactly what validation asked; overrides
change it. A plain model folder gets the project defaults plus the overrides.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from zerosearch.config.schema import ZeroSearchConfig

CKPT_MODEL_PREFIX = "actor.model."  # keys of the actor's weights in a checkpoint's workers/ (trainer/checkpoint.py)


@dataclass(frozen=True)
class ModelSource:
    """A resolved model input.

    Attributes:
        kind: "hf" (a model folder), "run" (a run's actor_hf/) or "checkpoint" (converted from checkpoints/step_N).
        hf_dir: the Hugging Face folder the engines load (for a checkpoint: the converted copy).
        run_config: the run's config.yaml, or None for a plain model folder.
        given: the path as given.
        label: a short name for tables (the run folder's name, or the model folder's).
    """

    kind: str
    hf_dir: Path
    run_config: Path | None
    given: str
    label: str


def _is_hf_dir(p: Path) -> bool:
    return (p / "config.json").is_file()


def _is_checkpoint(p: Path) -> bool:
    return (p / "workers").is_dir() and (p / "trainer_state.json").is_file()


def resolve_model(path: str | os.PathLike, work_dir: Path) -> ModelSource:
    """Resolve a model input; a training checkpoint is converted into `work_dir/model_<step folder>/` (once).

    Raises:
        FileNotFoundError / ValueError: naming the path and what was expected there.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--model {str(path)!r} does not exist; expected a Hugging Face model folder, a "
                                "training run folder, its actor_hf/, or a checkpoint folder checkpoints/step_N")
    p = p.resolve()
    if _is_checkpoint(p):
        run_dir = p.parent.parent
        cfg_path = run_dir / "config.yaml"
        if not cfg_path.is_file():
            raise ValueError(f"checkpoint {p}: its run folder {run_dir} has no config.yaml (needed for model.path, "
                             "the architecture the checkpoint's weights load into)")
        out = work_dir / f"model_{run_dir.name}_{p.name}"
        checkpoint_to_hf(p, cfg_path, out)
        return ModelSource("checkpoint", out, cfg_path, str(path), f"{run_dir.name}@{p.name}")
    if (p / "actor_hf").is_dir() and (p / "config.yaml").is_file():  # a run folder
        p = p / "actor_hf"
    if not _is_hf_dir(p):
        raise ValueError(f"--model {p}: no config.json; expected a Hugging Face model folder, a run folder with "
                         "actor_hf/, or a checkpoint folder (checkpoints/step_N with workers/ and trainer_state.json)")
    run_cfg = p.parent / "config.yaml"
    if p.name == "actor_hf" and run_cfg.is_file():
        return ModelSource("run", p, run_cfg, str(path), p.parent.name)
    return ModelSource("hf", p, None, str(path), p.name)


def checkpoint_to_hf(ckpt: Path, run_config: Path, out: Path) -> Path:
    """Write the actor weights of a training checkpoint as a Hugging Face folder `out` (reused when present).

    The checkpoint's `workers/` is a torch.distributed.checkpoint of {"actor": {"model", "optim",
    "scheduler"}}; only the model's tensors are read (no optimizer state is loaded, so this takes about
    the model's size in memory), into the architecture of the run's `model.path`. Tied weights
    (lm_head = embeddings) are not stored separately and are tied again by the model.
    """
    if (out / "DONE").is_file():
        return out
    import torch
    import torch.distributed.checkpoint as dcp
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = OmegaConf.load(run_config)
    base, tok_path = str(run.model.path), str(run.model.tokenizer_path or run.model.path)
    trust = bool(run.model.get("trust_remote_code", False))
    if not Path(base).exists():
        raise FileNotFoundError(f"checkpoint {ckpt}: the run's model.path {base!r} (in {run_config}) does not exist; "
                                "the checkpoint holds weights only, the architecture comes from there")
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust)
    reader = dcp.FileSystemReader(str(ckpt / "workers"))
    stored = {k[len(CKPT_MODEL_PREFIX):] for k in reader.read_metadata().state_dict_metadata
              if k.startswith(CKPT_MODEL_PREFIX)}
    sd = model.state_dict()
    tied = {"lm_head.weight"} if getattr(model.config, "tie_word_embeddings", False) else set()
    missing = sorted(set(sd) - stored - tied)
    unexpected = sorted(stored - set(sd))
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt} does not match the model of {base}: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]} (was it written by another run's config?)")
    state = {"actor": {"model": {k: v for k, v in sd.items() if k in stored}}}
    dcp.load(state, storage_reader=reader, no_dist=True)  # fills the model's own tensors in place
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(tok_path, trust_remote_code=trust).save_pretrained(tmp)
    (tmp / "DONE").write_text(json.dumps({"checkpoint": str(ckpt), "base": base}))
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def eval_config(src: ModelSource, overrides: Sequence[str]) -> ZeroSearchConfig:
    """The config the model is evaluated under: its run's config.yaml (when it has one) or the defaults,
    with `overrides` (a.b=c) applied and `model.path` pointing at the evaluated weights.

    Raises:
        zerosearch.config.validate.ConfigError: naming every bad key or value.
    """
    from omegaconf import OmegaConf

    from zerosearch.config.store import to_structured
    from zerosearch.config.validate import ConfigError, GROUPS, check_override_keys, validate_config
    from zerosearch.run import compose

    overrides = [*overrides, f"model.path={src.hf_dir}"]
    if src.run_config is None:
        dcfg = compose(overrides)
    else:
        groups = [o for o in overrides if o.split("=", 1)[0] in GROUPS]
        if groups:
            raise ConfigError([f"{o}: a config group cannot be selected for a model of a training run (its "
                               f"config.yaml is used); set the keys themselves, e.g. search.eval_engine=retrieval"
                               for o in groups])
        check_override_keys(overrides)
        base = OmegaConf.merge(OmegaConf.structured(ZeroSearchConfig), OmegaConf.load(src.run_config))
        try:
            dcfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
        except Exception as e:  # noqa: BLE001 - OmegaConf's type errors, as one line
            raise ConfigError([" ".join(str(e).split())[:300]]) from None
    if src.run_config is not None and not any(o.startswith("model.tokenizer_path=") for o in overrides):
        # the evaluated folder carries its tokenizer (actor_hf and converted checkpoints save one)
        dcfg.model.tokenizer_path = None
    cfg = to_structured(dcfg)
    return validate_config(cfg, check_paths=False)


def resolve_device(cfg: ZeroSearchConfig) -> str:
    import torch

    want = cfg.trainer.device
    if want == "cuda" and not torch.cuda.is_available():
        raise ValueError("trainer.device=cuda but no CUDA device is visible")
    return "cuda" if want in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def build_generation(cfg: ZeroSearchConfig) -> tuple[Any, Any]:
    """(generation engine, tokenizer) for `cfg.model.path` as `cfg.rollout.engine` says: hf (transformers,
    CPU or GPU; dtype model.dtype, auto = bf16 on GPU and fp32 on CPU) or vllm (offline engine)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path or cfg.model.path, padding_side="left",
                                        trust_remote_code=cfg.model.trust_remote_code)
    if cfg.rollout.engine == "vllm":
        from zerosearch.generation.vllm_engine import VLLMEngine

        return VLLMEngine.from_config(cfg, tok, cfg.model.path), tok
    from zerosearch.generation.hf_engine import HFEngine

    device = resolve_device(cfg)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
        cfg.model.dtype, torch.bfloat16 if device == "cuda" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(cfg.model.path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code,
                                                 attn_implementation=cfg.model.attn_implementation)
    return HFEngine(model.to(device).eval(), tok, cfg.rollout.micro_batch_size, cfg.rollout.cpu_decode_kernels), tok
