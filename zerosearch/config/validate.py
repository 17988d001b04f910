"""Start-up validation of a composed configuration.

Hydra and OmegaConf already reject unknown keys and values of the wrong type while composing; this
module checks what types cannot say (allowed names, ranges, divisibility, paths) and reports *every*
problem at once, each naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import fields, is_dataclass
from typing import Any, Iterable

from zerosearch.config.schema import ZeroSearchConfig

ADV_ESTIMATORS = ("gae", "grpo", "reinforce", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "rloo")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")
AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
SEARCH_MODES = ("simulate_sft", "simulate_prompt", "retrieval", "google")
EVAL_ENGINES = ("retrieval", "wiki", "google", "simulate_sft", "simulate_prompt")
TRANSPORTS = ("chat", "completions", "sglang", "inprocess")
LOG_BACKENDS = ("console", "jsonl", "tensorboard", "wandb")


class ConfigError(ValueError):
    """One or more configuration values are invalid; the message lists each with its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem{'s' * (len(problems) != 1)}):\n{lines}")


class _Checker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, key: str, value: Any, allowed: str) -> None:
        self.problems.append(f"{key}={value!r}: {allowed}")

    def choice(self, key: str, value: Any, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.fail(key, value, f"must be one of {', '.join(allowed)}{hint}")

    def prob(self, key: str, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            self.fail(key, value, "must be a probability in [0, 1]")

    def positive(self, key: str, value: float, *, allow_zero: bool = False) -> None:
        if value < 0 or (value == 0 and not allow_zero):
            self.fail(key, value, "must be >= 0" if allow_zero else "must be > 0")

    def path(self, key: str, value: str | None, *, what: str = "path") -> None:
        if value and not os.path.exists(value):
            self.fail(key, value, f"{what} does not exist")


def _local_or_hub(path: str) -> bool:
    """A model path that is not a folder is accepted only if it looks like a hub id (org/name)."""
    return os.path.exists(path) or (path.count("/") == 1 and not path.startswith((".", "/")))


def validate_config(cfg: ZeroSearchConfig, *, check_paths: bool = True) -> ZeroSearchConfig:
    """Check a composed config; raise ConfigError listing every problem. Returns cfg for chaining.

    Args:
        cfg: the structured config (``OmegaConf.to_object`` of the Hydra config).
        check_paths: also require model and data paths to exist (off for `--cfg job` style printing).
    """
    c = _Checker()
    d, r, s, cu, a, ac, cr, t = (
        cfg.data, cfg.rollout, cfg.search, cfg.curriculum, cfg.algorithm, cfg.actor, cfg.critic, cfg.trainer)

    # --- data
    c.positive("data.train_batch_size", d.train_batch_size)
    c.positive("data.val_batch_size", d.val_batch_size)
    c.positive("data.max_prompt_length", d.max_prompt_length)
    c.choice("data.chat_template", d.chat_template, ("auto", "always", "never"))
    if d.val_max_rows_per_source is not None:
        c.positive("data.val_max_rows_per_source", d.val_max_rows_per_source)

    # --- rollout
    c.choice("rollout.engine", r.engine, ("hf", "vllm"))
    c.positive("rollout.n", r.n)
    c.positive("rollout.temperature", r.temperature, allow_zero=True)
    c.positive("rollout.val_temperature", r.val_temperature, allow_zero=True)
    if not 0.0 < r.top_p <= 1.0:
        c.fail("rollout.top_p", r.top_p, "must be in (0, 1]")
    if r.top_k == 0 or r.top_k < -1:
        c.fail("rollout.top_k", r.top_k, "must be -1 (off) or >= 1")
    c.positive("rollout.max_turns", r.max_turns, allow_zero=True)
    c.positive("rollout.max_response_length", r.max_response_length)
    c.positive("rollout.max_obs_length", r.max_obs_length)
    if r.max_total_length <= d.max_prompt_length:
        c.fail("rollout.max_total_length", r.max_total_length,
               f"must exceed data.max_prompt_length ({d.max_prompt_length}) to leave room for a response")
    c.prob("rollout.gpu_memory_utilization", r.gpu_memory_utilization)
    c.positive("rollout.tensor_parallel_size", r.tensor_parallel_size)
    c.choice("rollout.mode", r.mode, ("sync", "async"))
    c.choice("rollout.on_eos_without_action", r.on_eos_without_action, ("end", "continue"))
    c.choice("rollout.async_search_unit", r.async_search_unit, ("auto", "request", "batch"))
    c.positive("rollout.async_groups", r.async_groups)
    c.positive("rollout.async_batch_wait_s", r.async_batch_wait_s, allow_zero=True)
    c.positive("rollout.async_max_searches", r.async_max_searches)
    if r.engine_log_probs_as_old and (ac.ppo_epochs != 1 or ac.ppo_mini_batch_size != d.train_batch_size):
        c.fail("rollout.engine_log_probs_as_old", True, "only for exactly on-policy steps: needs actor.ppo_epochs=1 "
               f"(is {ac.ppo_epochs}) and actor.ppo_mini_batch_size = data.train_batch_size "
               f"({ac.ppo_mini_batch_size} vs {d.train_batch_size})")

    # --- search
    c.choice("search.mode", s.mode, SEARCH_MODES)
    c.choice("search.eval_engine", s.eval_engine, EVAL_ENGINES)
    c.positive("search.topk", s.topk)
    sim = s.simulation
    c.choice("search.simulation.transport", sim.transport, TRANSPORTS)
    if sim.prompt_family:
        c.choice("search.simulation.prompt_family", sim.prompt_family, ("simulate_sft", "simulate_prompt"))
    c.positive("search.simulation.timeout_s", sim.timeout_s)
    c.positive("search.simulation.max_retries", sim.max_retries, allow_zero=True)
    c.positive("search.simulation.max_concurrency", sim.max_concurrency)
    c.positive("search.simulation.words_per_doc", sim.words_per_doc)
    c.positive("search.simulation.temperature", sim.temperature, allow_zero=True)
    uses_sim = s.mode.startswith("simulate") or s.eval_engine.startswith("simulate") or bool(t.val_noise_levels)
    if uses_sim and sim.transport != "inprocess" and not sim.servers.strip():
        c.fail("search.simulation.servers", sim.servers, "needs at least one host[:port] for an HTTP transport")
    if uses_sim and sim.transport == "inprocess" and not sim.model_path:
        c.fail("search.simulation.model_path", sim.model_path, "the inprocess transport needs the simulator's model folder")
    if uses_sim and sim.transport == "inprocess" and r.mode == "async" and r.async_search_unit == "request":
        c.fail("rollout.async_search_unit", r.async_search_unit, "the inprocess simulator generates one search() "
               "call at a time: use batch (or auto) with search.simulation.transport=inprocess")
    if check_paths and uses_sim and sim.model_path:
        c.path("search.simulation.model_path", sim.model_path, what="simulator model folder")
    c.choice("search.retrieval.method", s.retrieval.method, ("bm25", "dense"))
    uses_retrieval = "retrieval" in (s.mode, s.eval_engine) or s.eval_engine == "wiki"
    if uses_retrieval and not (s.retrieval.url or s.retrieval.corpus_path):
        c.fail("search.retrieval.corpus_path", s.retrieval.corpus_path,
               "retrieval needs search.retrieval.url (a /retrieve server) or a local corpus_path")
    if check_paths and uses_retrieval and not s.retrieval.url:
        c.path("search.retrieval.corpus_path", s.retrieval.corpus_path, what="corpus file")

    # --- curriculum
    c.prob("curriculum.start_threshold", cu.start_threshold)
    c.prob("curriculum.end_threshold", cu.end_threshold)
    if cu.end_threshold < cu.start_threshold and not cu.allow_decreasing:
        c.fail("curriculum.end_threshold", cu.end_threshold,
               f"is below curriculum.start_threshold ({cu.start_threshold}); set curriculum.allow_decreasing=true "
               "if a falling noise schedule is meant")
    if cu.base <= 0 or cu.base == 1:
        c.fail("curriculum.base", cu.base, "must be > 0 and != 1")
    c.choice("curriculum.granularity", cu.granularity, ("query", "document"))

    # --- reward
    c.choice("reward.score", cfg.reward.score, ("f1", "em", "cover_em"))

    # --- algorithm
    c.choice("algorithm.adv_estimator", a.adv_estimator, ADV_ESTIMATORS)
    c.prob("algorithm.gamma", a.gamma)
    c.prob("algorithm.lam", a.lam)
    c.choice("algorithm.kl_penalty", a.kl_penalty, KL_KINDS)
    c.choice("algorithm.kl_ctrl", a.kl_ctrl, ("fixed", "adaptive"))
    c.positive("algorithm.kl_coef", a.kl_coef, allow_zero=True)
    if a.adv_estimator in ("grpo", "rloo", "reinforce_plus_plus_baseline") and r.n < 2:
        c.fail("rollout.n", r.n, f"algorithm.adv_estimator={a.adv_estimator} compares samples of a prompt: needs >= 2")

    # --- actor / critic
    c.positive("actor.lr", ac.lr)
    c.prob("actor.lr_warmup_ratio", ac.lr_warmup_ratio)
    c.choice("actor.lr_schedule", ac.lr_schedule, ("constant", "cosine"))
    c.choice("actor.policy_loss", ac.policy_loss, ("ppo", "gspo"))
    c.choice("actor.loss_agg_mode", ac.loss_agg_mode, AGG_MODES)
    c.choice("actor.kl_loss_type", ac.kl_loss_type, KL_KINDS)
    c.choice("actor.param_dtype", ac.param_dtype, ("auto", "float32", "bfloat16"))
    c.positive("actor.clip_ratio_low", ac.clip_ratio_low)
    c.positive("actor.clip_ratio_high", ac.clip_ratio_high)
    if ac.clip_ratio_c <= 1.0:
        c.fail("actor.clip_ratio_c", ac.clip_ratio_c, "the dual-clip bound must be > 1")
    c.positive("actor.ppo_mini_batch_size", ac.ppo_mini_batch_size)
    c.positive("actor.micro_batch_size_per_worker", ac.micro_batch_size_per_worker)
    c.positive("actor.ppo_epochs", ac.ppo_epochs)
    if ac.ppo_mini_batch_size > 0 and d.train_batch_size % ac.ppo_mini_batch_size:
        c.fail("actor.ppo_mini_batch_size", ac.ppo_mini_batch_size,
               f"must divide data.train_batch_size ({d.train_batch_size})")
    c.positive("critic.lr", cr.lr)
    c.positive("critic.cliprange_value", cr.cliprange_value)
    c.choice("critic.loss_agg_mode", cr.loss_agg_mode, AGG_MODES)
    c.choice("model.dtype", cfg.model.dtype, ("auto", "float32", "bfloat16"))
    c.choice("model.attn_implementation", cfg.model.attn_implementation, ("sdpa", "eager", "flash_attention_2"))

    # --- trainer / resources
    c.positive("trainer.total_steps", t.total_steps)
    c.choice("trainer.device", t.device, ("auto", "cpu", "cuda"))
    c.positive("trainer.n_gpus_per_node", t.n_gpus_per_node)
    c.positive("trainer.nnodes", t.nnodes)
    c.positive("trainer.cpu_workers", t.cpu_workers)
    c.positive("trainer.keep_last_k", t.keep_last_k)
    for i, p in enumerate(t.val_noise_levels):
        c.prob(f"trainer.val_noise_levels[{i}]", p)
    # divisibility by the number of workers is checked by check_world_size once resources are known
    for i, b in enumerate(cfg.logging.backends):
        c.choice(f"logging.backends[{i}]", b, LOG_BACKENDS)
    c.choice("logging.wandb_mode", cfg.logging.wandb_mode, ("online", "offline", "disabled"))

    # --- paths
    if check_paths:
        if not cfg.model.path:
            c.fail("model.path", cfg.model.path, "is required (MODEL_PATH): a Hugging Face model folder")
        elif not _local_or_hub(cfg.model.path):
            c.fail("model.path", cfg.model.path, "model folder does not exist")
        if cfg.model.tokenizer_path and not _local_or_hub(cfg.model.tokenizer_path):
            c.fail("model.tokenizer_path", cfg.model.tokenizer_path, "tokenizer folder does not exist")
        c.path("data.path", d.path, what="data folder")
        for i, f in enumerate(d.train_files):
            c.path(f"data.train_files[{i}]", f, what="training file")
        for i, f in enumerate(d.val_files):
            c.path(f"data.val_files[{i}]", f, what="validation file")
        if not d.train_files and not d.path:
            c.fail("data.train_files", d.train_files, "no training data: set DATA_PATH (data.path) or data.train_files")

    if c.problems:
        raise ConfigError(c.problems)
    return cfg


def check_world_size(cfg: ZeroSearchConfig, world_size: int) -> None:
    """Divisibility checks that need the number of workers (known once resources are resolved)."""
    c = _Checker()
    n_traj = cfg.data.train_batch_size * cfg.rollout.n
    mini = cfg.actor.ppo_mini_batch_size * cfg.rollout.n
    if n_traj % world_size:
        c.fail("data.train_batch_size", cfg.data.train_batch_size,
               f"x rollout.n ({cfg.rollout.n}) = {n_traj} trajectories must divide evenly over {world_size} workers")
    if mini % world_size:
        c.fail("actor.ppo_mini_batch_size", cfg.actor.ppo_mini_batch_size,
               f"x rollout.n ({cfg.rollout.n}) = {mini} trajectories must divide evenly over {world_size} workers")
    if c.problems:
        raise ConfigError(c.problems)


def schema_keys() -> list[str]:
    """All dotted leaf keys of the schema (for unknown-key messages)."""
    return [key for key, _, _ in schema_help()]


def schema_help(cls: type = ZeroSearchConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(key, help, default) for every leaf field, in declaration order."""
    out: list[tuple[str, str, Any]] = []
    for f in fields(cls):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        if is_dataclass(default):
            out.extend(schema_help(type(default), f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", f.metadata.get("help", ""), default))
    return out


def check_override_keys(overrides: list[str]) -> None:
    """Reject `a.b=c` overrides whose key is not in the schema, suggesting the closest known keys.

    Group selections (`algorithm=ppo`), additions (`+a.b=c`) and Hydra's own keys (`hydra.*`) pass.
    """
    keys = schema_keys()
    sections = {k.split(".")[0] for k in keys}
    problems = []
    for ov in overrides:
        if "=" not in ov or ov.startswith(("+", "~", "hydra.", "hydra/")):
            continue
        key = ov.split("=", 1)[0].lstrip("+")
        if "." not in key and key not in keys and key in GROUPS:
            continue  # a config group selection, e.g. algorithm=ppo
        if key in keys or key in sections:
            continue
        if "[" in key:
            continue
        section = key.split(".")[0]
        if section in sections:
            known = [k for k in keys if k.startswith(section + ".")]
            close = difflib.get_close_matches(key, known, n=3)
            msg = f"unknown key '{key}'" + (f" (did you mean {', '.join(close)}?)" if close else "")
            msg += f"; known keys in '{section}': {', '.join(k.split('.', 1)[1] for k in known)}"
        else:
            msg = f"unknown key '{key}': no section '{section}'; sections: {', '.join(sorted(sections))}; groups: {', '.join(GROUPS)}"
        problems.append(msg)
    if problems:
        raise ConfigError(problems)


# config groups users select with `group=option` (folders of configs/)
GROUPS = ("algorithm", "search", "experiment")
