"""The typed configuration: one dataclass per section, composed into `ZeroSearchConfig`.

Every field's `help` says what it does and its unit; where a default comes from a paper or from the
original ZeroSearch / Search-R1 launchers, the help says so. Hydra validates types when composing
(`zerosearch.config.store` registers these classes); `zerosearch.config.validate` checks everything a
type cannot express (ranges, divisibility, paths) once, at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


def cfg_field(default: Any = None, help: str = "", *, factory: Any = None) -> Any:  # noqa: A002
    """A dataclass field carrying its one-line help text (shown by `--help-keys` and in the docs)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    path: Optional[str] = cfg_field(
        None, "DATA_PATH: a folder in the ZeroSearch_dataset layout (train.parquet, test.parquet); fills train/val files when they are empty")
    train_files: list[str] = cfg_field(
        help="training QA files: .jsonl (shared/data/qa layout) or .parquet (ZeroSearch/Search-R1 layout)", factory=list)
    val_files: list[str] = cfg_field(help="validation QA files, same formats; every row is scored", factory=list)
    train_batch_size: int = cfg_field(64, "prompts per training step (each rolled out rollout.n times); original: 64")
    val_batch_size: int = cfg_field(256, "prompts per validation generation batch (the last, short batch is kept)")
    val_max_rows_per_source: Optional[int] = cfg_field(
        None, "cap on validation rows per data source (a seeded subsample; None = all rows)")
    max_prompt_length: int = cfg_field(1024, "tokens; a longer prompt is an error (or skipped with skip_invalid_rows), never cut")
    prompt_template: str = cfg_field(
        "zerosearch", "agent prompt template: search_r1 (the original's, byte for byte) | zerosearch (our wording) | "
        "compact (tiny models) | a path to a .txt file with a {question} placeholder")
    use_dataset_prompt: bool = cfg_field(
        False, "when a parquet row has a `prompt` column, train on that chat as it is (through the chat template "
        "per data.chat_template) instead of rendering prompt_template; rows without one use the template")
    chat_template: str = cfg_field(
        "auto", "render the prompt through the tokenizer's chat template: auto (when it has one) | always | never")
    shuffle: bool = cfg_field(True, "shuffle training rows each epoch (seeded by trainer.seed)")
    skip_invalid_rows: bool = cfg_field(
        False, "skip malformed rows, reporting how many, instead of stopping at the first with an error")


@dataclass
class ModelConfig:
    path: str = cfg_field("", "MODEL_PATH: a Hugging Face model folder (or hub id where the hub is reachable)")
    tokenizer_path: Optional[str] = cfg_field(None, "tokenizer folder; None = model.path")
    dtype: str = cfg_field(
        "float32", "master weight dtype of the trained models (and so of AdamW's state): float32 (default; auto "
        "is the same) | bfloat16 (warned: at lr 1e-6 most updates round away). Compute runs in actor.param_dtype")
    attn_implementation: str = cfg_field("sdpa", "attention kernel: sdpa | eager | flash_attention_2 (needs the flash-attn extra)")
    gradient_checkpointing: bool = cfg_field(False, "recompute activations in backward to save memory")
    trust_remote_code: bool = cfg_field(False, "allow model code from the model folder")


