"""Start-up validation of a composed configuration.

Hydra and OmegaConf already reject unknown keys and values of the wrong type while composing; this
module checks what types cannot say (allowed names, ranges, divisibility, paths) and reports *every*
problem at once, each naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import warnings
import uuid
from dataclasses import fields, is_dataclass
from typing import Any, Iterable
from urllib.parse import urlsplit

from zerosearch.config.schema import ZeroSearchConfig

ADV_ESTIMATORS = ("gae", "grpo", "reinforce", "reinforce_plus_plus", "reinforce_plus_plus_baseline", "rloo")
KL_KINDS = ("kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3")
AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")
SEARCH_MODES = ("simulate_sft", "simulate_prompt", "retrieval", "google")
EVAL_ENGINES = ("retrieval", "wiki", "google", "simulate_sft", "simulate_prompt", "none")
TRANSPORTS = ("chat", "completions", "sglang", "inprocess")
LOG_BACKENDS = ("console", "jsonl", "tensorboard", "wandb")
WANDB_MODES = ("online", "offline", "disabled")


def eval_engine_configured(s: Any) -> bool:
    """Whether `search` (a SearchConfig) names a usable validation engine. The original's command line names
    none (its SEARCH_ENGINE default, a local wiki retriever, needs a server): retrieval without a url or a
    corpus, or `none`, means no validation (the trainer warns once and skips it) rather than a refusal."""
    if s.eval_engine == "none":
        return False
    if s.eval_engine in ("retrieval", "wiki"):
        # ZeroSearch's retriever protocol has a default server (127.0.0.1:6002); Search-R1's needs a url or corpus
        return bool(s.retrieval.url or s.retrieval.corpus_path or s.retrieval.protocol == "zerosearch")
    return True


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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".safetensors.index.json", ".bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")


def model_folder_problem(path: str, *, need_weights: bool = True, need_tokenizer: bool = True) -> str | None:
    """What is wrong with `path` as a Hugging Face model folder (None when it looks loadable).

    A path that does not exist but looks like a hub id (org/name) passes: where the hub is reachable it loads.
    """
    if os.path.isfile(path):
        return "is a file; expected a Hugging Face model folder (config.json, weights, tokenizer files)"
    if not os.path.isdir(path):
        return None if _local_or_hub(path) else "model folder does not exist"
    names = os.listdir(path)
    if not names:
        return "is an empty folder; expected a Hugging Face model folder (config.json, weights, tokenizer files)"
    missing = []
    if need_weights and "config.json" not in names:
        missing.append("config.json")
    if need_weights and not any(n.endswith(WEIGHT_SUFFIXES) for n in names):
        missing.append("weights (*.safetensors or pytorch_model*.bin)")
    if need_tokenizer and not any(n in TOKENIZER_FILES for n in names):
        missing.append(f"tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    return f"is missing {' and '.join(missing)}: not a complete model folder" if missing else None


def writable_problem(folder: str) -> str | None:
    """Why `folder` cannot be written (None when a test file could be written, synced and removed there).

    A folder that does not exist yet is tested through its nearest existing parent: nothing is created.
    """
    probe_dir = os.path.abspath(folder)
    while not os.path.exists(probe_dir) and os.path.dirname(probe_dir) != probe_dir:
        probe_dir = os.path.dirname(probe_dir)
    if not os.path.isdir(probe_dir):
        return f"cannot be created: {probe_dir} is a file, not a folder"
    probe = os.path.join(probe_dir, f".zerosearch_write_test_{uuid.uuid4().hex[:8]}")
    try:
        with open(probe, "wb") as f:
            f.write(b"ok")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        where = "" if probe_dir == os.path.abspath(folder) else f" (tested in its nearest existing parent {probe_dir})"
        return f"cannot be written{where}: {e.strerror or e}; choose a writable folder"
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    return None


def server_problems(spec: str) -> list[str]:
    """Why the IP value `spec` (host, host:port or a comma list) cannot be a list of servers ([] when fine)."""
    from zerosearch.search.http import parse_servers

    try:
        urls = parse_servers(spec)
    except ValueError as e:
        return [str(e)]
    problems = []
    for url in urls:
        try:
            parts = urlsplit(url)  # checks a bracketed IPv6 literal itself (Python >= 3.11.4)
        except ValueError:
            problems.append(f"server {url!r}: {url.split('//', 1)[-1].split(']')[0].lstrip('[')!r} is not an IPv6 "
                            "address (write IPv6 as [addr]:port)")
            continue
        try:
            port = parts.port
        except ValueError:  # urllib: "Port out of range 0-65535" or not a number
            port = -1
        if port is not None and not 0 < port < 65536:
            problems.append(f"server {url!r}: the port must be in 1..65535")
        host = parts.hostname or ""
        if not host:
            problems.append(f"server {url!r}: no host")
        elif ":" in host:
            try:
                ipaddress.IPv6Address(host)
            except ValueError:
                problems.append(f"server {url!r}: {host!r} is not an IPv6 address (write IPv6 as [addr]:port)")
    return problems


def _uses_web(cfg: ZeroSearchConfig) -> bool:
    return "google" in (cfg.search.mode, cfg.search.eval_engine)


def _runtime_checks(c: "_Checker", cfg: ZeroSearchConfig) -> None:
    """What depends on this machine rather than on the values: writable folders, keys in the environment."""
    out = cfg.trainer.output_dir
    ckpts = os.path.join(out, "checkpoints")  # may be read-only on its own (e.g. a mount)
    for folder in (out, ckpts) if os.path.exists(ckpts) else (out,):
        problem = writable_problem(folder)
        if problem:
            c.fail("trainer.output_dir", out, f"{folder} {problem}" if folder != out else problem)
            break
    if _uses_web(cfg):
        from zerosearch.search.web import API_KEY_ENVS

        if not any(os.environ.get(n, "").strip() for n in API_KEY_ENVS):
            c.fail("search.eval_engine" if cfg.search.eval_engine == "google" else "search.mode", "google",
                   f"web search through SerpApi needs its key in the environment ({' or '.join(API_KEY_ENVS)}; "
                   "never in a config file): export SERPAPI_API_KEY=<key>, or evaluate offline with "
                   "search.eval_engine=retrieval")


def preflight(cfg: ZeroSearchConfig) -> None:
    """The checks of this machine alone (folders writable, API keys present), for entry points that were
    handed an already validated config: seconds, before any model, data or Ray starts."""
    c = _Checker()
    _runtime_checks(c, cfg)
    if c.problems:
        raise ConfigError(c.problems)


def _finite(c: "_Checker", obj: Any, prefix: str = "") -> None:
    """Every float field (and list of floats) of the config must be a finite number: `inf` and `nan` parse as
    floats and pass every range check written with < and >."""
    for f in fields(obj):
        v, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if is_dataclass(v):
            _finite(c, v, key + ".")
        elif isinstance(v, float) and not math.isfinite(v):
            c.fail(key, v, "must be a finite number")
        elif isinstance(v, list):
            for i, x in enumerate(v):
                if isinstance(x, float) and not math.isfinite(x):
                    c.fail(f"{key}[{i}]", x, "must be a finite number")


def _numeric_ranges(c: "_Checker", cfg: ZeroSearchConfig) -> None:
    """Ranges of the numeric fields not checked in the sections of validate_config."""
    s, ac, cr, a = cfg.search, cfg.actor, cfg.critic, cfg.algorithm
    for key, v in (("search.simulation.backoff_s", s.simulation.backoff_s),
                   ("search.simulation.backoff_max_s", s.simulation.backoff_max_s),
                   ("search.simulation.server_cooldown_s", s.simulation.server_cooldown_s),
                   ("search.retrieval.max_retries", s.retrieval.max_retries), ("search.web.max_retries", s.web.max_retries),
                   ("actor.weight_decay", ac.weight_decay), ("critic.weight_decay", cr.weight_decay),
                   ("actor.kl_loss_coef", ac.kl_loss_coef), ("actor.entropy_coeff", ac.entropy_coeff)):
        c.positive(key, v, allow_zero=True)
    for key, v in (("search.simulation.max_tokens", s.simulation.max_tokens),
                   ("search.simulation.server_failure_limit", s.simulation.server_failure_limit),
                   ("search.retrieval.timeout_s", s.retrieval.timeout_s), ("search.web.timeout_s", s.web.timeout_s),
                   ("algorithm.kl_target", a.kl_target), ("algorithm.kl_horizon", a.kl_horizon),
                   ("actor.max_tokens_per_micro_batch", ac.max_tokens_per_micro_batch),
                   ("critic.ppo_epochs", cr.ppo_epochs), ("critic.micro_batch_size_per_worker", cr.micro_batch_size_per_worker),
                   ("ref.micro_batch_size_per_worker", cfg.ref.micro_batch_size_per_worker),
                   ("rollout.micro_batch_size", cfg.rollout.micro_batch_size),
                   ("rollout.max_query_chars", cfg.rollout.max_query_chars)):
        c.positive(key, v)
    if not 0.0 < s.simulation.top_p <= 1.0:
        c.fail("search.simulation.top_p", s.simulation.top_p, "must be in (0, 1]")
    c.prob("actor.min_lr_ratio", ac.min_lr_ratio)
    c.prob("critic.lr_warmup_ratio", cr.lr_warmup_ratio)
    for i, b in enumerate(ac.betas):
        if not 0.0 <= b < 1.0:
            c.fail(f"actor.betas[{i}]", b, "must be in [0, 1)")


def validate_config(cfg: ZeroSearchConfig, *, check_paths: bool = True) -> ZeroSearchConfig:
    """Check a composed config; raise ConfigError listing every problem. Returns cfg for chaining.

    Args:
        cfg: the structured config (``OmegaConf.to_object`` of the Hydra config).
        check_paths: also require model and data paths to exist (off for `--cfg job` style printing).
    """
    # the names a config may choose are registered by the layers above config; read them here, late, so that
    # importing config stays light and the import layers stay one-way (tests/test_import_layers.py)
    from zerosearch.data.prompts import AGENT_TEMPLATE_NAMES
    from zerosearch.search.formatting import LAYOUT_CHOICES
    from zerosearch.search.sim_prompts import available_families

    c = _Checker()
    d, r, s, cu, a, ac, cr, t = (
        cfg.data, cfg.rollout, cfg.search, cfg.curriculum, cfg.algorithm, cfg.actor, cfg.critic, cfg.trainer)

    # --- data
    c.positive("data.train_batch_size", d.train_batch_size)
    c.positive("data.val_batch_size", d.val_batch_size)
    c.positive("data.max_prompt_length", d.max_prompt_length)
    c.choice("data.chat_template", d.chat_template, ("auto", "always", "never"))
    if d.prompt_template not in AGENT_TEMPLATE_NAMES and not (d.prompt_template.endswith(".txt")
                                                                and os.path.isfile(d.prompt_template)):
        c.fail("data.prompt_template", d.prompt_template,
               f"must be one of {', '.join(AGENT_TEMPLATE_NAMES)} or an existing .txt template file")
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
    c.choice("rollout.observation_layout", r.observation_layout, LAYOUT_CHOICES)
    c.positive("rollout.tensor_parallel_size", r.tensor_parallel_size)
    c.choice("rollout.mode", r.mode, ("sync", "async"))
    c.choice("rollout.on_eos_without_action", r.on_eos_without_action, ("end", "continue"))
    c.choice("rollout.async_search_unit", r.async_search_unit, ("auto", "request", "batch"))
    c.positive("rollout.async_groups", r.async_groups)
    c.choice("rollout.async_batching", r.async_batching, ("auto", "continuous", "call"))
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
    if sim.prompt_family and (not sim.prompt_dir or os.path.isdir(sim.prompt_dir)):
        c.choice("search.simulation.prompt_family", sim.prompt_family, available_families(sim.prompt_dir))
    elif sim.prompt_dir and not os.path.isdir(sim.prompt_dir):
        c.fail("search.simulation.prompt_dir", sim.prompt_dir, "folder of prompt templates does not exist")
    c.positive("search.simulation.timeout_s", sim.timeout_s)
    c.positive("search.simulation.max_retries", sim.max_retries, allow_zero=True)
    c.positive("search.simulation.max_concurrency", sim.max_concurrency)
    c.positive("search.simulation.words_per_doc", sim.words_per_doc)
    c.positive("search.simulation.temperature", sim.temperature, allow_zero=True)
    for sec, sub in (("simulation", sim), ("retrieval", s.retrieval), ("web", s.web)):
        c.positive(f"search.{sec}.batch_timeout_s", sub.batch_timeout_s)
        c.positive(f"search.{sec}.max_reply_bytes", sub.max_reply_bytes)
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
    c.choice("search.retrieval.protocol", s.retrieval.protocol, ("search_r1", "zerosearch"))
    # training by retrieval needs an index or a server; validation without one is skipped (eval_engine_configured)
    uses_retrieval = s.mode == "retrieval" or (s.eval_engine in ("retrieval", "wiki") and eval_engine_configured(s))
    local_index = s.retrieval.protocol == "search_r1" and not s.retrieval.url  # ZeroSearch's is a server's only
    if s.mode == "retrieval" and local_index and not s.retrieval.corpus_path:
        c.fail("search.retrieval.corpus_path", s.retrieval.corpus_path,
               "training by retrieval (search.mode=retrieval) needs search.retrieval.url (a /retrieve server) or a "
               "local corpus_path")
    if check_paths and uses_retrieval and local_index:
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
    if ac.clip_ratio_c is not None and ac.clip_ratio_c <= 1.0:
        c.fail("actor.clip_ratio_c", ac.clip_ratio_c, "the dual-clip bound must be > 1 (or null: no dual clip)")
    c.positive("actor.ppo_mini_batch_size", ac.ppo_mini_batch_size)
    c.positive("actor.micro_batch_size_per_worker", ac.micro_batch_size_per_worker)
    c.positive("actor.ppo_epochs", ac.ppo_epochs)
    if ac.ppo_mini_batch_size > 0 and d.train_batch_size % ac.ppo_mini_batch_size:
        c.fail("actor.ppo_mini_batch_size", ac.ppo_mini_batch_size,
               f"must divide data.train_batch_size ({d.train_batch_size})")
    c.positive("critic.lr", cr.lr)
    c.choice("critic.param_dtype", cr.param_dtype, ("auto", "float32", "bfloat16"))
    c.positive("critic.ppo_epochs", cr.ppo_epochs)
    c.positive("critic.micro_batch_size_per_worker", cr.micro_batch_size_per_worker)
    if cr.max_tokens_per_micro_batch is not None:
        c.positive("critic.max_tokens_per_micro_batch", cr.max_tokens_per_micro_batch)
    if cr.ppo_mini_batch_size is not None:
        c.positive("critic.ppo_mini_batch_size", cr.ppo_mini_batch_size)
        if cr.ppo_mini_batch_size > 0 and d.train_batch_size % cr.ppo_mini_batch_size:
            c.fail("critic.ppo_mini_batch_size", cr.ppo_mini_batch_size,
                   f"must divide data.train_batch_size ({d.train_batch_size})")
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
    c.positive("trainer.cpu_threads_per_worker", t.cpu_threads_per_worker)
    c.positive("trainer.keep_last_k", t.keep_last_k)
    c.positive("trainer.max_consecutive_skips", t.max_consecutive_skips, allow_zero=True)
    for i, p in enumerate(t.val_noise_levels):
        c.prob(f"trainer.val_noise_levels[{i}]", p)
    # divisibility by the number of workers is checked by check_world_size once resources are known
    for i, b in enumerate(cfg.logging.backends):
        c.choice(f"logging.backends[{i}]", b, LOG_BACKENDS)
    c.choice("logging.wandb_mode", cfg.logging.wandb_mode, WANDB_MODES)
    if os.environ.get("WANDB_MODE", "") not in ("", *WANDB_MODES, "dryrun", "run"):
        c.fail("logging.wandb_mode", os.environ["WANDB_MODE"], "(from the WANDB_MODE environment variable, which wins "
               f"over the config) must be one of {', '.join(WANDB_MODES)}")
    c.positive("logging.wandb_init_timeout_s", cfg.logging.wandb_init_timeout_s)
    c.choice("trainer.placement_strategy", t.placement_strategy, ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"))
    g = t.guards
    c.positive("trainer.guards.min_entropy", g.min_entropy, allow_zero=True)
    c.prob("trainer.guards.max_response_length_share", g.max_response_length_share)
    c.prob("trainer.guards.max_no_search_share", g.max_no_search_share)

    # --- numbers (finite everywhere; ranges not checked above) and servers
    _finite(c, cfg)
    _numeric_ranges(c, cfg)
    if uses_sim and sim.transport != "inprocess" and sim.servers.strip():
        for problem in server_problems(sim.servers):
            c.fail("search.simulation.servers", sim.servers, problem)

    # --- paths
    if check_paths:
        if not cfg.model.path:
            c.fail("model.path", cfg.model.path, "is required (MODEL_PATH): a Hugging Face model folder")
        else:
            problem = model_folder_problem(cfg.model.path, need_tokenizer=not cfg.model.tokenizer_path)
            if problem:
                c.fail("model.path", cfg.model.path, problem)
        if cfg.model.tokenizer_path:
            problem = model_folder_problem(cfg.model.tokenizer_path, need_weights=False)
            if problem:
                c.fail("model.tokenizer_path", cfg.model.tokenizer_path, problem.replace("model folder", "tokenizer folder"))
        if a.adv_estimator == "gae" and cr.model_path:
            problem = model_folder_problem(cr.model_path, need_tokenizer=False)
            if problem:
                c.fail("critic.model_path", cr.model_path, problem)
        if uses_sim and sim.transport == "inprocess" and sim.model_path and os.path.exists(sim.model_path):
            problem = model_folder_problem(sim.model_path)
            if problem:
                c.fail("search.simulation.model_path", sim.model_path, problem)
        c.path("data.path", d.path, what="data folder")
        for i, f in enumerate(d.train_files):
            c.path(f"data.train_files[{i}]", f, what="training file")
        for i, f in enumerate(d.val_files):
            c.path(f"data.val_files[{i}]", f, what="validation file")
        if not d.train_files and not d.path:
            c.fail("data.train_files", d.train_files, "no training data: set DATA_PATH (data.path) or data.train_files")
        _runtime_checks(c, cfg)

    if c.problems:
        raise ConfigError(c.problems)
    for msg in config_warnings(cfg):
        warnings.warn(msg, UserWarning, stacklevel=2)
    return cfg


def config_warnings(cfg: ZeroSearchConfig) -> list[str]:
    """Settings that are valid but very likely wrong, each with the reason (shown at start-up)."""
    out = []
    if cfg.model.dtype == "bfloat16":
        out.append(
            "model.dtype=bfloat16 keeps the master weights and AdamW's state in bf16: bf16 has 8 bits of mantissa, "
            f"so an Adam step of about actor.lr={cfg.actor.lr:g} is rounded away for every weight larger than about "
            f"{cfg.actor.lr * 512:.0e} in size and training changes almost nothing. Use model.dtype=float32 (fp32 "
            "masters) with actor.param_dtype=bfloat16 (bf16 compute) instead")
    return out


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
    critic_mini = cfg.critic.ppo_mini_batch_size
    if critic_mini is not None and (critic_mini * cfg.rollout.n) % world_size:
        c.fail("critic.ppo_mini_batch_size", critic_mini,
               f"x rollout.n ({cfg.rollout.n}) = {critic_mini * cfg.rollout.n} trajectories must divide evenly over "
               f"{world_size} workers")
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
GROUPS = ("algorithm", "search", "experiment", "preset")
