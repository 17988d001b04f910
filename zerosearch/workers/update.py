"""The one mini-batch update loop of every trained role (actor and critic).

A role supplies its loss on one micro-batch; this module does the rest, the same way for both:
mini-batches of `mini_batch_rows` rows per optimizer step, the mini-batch's policy-token and sequence
counts all-reduced over ranks, micro-batches (fixed or token-packed), `loss_scale` weighting so the
accumulated gradient is the chosen aggregation over the whole mini-batch, gradient clipping, and the
optimizer step, skipped when the loss or the gradient is non-finite on any rank (a NaN step would
corrupt the weights and AdamW's moments for good). The scheduler steps once per call: one training step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.workers import fsdp
from zerosearch.workers.batching import Batch, loss_scale, micro_batches, split_fixed, trim

# (trimmed micro-batch, its response mask (b, R') on the device) -> (loss, metrics averaged over its tokens)
MicroLoss = Callable[[Batch, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass(frozen=True)
class UpdateSettings:
    """How one role cuts its share of a batch into optimizer steps and forward/backward passes.

    Attributes:
        role: metric prefix ("actor", "critic").
        mini_batch_size: prompts per optimizer step (x rollout.n trajectories, over all ranks).
        epochs: passes over the batch.
        micro_batch_size: rows per forward/backward (fixed micro-batches).
        use_dynamic_bsz: pack micro-batches by tokens instead.
        max_tokens_per_micro_batch: the token budget of a packed micro-batch.
        loss_agg_mode: how the loss aggregates over tokens and sequences (decides `loss_scale`).
        grad_clip: max global gradient norm (<= 0: none).
    """

    role: str
    mini_batch_size: int
    epochs: int
    micro_batch_size: int
    use_dynamic_bsz: bool
    max_tokens_per_micro_batch: int
    loss_agg_mode: str
    grad_clip: float

    def rows_per_step(self, n: int, world_size: int) -> int:
        """Rows of one rank per optimizer step: mini_batch_size prompts x n samples / ranks."""
        return max(1, self.mini_batch_size * n // world_size)


def actor_settings(cfg: ZeroSearchConfig) -> UpdateSettings:
    a = cfg.actor
    # GSPO's sequence-level ratio is defined with a per-sequence token mean
    agg = "seq-mean-token-mean" if a.policy_loss == "gspo" else a.loss_agg_mode
    return UpdateSettings("actor", a.ppo_mini_batch_size, a.ppo_epochs, a.micro_batch_size_per_worker,
                          a.use_dynamic_bsz, a.max_tokens_per_micro_batch, agg, a.grad_clip)


def critic_settings(cfg: ZeroSearchConfig) -> UpdateSettings:
    """The critic's own settings; where one is None it follows the actor as the original's config does
    (ppo_mini_batch_size, use_dynamic_bsz interpolate the actor's; the token budget is 2x the actor's, the
    original's 32768 for 16384: a value head has no vocabulary-sized logits)."""
    c, a = cfg.critic, cfg.actor
    return UpdateSettings(
        "critic", c.ppo_mini_batch_size if c.ppo_mini_batch_size is not None else a.ppo_mini_batch_size,
        c.ppo_epochs, c.micro_batch_size_per_worker,
        c.use_dynamic_bsz if c.use_dynamic_bsz is not None else a.use_dynamic_bsz,
        c.max_tokens_per_micro_batch if c.max_tokens_per_micro_batch is not None else 2 * a.max_tokens_per_micro_batch,
        c.loss_agg_mode, c.grad_clip)


def _all_reduce(values: list[float], device: torch.device, op: str = "sum") -> list[float]:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t.tolist()


def run_update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
               batch: Batch, s: UpdateSettings, micro_loss: MicroLoss, *, n: int, world_size: int,
               device: torch.device) -> dict[str, float]:
    """Update `model` on this rank's share of a batch (every rank calls it: it holds collectives).

    Returns the token-weighted means of the role's micro-batch metrics, `{role}/grad_norm` (mean over
    optimizer steps, pre-clip), `{role}/lr` (the lr used) and `{role}/skipped_steps` (optimizer steps of this
    call skipped for a non-finite loss or gradient; all ranks skip together).
    """
    model.train()
    sums: dict[str, float] = {}
    weight = 0.0
    grad_norms: list[float] = []
    skipped = 0
    for _epoch in range(s.epochs):
        for mb in split_fixed(batch, s.rows_per_step(n, world_size)):
            m = mb["response_mask"]
            g_tokens, g_seqs = _all_reduce([float(m.sum()), float((m.sum(-1) > 0).sum())], device)
            optimizer.zero_grad(set_to_none=True)
            bad_loss = 0.0
            for micro in micro_batches(mb, s.micro_batch_size, s.use_dynamic_bsz, s.max_tokens_per_micro_batch,
                                       device):
                micro, _ = trim(micro)
                mask = micro["response_mask"].to(device)
                loss, metrics = micro_loss(micro, mask)
                if not bool(torch.isfinite(loss.detach())):
                    bad_loss = 1.0
                # backward even on a non-finite loss: FSDP2's reduce-scatter is collective, every rank must run it
                (loss * loss_scale(s.loss_agg_mode, mask, g_tokens, g_seqs, world_size)).backward()
                w = float(mask.sum())
                weight += w
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + v * w
            gn = fsdp.clip_grad_norm(list(model.parameters()), s.grad_clip)
            (bad_any,) = _all_reduce([bad_loss], device, op="max")
            if bad_any or not torch.isfinite(torch.tensor(gn)):
                skipped += 1  # a non-finite step would corrupt weights and optimizer state: drop it
                optimizer.zero_grad(set_to_none=True)
            else:
                optimizer.step()
            grad_norms.append(gn)
    lr = scheduler.get_last_lr()[0]
    scheduler.step()
    model.eval()
    out = {k: v / max(weight, 1.0) for k, v in sums.items()}
    out.update({f"{s.role}/grad_norm": sum(grad_norms) / max(len(grad_norms), 1), f"{s.role}/lr": lr,
                f"{s.role}/skipped_steps": float(skipped)})
    return out
