"""The policy side of one rank: the FSDP2 actor, the frozen reference, and the colocated rollout engine.

No orchestration here: the trainer (through Ray, or directly in a single process) calls these methods
with this rank's share of the batch. Everything is plain torch + transformers.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch
import torch.distributed as dist

from zerosearch.algos import agg_loss, entropy_from_logits, get_policy_loss, kl_loss, total_actor_loss
from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.generation.types import GenerationEngine, GenerationOutput, SamplingParams
from zerosearch.workers import fsdp
from zerosearch.workers.batching import (
    Batch, loss_scale, map_rows, micro_batches, response_logits, split_fixed, token_log_probs, trim)
from zerosearch.workers.optim import build_optimizer, build_scheduler, warmup_steps


def _all_reduce_sum(x: float, device: torch.device) -> float:
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return x
    t = torch.tensor([x], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


class PolicyWorker:
    """Actor (trainable), reference (frozen, only when a KL term is used) and rollout engine of one rank.

    Args:
        cfg: the run's configuration.
        rank, world_size: this rank in the FSDP group (the group must be initialised).
        device: "cpu" or "cuda".
        model_path: overrides cfg.model.path (e.g. a warm-started checkpoint).
    """

    def __init__(self, cfg: ZeroSearchConfig, rank: int, world_size: int, device: str, model_path: str | None = None):
        from transformers import AutoTokenizer

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = fsdp.device_for_rank(device)
        path = model_path or cfg.model.path
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path or path, padding_side="left",
                                                       trust_remote_code=cfg.model.trust_remote_code)
        master_dtype = fsdp.resolve_dtype(cfg.model.dtype, device)
        self.compute_dtype = fsdp.resolve_dtype(cfg.actor.param_dtype, device)
        base = fsdp.load_causal_lm(path, master_dtype, cfg.model.attn_implementation, cfg.model.trust_remote_code,
                                   cfg.model.gradient_checkpointing)
        # the rollout copy is unsharded, in the compute dtype, and never trained (weights synced after updates)
        rollout_model = copy.deepcopy(base).to(device=self.device, dtype=self.compute_dtype).eval()
        rollout_model.config.use_cache = True
        for p in rollout_model.parameters():
            p.requires_grad_(False)
        self.needs_ref = cfg.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward
        self.ref = None
        if self.needs_ref:
            ref = copy.deepcopy(base).to(self.device)
            for p in ref.parameters():
                p.requires_grad_(False)
            self.ref = fsdp.shard_model(ref, self.compute_dtype, cpu_offload=cfg.actor.cpu_offload).eval()
        self.actor = fsdp.shard_model(base.to(self.device), self.compute_dtype, cpu_offload=cfg.actor.cpu_offload)
        a = cfg.actor
        self.optimizer = build_optimizer(self.actor.parameters(), a.lr, a.weight_decay, tuple(a.betas))
        self.scheduler = build_scheduler(
            self.optimizer, cfg.trainer.total_steps, warmup_steps(cfg.trainer.total_steps, a.lr_warmup_steps,
                                                                  a.lr_warmup_ratio), a.lr_schedule, a.min_lr_ratio)
        self.engine = self._build_engine(rollout_model)
        self.policy_loss_fn = get_policy_loss(a.policy_loss)

    # ------------------------------------------------------------------ rollout
    def _build_engine(self, rollout_model: torch.nn.Module) -> GenerationEngine:
        if self.cfg.rollout.engine == "vllm":
            from zerosearch.generation.vllm_engine import VLLMEngine

            return VLLMEngine.from_config(self.cfg, self.tokenizer, model_path=self.cfg.model.path)
        from zerosearch.generation.hf_engine import HFEngine

        return HFEngine(rollout_model, self.tokenizer, self.cfg.rollout.micro_batch_size)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        return self.engine.generate(prompts, params, max_new_tokens, seeds)

    def sync_rollout_weights(self) -> None:
        """Gather the actor's full weights and load them into the rollout engine."""
        sd = fsdp.full_state_dict(self.actor)
        self.engine.update_weights({k: v.to(self.compute_dtype) for k, v in sd.items()})

    # ------------------------------------------------------------------ log-probs
    @torch.no_grad()
    def _log_probs(self, model: torch.nn.Module, batch: Batch, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """log-probs (B, R) under rollout.temperature and optionally entropies (B, R), 0 off the mask."""
        temperature = self.cfg.rollout.temperature or 1.0
        a = self.cfg.actor

        def fn(mb: Batch) -> tuple[torch.Tensor, ...]:
            logits = response_logits(model, mb, self.device)
            if temperature != 1.0:
                logits = logits / temperature
            lp = token_log_probs(logits, mb["responses"].to(self.device))
            return (lp, entropy_from_logits(logits, chunk_size=a.entropy_chunk_size)) if with_entropy else (lp,)

        outs = map_rows(fn, batch, self.cfg.ref.micro_batch_size_per_worker, a.use_dynamic_bsz,
                        a.max_tokens_per_micro_batch, self.device)
        mask = batch["response_mask"]
        return outs[0] * mask, (outs[1] * mask if with_entropy else None)

    def compute_log_prob(self, batch: Batch) -> dict[str, torch.Tensor]:
        """old_log_prob (B, R) and entropy (B, R) of the current actor, 0 off the response mask."""
        lp, ent = self._log_probs(self.actor, batch, with_entropy=True)
        return {"old_log_prob": lp, "entropy": ent}

    def compute_ref_log_prob(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.ref is None:
            raise RuntimeError("no reference model: it is built only when actor.use_kl_loss or "
                               "algorithm.use_kl_in_reward is set")
        return {"ref_log_prob": self._log_probs(self.ref, batch, with_entropy=False)[0]}

    # ------------------------------------------------------------------ update
    def update_actor(self, batch: Batch) -> dict[str, float]:
        """PPO-style update over this rank's share of the batch.

        The batch is cut into `ppo_mini_batch_size x n / world_size` rows per optimizer step, each into
        micro-batches; losses are weighted so the gradient equals the chosen aggregation over the whole
        mini-batch across ranks. The scheduler steps once per call (one training step).
        """
        a, cfg = self.cfg.actor, self.cfg
        self.actor.train()
        mini = max(1, a.ppo_mini_batch_size * cfg.rollout.n // self.world_size)
        temperature = cfg.rollout.temperature or 1.0
        R_full = batch["responses"].shape[1]
        norm_len = a.loss_norm_len or R_full
        agg_mode = "seq-mean-token-mean" if a.policy_loss == "gspo" else a.loss_agg_mode
        sums: dict[str, float] = {}
        weight = 0.0
        grad_norms = []
        skipped = 0
        for _epoch in range(a.ppo_epochs):
            for mb in split_fixed(batch, mini):
                mask_all = mb["response_mask"]
                g_tokens = _all_reduce_sum(float(mask_all.sum()), self.device)
                g_seqs = _all_reduce_sum(float((mask_all.sum(-1) > 0).sum()), self.device)
                self.optimizer.zero_grad(set_to_none=True)
                for micro in micro_batches(mb, a.micro_batch_size_per_worker, a.use_dynamic_bsz,
                                           a.max_tokens_per_micro_batch, self.device):
                    micro, _ = trim(micro)
                    mask = micro["response_mask"].to(self.device)
                    logits = response_logits(self.actor, micro, self.device)
                    if temperature != 1.0:
                        logits = logits / temperature
                    logp = token_log_probs(logits, micro["responses"].to(self.device))
                    pg_loss, pg_metrics = self.policy_loss_fn(
                        micro["old_log_prob"].to(self.device), logp, micro["advantages"].to(self.device), mask,
                        clip_low=a.clip_ratio_low, clip_high=a.clip_ratio_high, clip_c=a.clip_ratio_c,
                        agg=agg_mode, norm_len=norm_len)
                    metrics = {"actor/pg_loss": float(pg_loss.detach()), **{f"actor/{k}": v for k, v in pg_metrics.items()}}
                    ent = kl = None
                    if a.entropy_coeff != 0.0:
                        ent = agg_loss(entropy_from_logits(logits, chunk_size=a.entropy_chunk_size), mask, agg_mode,
                                       norm_len=norm_len)
                        metrics["actor/entropy_loss"] = float(ent.detach())
                    if a.use_kl_loss:
                        kl = kl_loss(logp, micro["ref_log_prob"].to(self.device), mask, a.kl_loss_type, agg_mode,
                                     norm_len=norm_len)
                        metrics["actor/kl_loss"] = float(kl.detach())
                        metrics["actor/kl_coef"] = a.kl_loss_coef
                    loss = total_actor_loss(pg_loss, entropy=ent, entropy_coeff=a.entropy_coeff, kl=kl,
                                            kl_coef=a.kl_loss_coef if a.use_kl_loss else 0.0)
                    scale = loss_scale(agg_mode, mask, g_tokens, g_seqs, self.world_size)
                    (loss * scale).backward()
                    w = float(mask.sum())
                    weight += w
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0.0) + v * w
                gn = fsdp.clip_grad_norm(list(self.actor.parameters()), a.grad_clip)
                if not torch.isfinite(torch.tensor(gn)):
                    skipped += 1  # a non-finite gradient would corrupt the weights: skip this step
                    self.optimizer.zero_grad(set_to_none=True)
                else:
                    self.optimizer.step()
                grad_norms.append(gn)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        self.actor.eval()
        out = {k: v / max(weight, 1.0) for k, v in sums.items()}
        out.update({"actor/grad_norm": sum(grad_norms) / max(len(grad_norms), 1), "actor/lr": lr,
                    "actor/skipped_steps": float(skipped)})
        return out

    # ------------------------------------------------------------------ state
    def state_dicts(self) -> dict[str, Any]:
        """Sharded model and optimizer state (for torch.distributed.checkpoint) plus the scheduler."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.actor, self.optimizer)
        return {"model": model_sd, "optim": optim_sd, "scheduler": self.scheduler.state_dict()}

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        from torch.distributed.checkpoint.state_dict import set_state_dict

        set_state_dict(self.actor, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sync_rollout_weights()
