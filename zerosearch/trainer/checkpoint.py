"""Checkpoints: atomic, resumable, pruned; and export of the actor as a Hugging Face model folder.

Layout of a run folder:
    checkpoints/step_000050/            a complete checkpoint (only complete ones have this name)
        workers/                        torch.distributed.checkpoint of every rank's actor (+ critic):
                                        sharded model, optimizer and scheduler state
        trainer_state.json              step, dataloader position, KL controller, curriculum, seeds
        manifest.json                   size and sha256 of every other file, written last
    checkpoints/step_000100.tmp/        a checkpoint being written (ignored and removed on resume)

Atomicity: everything is written into `<name>.tmp/` and the folder is renamed to `<name>/` only after every
rank has finished, `trainer_state.json` is on disk and the manifest is written, so a run killed at any moment
leaves either a complete checkpoint or a `.tmp` folder that is never read.

Integrity: on resume the manifest is checked (every file present with its size and hash), so a truncated
shard or state file is named instead of failing deep inside torch.distributed.checkpoint; `resume=auto`
then falls back to the newest checkpoint that verifies, and a folder whose checkpoints all fail is refused
(never silently restarted from step 0 over them).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from zerosearch.utils.errors import RunError
from zerosearch.utils.failpoints import failpoint

_STEP_RE = re.compile(r"^step_(\d+)$")
MANIFEST = "manifest.json"
STATE = "trainer_state.json"


class CheckpointError(RunError):
    """A checkpoint that cannot be used; the message names the file and what is wrong with it."""


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_manifest(folder: Path) -> None:
    """Record the size and sha256 of every file under `folder` in `folder/manifest.json` (written last)."""
    files = {str(f.relative_to(folder)): [f.stat().st_size, _sha256(f)]
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != MANIFEST}
    with open(folder / MANIFEST, "w") as f:
        json.dump({"format": 1, "files": files}, f, indent=0)
        f.flush()
        os.fsync(f.fileno())


def verify(folder: Path) -> dict[str, Any]:
    """Check `folder` against its manifest and return its trainer state; CheckpointError names the bad file."""
    mpath = folder / MANIFEST
    if not (folder / STATE).is_file():
        raise CheckpointError(f"{folder / STATE} is missing: not a complete checkpoint")
    if not mpath.is_file():
        raise CheckpointError(f"{mpath} is missing: the checkpoint was not completely written")
    try:
        files = json.loads(mpath.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{mpath} is unreadable ({e})") from None
    for rel, (size, digest) in files.items():
        f = folder / rel
        if not f.is_file():
            raise CheckpointError(f"{f} is missing (listed in {mpath})")
        if f.stat().st_size != size:
            raise CheckpointError(f"{f} is truncated or corrupt: {f.stat().st_size} bytes, the manifest says {size}")
        if _sha256(f) != digest:
            raise CheckpointError(f"{f} is corrupt: its sha256 differs from the manifest's")
    return read_state(folder)


def read_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a checkpoint; CheckpointError names the file if it is not a JSON object."""
    f = folder / STATE
    try:
        state = json.loads(f.read_text())
        int(state["step"])
    except FileNotFoundError:
        raise CheckpointError(f"{f} is missing: not a complete checkpoint") from None
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{f} is truncated or corrupt ({type(e).__name__}: {e})") from None
    return state


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

    def folders(self) -> list[tuple[int, Path]]:
        """Every `step_N` folder (renamed, so once complete), oldest first, whatever its state now."""
        if not self.root.exists():
            return []
        found = []
        for p in self.root.iterdir():
            m = _STEP_RE.match(p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        return sorted(found)

    def complete(self) -> list[tuple[int, Path]]:
        """Checkpoints with a trainer state and a manifest, oldest first (not yet verified: see `resumable`)."""
        return [(s, p) for s, p in self.folders() if (p / STATE).exists() and (p / MANIFEST).exists()]

    def resumable(self, log: Callable[[str], None] = print) -> tuple[Path, dict[str, Any]] | None:
        """The newest checkpoint that verifies, with its state; None when the folder holds no checkpoint.

        Newer checkpoints that fail verification are skipped with a logged reason. If checkpoints exist but
        none verifies, CheckpointError lists each: the run must not start over from step 0 on top of them.
        """
        found = self.folders()
        problems = []
        for _, p in reversed(found):
            try:
                state = verify(p)
            except CheckpointError as e:
                problems.append(str(e))
                log(f"[checkpoint] WARNING: skipping {p}: {e}")
                continue
            if problems:
                log(f"[checkpoint] falling back to {p}, the newest checkpoint that verifies")
            return p, state
        if problems:
            raise CheckpointError(
                f"{self.root} holds {len(found)} checkpoint(s) and none can be loaded:\n"
                + "\n".join(f"  - {x}" for x in problems)
                + "\nRefusing to start over from step 0 on top of them: move the folder away, point "
                "trainer.resume at a good checkpoint, or set trainer.resume=disable to start over in this folder.")
        return None

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
        state_file = tmp / STATE
        with open(state_file, "w") as f:
            json.dump(trainer_state, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        write_manifest(tmp)  # last: a folder with a manifest has every file it lists
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
        return read_state(path)