@dataclass
class RolloutConfig:
    engine: str = cfg_field("hf", "generation engine: hf (transformers, CPU or GPU) | vllm (offline engine)")
    n: int = cfg_field(5, "samples per prompt = GRPO group size; original: 5")
    temperature: float = cfg_field(1.0, "sampling temperature for training rollouts; original: 1.0")
    top_p: float = cfg_field(1.0, "nucleus sampling mass for training rollouts (1.0 = off)")
    top_k: int = cfg_field(-1, "top-k sampling for training rollouts (-1 = off)")
    val_temperature: float = cfg_field(0.0, "validation sampling temperature (0 = greedy, as evaluation should be)")
    max_turns: int = cfg_field(5, "MAX_TURNS: searches allowed before the forced final answer turn")
    max_response_length: int = cfg_field(500, "tokens the policy may generate in one turn; original: 500")
    max_obs_length: int = cfg_field(500, "tokens of one <information> observation (documents are shortened, the closing tag kept)")
    max_total_length: int = cfg_field(
        4096, "tokens of prompt + whole response; a trajectory that would exceed it ends, marked truncated")
    invalid_action_text: str = cfg_field(
        "\nMy previous action was not valid: a search goes inside <search> and </search>, and a final answer "
        "inside the answer tags. I will try again.\n",
        "observation appended after a turn that neither searched nor answered (must hold no complete answer-tag "
        "pair: the reward would read it as the trajectory's answer)")
    observation_layout: str = cfg_field(
        "search_r1", "how documents are written in <information>: search_r1 (Doc i(Title: t) text) | simulated "
        "(a simulator's Doc i: text as it wrote them) | google (Doc i: {title}{snippet}) | wiki (Doc i: text) | "
        "auto (the original's layout of each engine: simulated, google or wiki)")
    max_query_chars: int = cfg_field(512, "a search query longer than this many characters is cut (counted in env/query_chars_cut)")
    micro_batch_size: int = cfg_field(256, "sequences per generation call of the hf engine")
    cpu_decode_kernels: bool = cfg_field(
        True, "hf engine on CPU: decode with sdpa_gqa attention (no K/V head repeat) and prepacked bf16 weights, "
        "the same tokens, faster (zerosearch/generation/cpu_kernels.py); for Qwen2/LLaMA through the fused decoder "
        "(fused q/k/v and gate/up projections, the same tokens up to a matmul's last bits: "
        "zerosearch/generation/fused_decode.py)")
    gpu_memory_utilization: float = cfg_field(0.5, "vllm: fraction of device memory (of RAM on CPU) for weights + KV cache")
    tensor_parallel_size: int = cfg_field(1, "vllm: tensor-parallel degree of each rollout engine")
    enforce_eager: bool = cfg_field(False, "vllm: disable CUDA graphs / compilation (faster start, slower decode)")
    log_prob_check: bool = cfg_field(
        True, "log rollout/log_prob_diff: engine log-probs vs the trainer's recomputation (catches stale weights)")
    mode: str = cfg_field(
        "async", "sync: every live trajectory generates, then the turn's searches go out together | async: each "
        "trajectory goes back to generation as soon as its own search returned (same ids for the same seeds; "
        "docs/PERFORMANCE.md 'Asynchronous rollout')")
    on_eos_without_action: str = cfg_field(
        "end", "after an end-of-sequence without <search>/<answer>: end (stop reason eos) | continue (the original "
        "ZeroSearch: an invalid action, the notice is appended and the trajectory goes on)")
    async_groups: int = cfg_field(
        1, "async: a generate call takes at most ceil(live trajectories / groups) of the ready ones; 2+ lets one "
        "group's searches run while another generates, which pays only where half a batch generates in about half "
        "the time (compute-bound engines); on CPU at toy sizes 1 was fastest (docs/PERFORMANCE.md)")
    async_batching: str = cfg_field(
        "auto", "async: how the engine batches ready trajectories | continuous (sequences join and leave the "
        "running batch between decode steps: a finished turn's search goes out at once, a returned one joins "
        "the next step, reusing its KV cache; HF and vLLM engines, in this process or on the trainer's Ray "
        "workers) | call (whole generate calls over the ready trajectories) | auto (continuous for engines in "
        "this process; call through the trainer's Ray workers, where it measured faster on CPU: "
        "docs/PERFORMANCE.md)")
    async_batch_wait_s: float = cfg_field(
        0.02, "async: with searches in flight, wait up to this long for more trajectories to become ready before "
        "starting a generate call smaller than a group")
    async_search_unit: str = cfg_field(
        "auto", "async: auto (batch for the in-process simulator, else request) | request (each search its own search() call on a thread pool: a slow request delays only "
        "its trajectory; for engines that serve concurrent calls: HTTP simulators, retrieval, web) | batch (the "
        "searches of one generate call in one search() call: the in-process simulator)")
    async_max_searches: int = cfg_field(64, "async, unit request: search() calls in flight at once (threads)")
    engine_log_probs_as_old: bool = cfg_field(
        False, "exactly on-policy steps only (actor.ppo_epochs=1, actor.ppo_mini_batch_size=data.train_batch_size): "
        "use the engine's log-probs as old_log_prob and skip the trainer's old-log-prob pass (the PPO ratio then "
        "starts at exp(trainer - engine) instead of 1; rollout/log_prob_diff and actor/entropy are not logged)")


