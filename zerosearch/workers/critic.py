"""The critic of one rank (PPO): the LM backbone with a scalar value head, sharded with FSDP2."""

from __future__ import annotations

from typing import Any

import torch

from zerosearch.algos.losses import value_loss
from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.workers import fsdp
from zerosearch.workers.batching import Batch, map_rows, response_values
from zerosearch.workers.optim import build_optimizer, build_scheduler, warmup_steps
from zerosearch.workers.update import critic_settings, run_update


class CriticWorker:
    """Values V(s_t) before each response token, and clipped value-loss updates.

    Precision as the actor's: master weights and AdamW state in `model.dtype` (fp32 by default), compute in
    `critic.param_dtype` (FSDP2 mixed precision, gradients reduced in fp32).

    Args:
        cfg: the run's configuration (critic section, `workers.update.critic_settings` for the settings it
            shares with the actor when unset; model.* for dtype and attention).
        rank, world_size: this rank in the (already initialised) process group.
        device: "cpu" or "cuda".
    """

    def __init__(self, cfg: ZeroSearchConfig, rank: int, world_size: int, device: str):
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = fsdp.device_for_rank(device)
        c = cfg.critic
        self.settings = critic_settings(cfg)
        cpu_offload = c.cpu_offload if c.cpu_offload is not None else cfg.actor.cpu_offload
        model = fsdp.load_value_model(c.model_path or cfg.model.path, fsdp.master_dtype(cfg.model.dtype),
                                      cfg.model.attn_implementation, cfg.model.trust_remote_code,
                                      cfg.model.gradient_checkpointing)
        self.critic = fsdp.shard_model(model.to(self.device), fsdp.resolve_dtype(c.param_dtype, device),
                                       cpu_offload=cpu_offload)
        self.optimizer = build_optimizer(self.critic.parameters(), c.lr, c.weight_decay)
        self.scheduler = build_scheduler(
            self.optimizer, cfg.trainer.total_steps, warmup_steps(cfg.trainer.total_steps, c.lr_warmup_steps,
                                                                  c.lr_warmup_ratio))

    @torch.no_grad()
    def compute_values(self, batch: Batch) -> dict[str, torch.Tensor]:
        """values (B, R), 0 off the response mask."""
        self.critic.eval()
        s = self.settings
        (values,) = map_rows(lambda mb: (response_values(self.critic, mb, self.device),), batch,
                             s.micro_batch_size, s.use_dynamic_bsz, s.max_tokens_per_micro_batch, self.device)
        return {"values": values * batch["response_mask"]}

    def update_critic(self, batch: Batch) -> dict[str, float]:
        """Clipped value-loss update over this rank's share of the batch (`workers.update.run_update`)."""
        c = self.cfg.critic

        def micro_loss(micro: Batch, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            vpred = response_values(self.critic, micro, self.device)
            loss, clipfrac = value_loss(vpred, micro["values"].to(self.device), micro["returns"].to(self.device),
                                        mask, c.cliprange_value, agg=c.loss_agg_mode)
            vpred_mean = float((vpred.detach() * mask).sum() / mask.sum().clamp(min=1))
            return loss, {"critic/vf_loss": float(loss.detach()), "critic/vf_clipfrac": float(clipfrac),
                          "critic/vpred_mean": vpred_mean}

        return run_update(self.critic, self.optimizer, self.scheduler, batch, self.settings, micro_loss,
                          n=self.cfg.rollout.n, world_size=self.world_size, device=self.device)

    def state_dicts(self) -> dict[str, Any]:
        return fsdp.training_state(self.critic, self.optimizer, self.scheduler)

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        fsdp.load_training_state(self.critic, self.optimizer, self.scheduler, state)
