"""The critic of one rank (PPO): the LM backbone with a scalar value head, sharded with FSDP2."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from zerosearch.algos.losses import value_loss
from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.workers import fsdp
from zerosearch.workers.batching import Batch, loss_scale, map_rows, micro_batches, response_values, split_fixed, trim
from zerosearch.workers.optim import build_optimizer, build_scheduler, warmup_steps


class CriticWorker:
    """Values V(s_t) before each response token, and clipped value-loss updates.

    Args:
        cfg: the run's configuration (critic section; model.* for dtype and attention).
        rank, world_size: this rank in the (already initialised) process group.
        device: "cpu" or "cuda".
    """

    def __init__(self, cfg: ZeroSearchConfig, rank: int, world_size: int, device: str):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = fsdp.device_for_rank(device)
        c = cfg.critic
        master_dtype = fsdp.resolve_dtype(cfg.model.dtype, device)
        compute_dtype = fsdp.resolve_dtype(cfg.actor.param_dtype, device)
        model = fsdp.load_value_model(c.model_path or cfg.model.path, master_dtype, cfg.model.attn_implementation,
                                      cfg.model.trust_remote_code, cfg.model.gradient_checkpointing)
        self.critic = fsdp.shard_model(model.to(self.device), compute_dtype, cpu_offload=cfg.actor.cpu_offload)
        self.optimizer = build_optimizer(self.critic.parameters(), c.lr, c.weight_decay)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.trainer.total_steps, warmup_steps(cfg.trainer.total_steps, c.lr_warmup_steps,
                                                                  c.lr_warmup_ratio))

    @torch.no_grad()
    def compute_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        """values (B, R), 0 off the response mask."""
        self.critic.eval()
        a = self.cfg.actor
        (values,) = map_rows(lambda mb: (response_values(self.critic, mb, self.device),), batch,
                             self.cfg.critic.micro_batch_size_per_worker, a.use_dynamic_bsz,
                             a.max_tokens_per_micro_batch, self.device)
        return {"values": values * batch["response_mask"]}

    def update_critic(self, batch: Batch) -> dict[str, float]:
        c, cfg = self.cfg.critic, self.cfg
        self.critic.train()
        mini = max(1, cfg.actor.ppo_mini_batch_size * cfg.rollout.n // self.world_size)
        sums = {"critic/vf_loss": 0.0, "critic/vf_clipfrac": 0.0, "critic/vpred_mean": 0.0}
        weight, grad_norms = 0.0, []
        for _epoch in range(c.ppo_epochs):
            for mb in split_fixed(batch, mini):
                m = mb["response_mask"]
                counts = torch.tensor([float(m.sum()), float((m.sum(-1) > 0).sum())], dtype=torch.float64,
                                      device=self.device)
                if dist.is_initialized() and self.world_size > 1:
                    dist.all_reduce(counts)
                self.optimizer.zero_grad(set_to_none=True)
                for micro in micro_batches(mb, c.micro_batch_size_per_worker, cfg.actor.use_dynamic_bsz,
                                           cfg.actor.max_tokens_per_micro_batch, self.device):
                    micro, _ = trim(micro)
                    mask = micro["response_mask"].to(self.device)
                    vpred = response_values(self.critic, micro, self.device)
                    loss, clipfrac = value_loss(vpred, micro["values"].to(self.device), micro["returns"].to(self.device),
                                                mask, c.cliprange_value, agg=c.loss_agg_mode)
                    scale = loss_scale(c.loss_agg_mode, mask, float(counts[0]), float(counts[1]), self.world_size)
                    (loss * scale).backward()
                    w = float(mask.sum())
                    weight += w
                    sums["critic/vf_loss"] += float(loss.detach()) * w
                    sums["critic/vf_clipfrac"] += float(clipfrac) * w
                    sums["critic/vpred_mean"] += float((vpred.detach() * mask).sum())
                grad_norms.append(fsdp.clip_grad_norm(list(self.critic.parameters()), c.grad_clip))
                self.optimizer.step()
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        out = {k: v / max(weight, 1.0) for k, v in sums.items()}
        out.update({"critic/grad_norm": sum(grad_norms) / max(len(grad_norms), 1), "critic/lr": lr})
        return out

    def state_dicts(self) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.critic, self.optimizer)
        return {"model": model_sd, "optim": optim_sd, "scheduler": self.scheduler.state_dict()}

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.critic, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])