@dataclass
class SimulationConfig:
    servers: str = cfg_field("localhost:6001", "IP: host, host:port or a comma list of them; the default port is 6001")
    transport: str = cfg_field(
        "chat", "chat (/v1/chat/completions) | completions (/v1/completions, template rendered here) | sglang (/generate) | inprocess (a local HF model)")
    model_name: str = cfg_field(
        "", "SIMULATION_LLM: served model name sent in requests (sglang ignores it; vLLM needs the served name)")
    model_path: Optional[str] = cfg_field(None, "inprocess transport: the simulator's model folder (also the tokenizer for completions)")
    prompt_family: str = cfg_field(
        "", "simulator prompt files <family>_{useful,noisy,system}.txt in prompt_dir: simulate_sft (the original's, "
        "exact) | simulate_prompt | simulate_sft_all_answers | simulate_prompt_all_answers; empty = search.mode")
    prompt_dir: Optional[str] = cfg_field(None, "folder of prompt templates; None = configs/prompts")
    words_per_doc: int = cfg_field(30, "words per simulated document, as asked in the prompt; original: 30")
    temperature: float = cfg_field(0.8, "simulator sampling temperature; original: 0.8")
    top_p: float = cfg_field(1.0, "simulator nucleus sampling mass")
    max_tokens: int = cfg_field(600, "tokens the simulator may write per request; original: about 600")
    timeout_s: float = cfg_field(60.0, "seconds per HTTP request before it counts as a timeout")
    max_retries: int = cfg_field(3, "retries after the first try (connection errors, timeouts, 429, 5xx); never infinite")
    backoff_s: float = cfg_field(0.5, "first retry delay in seconds; doubles each retry, with jitter")
    backoff_max_s: float = cfg_field(8.0, "cap on one retry delay, seconds")
    max_concurrency: int = cfg_field(64, "simulator requests in flight at once, across servers")
    fallback_text: str = cfg_field("No information available.", "the document returned when every try failed (counted)")
    server_cooldown_s: float = cfg_field(30.0, "a server failing server_failure_limit times in a row is skipped this long")
    server_failure_limit: int = cfg_field(3, "consecutive failures before a server is skipped for a while")
    batch_timeout_s: float = cfg_field(
        60.0, "a search call's generations are cut off (counted as timeouts, one WARNING with the counts) when no "
        "reply has succeeded for this long: a server that never answers costs at most this per search turn "
        "(rollout.max_turns per step), not the retries' worst case ((max_retries+1) x timeout_s + backoffs)")
    max_reply_bytes: int = cfg_field(1 << 20, "most bytes of one simulator reply read; a larger one fails as 'oversize'")


@dataclass
class RetrievalConfig:
    url: Optional[str] = cfg_field(
        None, "a Search-R1 compatible /retrieve server (e.g. http://127.0.0.1:8000/retrieve); None = a local index")
    corpus_path: Optional[str] = cfg_field(None, "jsonl corpus ({id, contents}, title on the first line) for a local index")
    index_dir: Optional[str] = cfg_field(None, "where the local index is stored (built once when missing); None = beside the corpus")
    method: str = cfg_field("bm25", "local index kind: bm25 | dense (needs the dense extra)")
    dense_model: str = cfg_field("intfloat/e5-base-v2", "sentence-transformers model for dense retrieval")
    timeout_s: float = cfg_field(30.0, "seconds per request to a retrieval server")
    max_retries: int = cfg_field(3, "retries for a retrieval server request")
    protocol: str = cfg_field(
        "search_r1", "retrieval server API: search_r1 (POST {queries, topk} -> {result}) | zerosearch (ZeroSearch's wiki "
        "retriever: POST {query, top_k} -> [{text}], one query a call; url defaults to 127.0.0.1:6002)")
    batch_timeout_s: float = cfg_field(30.0, "cut a search call off when no retrieval reply succeeded for this long")
    max_reply_bytes: int = cfg_field(32 << 20, "most bytes of one retrieval reply read; a larger one fails as 'oversize'")


