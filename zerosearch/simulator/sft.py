"""A small single-process supervised fine-tuning loop (masked next-token cross-entropy), for the jobs that
come before RL: fine-tuning a simulation LLM on (prompt -> documents) pairs (`simulator.finetune`, loss on
the documents only) and warm-starting the toy agent on demonstrations (`toy.pipeline`, loss off the
inserted `<information>` tokens).

`sft_loss` is one step; `SFTRunner` loops it on one process (AdamW, warm-up + cosine, clipping, seeded
batches). It is not the RL trainer: no Ray, no FSDP; these SFT jobs are small enough for one process
(at the scale of the released 3B-14B simulators, fine-tune them with a dedicated SFT framework).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from zerosearch.workers.optim import build_optimizer, build_scheduler


@dataclass
class SFTExample:
    """One training sequence: ids and a 0/1 mask of the tokens to learn (same length)."""

    input_ids: list[int]
    loss_mask: list[int]

    def __post_init__(self) -> None:
        if len(self.input_ids) != len(self.loss_mask):
            raise ValueError(f"SFTExample: {len(self.input_ids)} ids but {len(self.loss_mask)} mask entries")


def collate_sft(examples: Sequence[SFTExample], pad_id: int, max_length: int | None = None) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example (cut to max_length from the right when given).

    Returns input_ids, attention_mask, position_ids, loss_mask: (B, L).
    """
    seqs = [(e.input_ids[:max_length], e.loss_mask[:max_length]) if max_length else (e.input_ids, e.loss_mask)
            for e in examples]
    L = max(len(s) for s, _ in seqs)
    ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    lm = torch.zeros((len(seqs), L), dtype=torch.float32)
    for i, (s, m) in enumerate(seqs):
        ids[i, :len(s)] = torch.tensor(s)
        attn[i, :len(s)] = 1
        lm[i, :len(m)] = torch.tensor(m, dtype=torch.float32)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": attn, "position_ids": pos, "loss_mask": lm}


def sft_loss(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    """Token-mean cross-entropy over positions whose *target* token has loss_mask 1.

    The LM head runs only where a target is learned (prompts are most of an SFT sequence here, and the
    vocabulary projection of every prompt position would be thrown away). Returns (loss, target tokens).
    """
    ids = batch["input_ids"].to(device)
    mask = batch["loss_mask"][:, 1:].to(device) > 0
    backbone = getattr(model, "model", None)
    head = getattr(model, "lm_head", None)
    if backbone is not None and head is not None:
        hidden = backbone(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                          position_ids=batch["position_ids"].to(device), use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][mask]).float()  # (n_targets, vocab)
    else:  # models without the usual split: full logits
        logits = model(input_ids=ids, attention_mask=batch["attention_mask"].to(device),
                       position_ids=batch["position_ids"].to(device), use_cache=False).logits[:, :-1][mask].float()
    targets = ids[:, 1:][mask]
    n = int(targets.numel())
    if n == 0:
        return logits.sum() * 0.0, 0.0
    return F.cross_entropy(logits, targets), float(n)


class SFTRunner:
    """A small single-process SFT loop: AdamW, warm-up + cosine, gradient clipping, seeded batches.

    Args:
        model: the causal LM to train (trained in place).
        pad_id: padding id for collation.
        lr, total_steps, warmup_steps, batch_size, grad_clip, weight_decay: the usual.
        max_length: sequences are cut to this many tokens.
        seed: seeds batch sampling.
    """

    def __init__(self, model: nn.Module, pad_id: int, *, lr: float, total_steps: int, batch_size: int,
                 warmup_steps: int = 0, schedule: str = "cosine", min_lr_ratio: float = 0.1, grad_clip: float = 1.0,
                 weight_decay: float = 0.0, max_length: int | None = None, seed: int = 0,
                 device: str | torch.device = "cpu"):
        self.model, self.pad_id = model, pad_id
        self.total_steps, self.batch_size, self.grad_clip = total_steps, batch_size, grad_clip
        self.max_length, self.seed = max_length, seed
        self.device = torch.device(device)
        self.optimizer = build_optimizer(model.parameters(), lr, weight_decay, fused=False)
        self.scheduler = build_scheduler(self.optimizer, total_steps, warmup_steps, schedule, min_lr_ratio)

    def train(self, examples: Sequence[SFTExample] | Callable[[int], Sequence[SFTExample]],
              log_every: int = 100, log: Callable[[str], None] = print) -> list[dict[str, float]]:
        """Run total_steps steps. `examples` is a pool to sample batches from, or a function of the step
        returning the pool for that step (for mixtures that change during training)."""
        rng = random.Random(self.seed)
        history = []
        self.model.train()
        t0 = time.perf_counter()
        for step in range(self.total_steps):
            pool = examples(step) if callable(examples) else examples
            batch = collate_sft(rng.sample(list(pool), min(self.batch_size, len(pool))) if len(pool) > self.batch_size
                                else list(pool), self.pad_id, self.max_length)
            loss, n = sft_loss(self.model, batch, self.device)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            rec = {"step": step + 1, "loss": float(loss.detach()), "tokens": n, "grad_norm": float(gn),
                   "lr": self.scheduler.get_last_lr()[0]}
            history.append(rec)
            if log_every and ((step + 1) % log_every == 0 or step + 1 == self.total_steps):
                recent = history[-log_every:]
                avg = sum(r["loss"] for r in recent) / len(recent)
                el = time.perf_counter() - t0
                log(f"[sft] step {step + 1}/{self.total_steps} loss {avg:.4f} ppl {math.exp(min(avg, 20)):.2f} "
                    f"lr {rec['lr']:.2e} ({el:.0f}s, {el / (step + 1) * 1000:.0f} ms/step)")
        self.model.eval()
        return history

    def save(self, out_dir: str | Path, tokenizer: object | None = None) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(out)  # type: ignore[attr-defined]
        return out
