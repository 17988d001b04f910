"""The policy side of one rank: the FSDP2 actor, the frozen reference, and the colocated rollout engine.

No orchestration here: the trainer (through Ray, or directly in a single process) calls these methods
with this rank's share of the batch. Everything is plain torch + transformers.
"""

from __future__ import annotations

import copy
from typing import Any, Sequence

import torch

from zerosearch.algos import agg_loss, entropy_from_logits, get_policy_loss, kl_loss, total_actor_loss
from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.generation.factory import build_generation_engine, needs_policy_copy
from zerosearch.generation.types import GenerationEngine, GenerationOutput, SamplingParams
from zerosearch.workers import fsdp
from zerosearch.workers.batching import Batch, map_rows, response_logits, token_log_probs
from zerosearch.workers.optim import build_optimizer, build_scheduler, warmup_steps
from zerosearch.workers.update import actor_settings, run_update


class PolicyWorker:
    """Actor (trainable), reference (frozen, only when a KL term is used) and rollout engine of one rank.

    Precision: the actor's master weights, gradients and AdamW state are in `model.dtype` (fp32 by
    default); forward and backward run in `actor.param_dtype` through FSDP2's mixed-precision policy, with
    gradients reduced in fp32. The reference is frozen, so it is stored (sharded) in the compute dtype.

    Args:
        cfg: the run's configuration.
        rank, world_size: this rank in the FSDP group (the group must be initialised).
        device: "cpu" or "cuda".
        model_path: overrides cfg.model.path (e.g. a warm-started checkpoint), for every copy of the policy
            (actor, reference, rollout engine).
    """

    def __init__(self, cfg: ZeroSearchConfig, rank: int, world_size: int, device: str, model_path: str | None = None):
        from transformers import AutoTokenizer

        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = fsdp.device_for_rank(device)
        self.model_path = path = model_path or cfg.model.path
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.model.tokenizer_path or path, padding_side="left",
                                                       trust_remote_code=cfg.model.trust_remote_code)
        self.master_dtype = fsdp.master_dtype(cfg.model.dtype)
        self.compute_dtype = fsdp.resolve_dtype(cfg.actor.param_dtype, device)
        base = fsdp.load_causal_lm(path, self.master_dtype, cfg.model.attn_implementation,
                                   cfg.model.trust_remote_code, cfg.model.gradient_checkpointing)
        self.needs_ref = cfg.actor.use_kl_loss or cfg.algorithm.use_kl_in_reward
        self.ref = None
        if self.needs_ref:
            ref = copy.deepcopy(base).to(device=self.device, dtype=self.compute_dtype)
            for p in ref.parameters():
                p.requires_grad_(False)
            self.ref = fsdp.shard_model(ref, self.compute_dtype, cpu_offload=cfg.actor.cpu_offload).eval()
        # the hf engine decodes with an unsharded copy, taken before sharding; vLLM loads its own weights
        rollout_copy = copy.deepcopy(base) if needs_policy_copy(cfg.rollout.engine) else None
        self.actor = fsdp.shard_model(base.to(self.device), self.compute_dtype, cpu_offload=cfg.actor.cpu_offload)
        # after sharding, so a vLLM engine sizes its share against the trainer's real footprint
        self.engine = self._build_engine(rollout_copy)
        a = cfg.actor
        self.optimizer = build_optimizer(self.actor.parameters(), a.lr, a.weight_decay, tuple(a.betas))
        self.scheduler = build_scheduler(
            self.optimizer, cfg.trainer.total_steps, warmup_steps(cfg.trainer.total_steps, a.lr_warmup_steps,
                                                                  a.lr_warmup_ratio), a.lr_schedule, a.min_lr_ratio)
        self.policy_loss_fn = get_policy_loss(a.policy_loss)

    # ------------------------------------------------------------------ rollout
    def _build_engine(self, rollout_copy: torch.nn.Module | None) -> GenerationEngine:
        """The `rollout.engine` of this rank, in the compute dtype, from this worker's model path (so a
        `model_path` override reaches vLLM too). `rollout_copy`: the unsharded module an engine that decodes
        in memory (hf) takes over; None for one that loads its own weights (vLLM)."""
        return build_generation_engine(self.cfg.rollout.engine, self.cfg, self.tokenizer, self.model_path,
                                       policy=rollout_copy, device=self.device, compute_dtype=self.compute_dtype)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        return self.engine.generate(prompts, params, max_new_tokens, seeds)

    def sync_rollout_weights(self) -> None:
        """Gather the actor's full weights and load them into the rollout engine."""
        self.engine.update_weights(fsdp.full_state_dict_as(self.actor, self.compute_dtype))

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
        """PPO-style update over this rank's share of the batch (`workers.update.run_update`: mini-batches,
        micro-batches, loss weighting, clipping, the skip of non-finite steps); the loss of one micro-batch
        is `pg - entropy_coeff * entropy + kl_coef * kl` under `rollout.temperature`."""
        a, cfg = self.cfg.actor, self.cfg
        settings = actor_settings(cfg)
        temperature = cfg.rollout.temperature or 1.0
        norm_len = a.loss_norm_len or batch["responses"].shape[1]
        agg_mode = settings.loss_agg_mode

        def micro_loss(micro: Batch, mask: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
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
            return loss, metrics

        return run_update(self.actor, self.optimizer, self.scheduler, batch, settings, micro_loss,
                          n=cfg.rollout.n, world_size=self.world_size, device=self.device)

    # ------------------------------------------------------------------ state
    def state_dicts(self) -> dict[str, Any]:
        """Sharded model and optimizer state (for torch.distributed.checkpoint) plus the scheduler."""
        return fsdp.training_state(self.actor, self.optimizer, self.scheduler)

    def load_state_dicts(self, state: dict[str, Any]) -> None:
        fsdp.load_training_state(self.actor, self.optimizer, self.scheduler, state)
        self.sync_rollout_weights()