@dataclass
class WebSearchConfig:
    provider: str = cfg_field("serpapi", "web search provider (the key comes from SERPAPI_API_KEY, never from config)")
    engine: str = cfg_field("google", "SerpApi engine")
    location: Optional[str] = cfg_field(None, "SerpApi location parameter")
    gl: str = cfg_field("us", "SerpApi country")
    hl: str = cfg_field("en", "SerpApi language")
    timeout_s: float = cfg_field(30.0, "seconds per request")
    max_retries: int = cfg_field(3, "retries per request")
    batch_timeout_s: float = cfg_field(30.0, "cut a search call off when no SerpApi reply succeeded for this long")
    max_reply_bytes: int = cfg_field(8 << 20, "most bytes of one SerpApi reply read; a larger one fails as 'oversize'")


@dataclass
class SearchConfig:
    mode: str = cfg_field("simulate_sft", "SEARCH_MODE, the training engine: simulate_sft | simulate_prompt | retrieval (alias wiki) | google")
    eval_engine: str = cfg_field(
        "retrieval", "SEARCH_ENGINE, the validation engine: retrieval (alias wiki) | google | simulate_sft | simulate_prompt "
        "| none (no validation); retrieval without url or corpus_path (nothing configured) warns once and skips validation")
    topk: int = cfg_field(5, "TOPK: documents per search; original: 5")
    cache_train: bool = cfg_field(False, "cache results during training (keyed by query, mode and noise)")
    cache_eval: bool = cfg_field(True, "cache results during validation")
    simulation: SimulationConfig = cfg_field(factory=SimulationConfig, help="the simulation LLM")
    retrieval: RetrievalConfig = cfg_field(factory=RetrievalConfig, help="real retrieval (local index or server)")
    web: WebSearchConfig = cfg_field(factory=WebSearchConfig, help="web search through SerpApi")
    probe: bool = cfg_field(
        True, "at start-up, before any model loads, probe every search server the run uses (reachable, serves "
              "SIMULATION_LLM, one real call parses) and stop on a failure; false skips it (a SerpApi probe costs a search)")
    max_fallback_share: float = cfg_field(
        0.5, "a training step whose searches fell back (failed) for more than this share logs a warning with the counts")
    max_bad_search_steps: int = cfg_field(
        3, "this many such steps in a row stop the run (the last good step's checkpoint is kept); <= 0 = never stop")


@dataclass
class CurriculumConfig:
    start_threshold: float = cfg_field(0.0, "START_THRESHOLD: probability of noisy documents at step 0 (p_s)")
    end_threshold: float = cfg_field(0.5, "END_THRESHOLD: probability of noisy documents at the last step (p_e)")
    base: float = cfg_field(4.0, "curriculum base b in p_s + (b^(i/m) - 1)/(b - 1) (p_e - p_s); ZeroSearch: 4")
    granularity: str = cfg_field("query", "noise draw: query (all documents of a result useful or all noisy, as the original) | document")
    allow_decreasing: bool = cfg_field(False, "allow end_threshold < start_threshold (a falling curriculum)")


@dataclass
class RewardConfig:
    score: str = cfg_field("f1", "training reward: f1 (ZeroSearch) | em | cover_em (Search-R1's EM)")
    format_reward: bool = cfg_field(False, "add Search-R1's format reward (structure, final format, retrieval)")
    structure_format_score: float = cfg_field(0.2, "format reward: score for a well-formed trajectory with a wrong answer")
    final_format_score: float = cfg_field(0.1, "format reward: score for a well-formed final answer only")
    retrieval_score: float = cfg_field(0.1, "format reward: extra score when a retrieved document holds a gold answer")


