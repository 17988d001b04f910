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
    prompt_template: str = cfg_field("zerosearch", "agent prompt template name (zerosearch.data.prompts.TEMPLATES)")
    chat_template: str = cfg_field(
        "auto", "render the prompt through the tokenizer's chat template: auto (when it has one) | always | never")
    shuffle: bool = cfg_field(True, "shuffle training rows each epoch (seeded by trainer.seed)")
    skip_invalid_rows: bool = cfg_field(
        False, "skip malformed rows, reporting how many, instead of stopping at the first with an error")


@dataclass
class ModelConfig:
    path: str = cfg_field("", "MODEL_PATH: a Hugging Face model folder (or hub id where the hub is reachable)")
    tokenizer_path: Optional[str] = cfg_field(None, "tokenizer folder; None = model.path")
    dtype: str = cfg_field("auto", "parameter dtype for training: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
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
    max_query_chars: int = cfg_field(512, "a search query longer than this many characters is cut (counted in env/query_chars_cut)")
    micro_batch_size: int = cfg_field(256, "sequences per generation call of the hf engine")
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
    prompt_family: str = cfg_field("", "simulate_sft | simulate_prompt; empty = from search.mode")
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


@dataclass
class WebSearchConfig:
    provider: str = cfg_field("serpapi", "web search provider (the key comes from SERPAPI_API_KEY, never from config)")
    engine: str = cfg_field("google", "SerpApi engine")
    location: Optional[str] = cfg_field(None, "SerpApi location parameter")
    gl: str = cfg_field("us", "SerpApi country")
    hl: str = cfg_field("en", "SerpApi language")
    timeout_s: float = cfg_field(30.0, "seconds per request")
    max_retries: int = cfg_field(3, "retries per request")


@dataclass
class SearchConfig:
    mode: str = cfg_field("simulate_sft", "SEARCH_MODE, the training engine: simulate_sft | simulate_prompt | retrieval | google")
    eval_engine: str = cfg_field(
        "retrieval", "SEARCH_ENGINE, the validation engine: retrieval (alias wiki) | google | simulate_sft | simulate_prompt")
    topk: int = cfg_field(5, "TOPK: documents per search; original: 5")
    cache_train: bool = cfg_field(False, "cache results during training (keyed by query, mode and noise)")
    cache_eval: bool = cfg_field(True, "cache results during validation")
    simulation: SimulationConfig = cfg_field(factory=SimulationConfig, help="the simulation LLM")
    retrieval: RetrievalConfig = cfg_field(factory=RetrievalConfig, help="real retrieval (local index or server)")
    web: WebSearchConfig = cfg_field(factory=WebSearchConfig, help="web search through SerpApi")


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
    clip_ratio_c: float = cfg_field(3.0, "dual-clip bound for negative advantages (dual-clip PPO)")
    loss_agg_mode: str = cfg_field(
        "token-mean", "token-mean | token-sum | seq-mean-token-sum | seq-mean-token-mean | seq-mean-token-sum-norm")
    loss_norm_len: Optional[int] = cfg_field(None, "seq-mean-token-sum-norm: constant normaliser (None = padded length)")
    entropy_coeff: float = cfg_field(0.0, "entropy bonus coefficient; original: 0")
    use_kl_loss: bool = cfg_field(False, "add kl_loss_coef * KL(actor || ref) to the loss (GRPO style)")
    kl_loss_coef: float = cfg_field(0.001, "KL loss coefficient; original: 0.001")
    kl_loss_type: str = cfg_field("low_var_kl", "KL estimator for the loss: k1/kl | k2/mse | k3/low_var_kl | abs")
    param_dtype: str = cfg_field("auto", "FSDP2 mixed precision compute dtype: auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16")
    cpu_offload: bool = cfg_field(False, "GPU: keep sharded parameters and optimizer state in CPU memory")
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
    micro_batch_size_per_worker: int = cfg_field(8, "trajectories per forward/backward on one worker")
    loss_agg_mode: str = cfg_field("token-mean", "aggregation of the value loss")


@dataclass
class RefConfig:
    micro_batch_size_per_worker: int = cfg_field(16, "trajectories per reference forward on one worker")


@dataclass
class TrainerConfig:
    total_steps: int = cfg_field(203, "TOTAL_STEPS: training steps (one batch of prompts each); original: 203")
    device: str = cfg_field("auto", "auto (cuda when available) | cpu | cuda")
    n_gpus_per_node: int = cfg_field(1, "NUM_GPUS_PER_NODE: GPUs (= workers) per node on GPU")
    nnodes: int = cfg_field(1, "nodes in the Ray cluster")
    cpu_workers: int = cfg_field(2, "worker processes on CPU (FSDP2 over gloo)")
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
    val_noise_levels: list[float] = cfg_field(
        help="also validate against the training (simulated) engine at these fixed noise probabilities", factory=list)
    critic_warmup: int = cfg_field(0, "steps that update only the critic")


@dataclass
class LoggingConfig:
    backends: list[str] = cfg_field(
        help="where metrics go: console | jsonl | tensorboard | wandb", factory=lambda: ["console", "jsonl", "tensorboard"])
    wandb_mode: str = cfg_field("offline", "wandb: online | offline (no network needed) | disabled")
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
