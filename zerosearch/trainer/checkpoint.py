"""Checkpoints: atomic, resumable, pruned; and export of the actor as a Hugging Face model folder.

Layout of a run folder:
    checkpoints/step_000050/            a complete checkpoint (only complete ones have this name)
        workers/                        torch.distributed.checkpoint of every rank's actor (+ critic):
                                        sharded model, optimizer and scheduler state
        trainer_state.json              step, dataloader position, KL controller, curriculum, seeds
    checkpoints/step_000100.tmp/        a checkpoint being written (ignored and removed on resume)

Atomicity: everything is written into `<name>.tmp/` and the folder is renamed to `<name>/` only after every
rank has finished and `trainer_state.json` is on disk, so a run killed at any moment leaves either a
complete checkpoint or a `.tmp` folder that is never read.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from zerosearch.utils.failpoints import failpoint

_STEP_RE = re.compile(r"^step_(\d+)$")


# ----------------------------------------------------------------------------- worker side (one rank)
def save_worker_state(path: str, policy: Any, critic: Any | None) -> None:
    """Every rank writes its shards of actor (and critic) state into `path` (collective)."""
    import torch.distributed.checkpoint as dcp

    state = {"actor": policy.state_dicts()}
    if critic is not None:
        state["critic"] = critic.state_dicts()
    dcp.save(state, checkpoint_id=path)


def load_worker_state(path: str, policy: Any, critic: Any | None) -> None:
    """Every rank reads its shards back (collective) and re-syncs its rollout engine."""
    import torch.distributed.checkpoint as dcp

    state = {"actor": policy.state_dicts()}
    if critic is not None:
        state["critic"] = critic.state_dicts()
    dcp.load(state, checkpoint_id=path)
    policy.load_state_dicts(state["actor"])
    if critic is not None:
        critic.load_state_dicts(state["critic"])


def export_hf_model(path: str, policy: Any, rank: int) -> None:
    """Gather the actor's full weights and write a HF model folder (safetensors + config + tokenizer) on
    rank 0; the folder loads with `AutoModelForCausalLM.from_pretrained` and can be served by vLLM/sglang."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from zerosearch.workers import fsdp

    sd = fsdp.full_state_dict(policy.actor, rank0_only=True)
    if rank != 0:
        return
    src = policy.cfg.model.path
    config = AutoConfig.from_pretrained(src, trust_remote_code=policy.cfg.model.trust_remote_code)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=policy.cfg.model.trust_remote_code)
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    skeleton.save_pretrained(tmp, state_dict={k: v.contiguous() for k, v in sd.items()}, safe_serialization=True)
    policy.tokenizer.save_pretrained(tmp)
    gen_cfg = getattr(policy.engine, "model", None)
    if gen_cfg is not None and getattr(gen_cfg, "generation_config", None) is not None:
        gen_cfg.generation_config.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


# ----------------------------------------------------------------------------- controller side
class CheckpointManager:
    """Names, writes (atomically), finds and prunes checkpoints of one run folder."""

    def __init__(self, run_dir: str | Path, keep_last_k: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep_last_k = keep_last_k

    def path(self, step: int) -> Path:
        return self.root / f"step_{step:06d}"

    def complete(self) -> list[tuple[int, Path]]:
        """Complete checkpoints, oldest first."""
        if not self.root.exists():
            return []
        found = []
        for p in self.root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir() and (p / "trainer_state.json").exists():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def latest(self) -> Path | None:
        done = self.complete()
        return done[-1][1] if done else None

    def clean_partial(self) -> list[Path]:
        """Remove folders of checkpoints that were being written when a run died."""
        removed = []
        if self.root.exists():
            for p in self.root.iterdir():
                if p.name.endswith(".tmp"):
                    shutil.rmtree(p, ignore_errors=True)
                    removed.append(p)
        return removed

    def save(self, step: int, save_workers: Callable[[str], None], trainer_state: dict[str, Any]) -> Path:
        """Write checkpoint `step`: workers first, then the trainer state, then the rename."""
        final = self.path(step)
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_workers(str(tmp / "workers"))
        failpoint("checkpoint_mid_write", step)
        state_file = tmp / "trainer_state.json"
        with open(state_file, "w") as f:
            json.dump(trainer_state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        failpoint("checkpoint_before_rename", step)
        if final.exists():  # a re-save of the same step (e.g. final save right after a periodic one)
            shutil.rmtree(final)
        os.replace(tmp, final)
        self._prune()
        return final

    def _prune(self) -> None:
        done = self.complete()
        for _, p in done[:-self.keep_last_k] if self.keep_last_k > 0 else []:
            shutil.rmtree(p, ignore_errors=True)

    @staticmethod
    def read_state(path: Path) -> dict[str, Any]:
        return json.loads((path / "trainer_state.json").read_text())