@dataclass
class AlgorithmConfig:
    adv_estimator: str = cfg_field(
        "grpo", "advantage estimator: gae (PPO) | grpo | reinforce | reinforce_plus_plus | reinforce_plus_plus_baseline | rloo")
    norm_adv_by_std: bool = cfg_field(True, "grpo: divide by the group std (False = Dr.GRPO)")
    gamma: float = cfg_field(1.0, "discount factor (GAE, REINFORCE++)")
    lam: float = cfg_field(1.0, "GAE lambda")
    use_kl_in_reward: bool = cfg_field(False, "subtract kl_coef * KL(actor || ref) from the token rewards (PPO style)")
    kl_penalty: str = cfg_field("kl", "KL estimator inside the reward: k1/kl | k2/mse | k3/low_var_kl | abs")
    kl_ctrl: str = cfg_field("fixed", "KL coefficient controller for the in-reward KL: fixed | adaptive")
    kl_coef: float = cfg_field(0.001, "initial in-reward KL coefficient; original: 0.001")
    kl_target: float = cfg_field(0.1, "adaptive controller: target KL per token")
    kl_horizon: int = cfg_field(10000, "adaptive controller: horizon, in samples")


@dataclass
class ActorConfig:
    lr: float = cfg_field(1e-6, "AdamW learning rate; original: 1e-6")
    lr_warmup_steps: int = cfg_field(-1, "linear warm-up steps; -1 = use lr_warmup_ratio")
    lr_warmup_ratio: float = cfg_field(0.0, "warm-up as a fraction of trainer.total_steps")
    lr_schedule: str = cfg_field("constant", "after warm-up: constant | cosine")
    min_lr_ratio: float = cfg_field(0.0, "cosine: final lr as a fraction of lr")
    weight_decay: float = cfg_field(0.01, "AdamW weight decay")
    betas: list[float] = cfg_field(help="AdamW betas", factory=lambda: [0.9, 0.999])
    grad_clip: float = cfg_field(1.0, "max global gradient norm (<= 0 = no clipping)")
    ppo_mini_batch_size: int = cfg_field(64, "prompts per optimizer step (x rollout.n trajectories); must divide data.train_batch_size")
    micro_batch_size_per_worker: int = cfg_field(8, "trajectories per forward/backward on one worker")
    use_dynamic_bsz: bool = cfg_field(False, "pack micro-batches by token count instead of a fixed size")
    max_tokens_per_micro_batch: int = cfg_field(16384, "dynamic micro-batches: tokens per micro-batch on one worker")
    ppo_epochs: int = cfg_field(1, "passes over each batch")
    policy_loss: str = cfg_field("ppo", "policy loss: ppo (clipped, dual-clip) | gspo (sequence-level ratio)")
    clip_ratio_low: float = cfg_field(0.2, "PPO epsilon below 1")
    clip_ratio_high: float = cfg_field(0.2, "PPO epsilon above 1 (DAPO clip-higher uses 0.28)")
    clip_ratio_c: Optional[float] = cfg_field(
        3.0, "dual-clip bound for negative advantages (dual-clip PPO); null = no dual clip (the original's loss)")
    loss_agg_mode: str = cfg_field(
        "token-mean", "token-mean | token-sum | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm")
    loss_norm_len: Optional[int] = cfg_field(None, "seq-mean-token-sum-norm: constant normaliser (None = padded length)")
    entropy_coeff: float = cfg_field(0.0, "entropy bonus coefficient; original: 0")
    use_kl_loss: bool = cfg_field(False, "add kl_loss_coef * KL(actor || ref) to the loss (GRPO style)")
    kl_loss_coef: float = cfg_field(0.001, "KL loss coefficient; original: 0.001")
    kl_loss_type: str = cfg_field("low_var_kl", "KL estimator for the loss: k1/kl | k2/mse | k3/low_var_kl | abs")
    param_dtype: str = cfg_field(
        "auto", "compute dtype of forward/backward (FSDP2 mixed precision; gradients reduced in fp32), also of the "
        "reference, the rollout copy and the vLLM engine: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
    cpu_offload: bool = cfg_field(False, "GPU: keep sharded parameters, gradients and optimizer state in CPU memory")
    entropy_chunk_size: int = cfg_field(2048, "tokens per chunk when computing entropy from logits")


@dataclass
class CriticConfig:
    model_path: Optional[str] = cfg_field(None, "critic backbone; None = model.path")
    lr: float = cfg_field(1e-5, "critic AdamW learning rate; original: 1e-5")
    lr_warmup_steps: int = cfg_field(-1, "linear warm-up steps; -1 = use lr_warmup_ratio")
    lr_warmup_ratio: float = cfg_field(0.0, "warm-up as a fraction of trainer.total_steps")
    weight_decay: float = cfg_field(0.01, "AdamW weight decay")
    grad_clip: float = cfg_field(1.0, "max global gradient norm")
    cliprange_value: float = cfg_field(0.5, "value clipping range around the old values")
    ppo_epochs: int = cfg_field(1, "passes over each batch")
    ppo_mini_batch_size: Optional[int] = cfg_field(
        None, "prompts per critic optimizer step (x rollout.n trajectories); None = actor.ppo_mini_batch_size (as the original)")
    micro_batch_size_per_worker: int = cfg_field(8, "trajectories per forward/backward on one worker")
    use_dynamic_bsz: Optional[bool] = cfg_field(None, "pack micro-batches by token count; None = actor.use_dynamic_bsz (as the original)")
    max_tokens_per_micro_batch: Optional[int] = cfg_field(
        None, "dynamic micro-batches: tokens per critic micro-batch on one worker; None = 2 x actor.max_tokens_per_micro_batch "
        "(the original's 32768: a value head has no vocabulary-sized logits)")
    param_dtype: str = cfg_field("auto", "critic compute dtype (FSDP2 mixed precision): auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
    cpu_offload: Optional[bool] = cfg_field(None, "GPU: keep the critic's shards and optimizer state in CPU memory; None = actor.cpu_offload")
    loss_agg_mode: str = cfg_field("token-mean", "aggregation of the value loss")


@dataclass
class RefConfig:
    micro_batch_size_per_worker: int = cfg_field(16, "trajectories per reference forward on one worker")


@dataclass
class GuardsConfig:
    """Early warnings of policy collapse (GRPO search agents are reported to collapse around step 150-200)."""

    min_entropy: float = cfg_field(0.05, "warn when actor/entropy (mean over policy tokens, nats) falls below this; 0 = off")
    max_response_length_share: float = cfg_field(
        0.9, "warn when the mean response fills more than this share of its budget (rollout.max_total_length minus "
        "the mean prompt); 1 = off")
    max_no_search_share: float = cfg_field(
        0.95, "warn when more than this share of trajectories never search; 1 = off")


@dataclass
class TrainerConfig:
    total_steps: int = cfg_field(203, "TOTAL_STEPS: training steps (one batch of prompts each); original: 203")
    device: str = cfg_field("auto", "auto (cuda when available) | cpu | cuda")
    n_gpus_per_node: int = cfg_field(1, "NUM_GPUS_PER_NODE: GPUs (= workers) per node on GPU")
    nnodes: int = cfg_field(1, "nodes in the Ray cluster")
    cpu_workers: int = cfg_field(2, "worker processes on CPU (FSDP2 over gloo)")
    cpu_threads_per_worker: int = cfg_field(
        1, "torch / OpenMP threads of each CPU worker (its Ray CPU share); with fewer workers than cores, more "
        "threads use the rest: 1 worker x 2 threads was the fastest 25 M step on 2 cores (docs/PERFORMANCE.md)")
    cpu_malloc_tuning: bool = cfg_field(
        True, "CPU workers keep freed tensor memory for the next step (glibc mallopt: mmap threshold 32 MiB, "
        "trim threshold 1 GiB) instead of page-faulting it back every step; no effect on GPU or without glibc "
        "(docs/PERFORMANCE.md)")
    ray_address: Optional[str] = cfg_field(None, "join this Ray cluster (e.g. auto or head:6379); None = start a local one")
    seed: int = cfg_field(1, "SEED: seeds data order, sampling, curriculum draws and initialisation")
    project_name: str = cfg_field("zerosearch", "tracking project")
    experiment_name: str = cfg_field("run", "EXPERIMENT_NAME: names the run and its folder")
    output_dir: str = cfg_field("outputs/${trainer.experiment_name}", "run folder: checkpoints, metrics.jsonl, summary.json")
    save_freq: int = cfg_field(50, "checkpoint every N steps (and at the end); <= 0 = only at the end")
    keep_last_k: int = cfg_field(2, "checkpoints kept (older ones are deleted)")
    resume: str = cfg_field("auto", "auto (latest checkpoint in output_dir) | disable | a checkpoint folder")
    test_freq: int = cfg_field(50, "validate every N steps (and at the end); <= 0 = only at the end")
    val_before_train: bool = cfg_field(True, "validate before the first step")
    val_only: bool = cfg_field(
        False, "validate the model (or the checkpoint trainer.resume names) once and exit, no training (the "
        "original's key); the numbers go to summary.json as final_val")
    val_noise_levels: list[float] = cfg_field(
        help="also validate against the training (simulated) engine at these fixed noise probabilities", factory=list)
    critic_warmup: int = cfg_field(0, "steps that update only the critic")
    max_consecutive_skips: int = cfg_field(
        5, "stop the run after this many training steps in a row whose actor or critic update was skipped for a "
        "non-finite loss or gradient (the last good checkpoint is kept); 0 = never stop")
    placement_strategy: str = cfg_field(
        "PACK", "Ray placement of the ranks: PACK (as few nodes as possible) | SPREAD (across nodes) | STRICT_PACK | STRICT_SPREAD")
    guards: GuardsConfig = cfg_field(factory=GuardsConfig, help="collapse warnings")


@dataclass
class LoggingConfig:
    backends: list[str] = cfg_field(
        help="where metrics go: console | jsonl | tensorboard | wandb", factory=lambda: ["console", "jsonl", "tensorboard"])
    wandb_mode: str = cfg_field(
        "offline", "wandb: online | offline (no network needed) | disabled; a WANDB_MODE environment variable wins")
    wandb_init_timeout_s: float = cfg_field(
        30.0, "seconds wandb may take to reach its server; then the run continues offline, with a warning")
    progress_bar: bool = cfg_field(True, "show a progress bar with ETA")
    log_examples: int = cfg_field(1, "trajectories printed per validation (text)")


@dataclass
class ZeroSearchConfig:
    """The whole run. Sections mirror the parts of the system (docs/ARCHITECTURE.md)."""

    data: DataConfig = cfg_field(factory=DataConfig, help="training and validation data")
    model: ModelConfig = cfg_field(factory=ModelConfig, help="the agent model")
    rollout: RolloutConfig = cfg_field(factory=RolloutConfig, help="multi-turn generation")
    search: SearchConfig = cfg_field(factory=SearchConfig, help="search engines for training and validation")
    curriculum: CurriculumConfig = cfg_field(factory=CurriculumConfig, help="noise schedule of simulated search")
    reward: RewardConfig = cfg_field(factory=RewardConfig, help="how a trajectory is scored")
    algorithm: AlgorithmConfig = cfg_field(factory=AlgorithmConfig, help="advantage estimation and in-reward KL")
    actor: ActorConfig = cfg_field(factory=ActorConfig, help="policy optimisation")
    critic: CriticConfig = cfg_field(factory=CriticConfig, help="value model (PPO)")
    ref: RefConfig = cfg_field(factory=RefConfig, help="frozen reference policy (KL)")
    trainer: TrainerConfig = cfg_field(factory=TrainerConfig, help="the training loop and its resources")
    logging: LoggingConfig = cfg_field(factory=LoggingConfig, help="tracking")
