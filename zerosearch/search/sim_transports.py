"""How a rendered simulator prompt reaches a model, and how its text comes back.

HTTP transports only say what to POST where and how to read the answer; the engine
(`zerosearch.search.simulated`) owns concurrency, retries, deadlines and fallbacks for all of them:

    chat         POST /v1/chat/completions  {"model", "messages": [system?, user], ...} -> choices[0].message.content
                 (vLLM and sglang both serve it; the server applies the chat template)
    completions  POST /v1/completions       {"model", "prompt": <chat template rendered here>, ...}
                 -> choices[0].text
    sglang       POST /generate             {"text": <rendered here>, "sampling_params": {...}} -> text

`model` is the served model name. vLLM checks it against `--served-model-name` (404 otherwise); an empty
name is left out of the request, which vLLM and sglang both answer with their (only) served model.

A prompt is a `SimPrompt` (the family's system message, sent even when empty, and the user message) or a
bare string (one user message).

`InProcessTransport` runs a local Hugging Face model with batched `generate` (left padding) on CPU: for
development, tests and the toy world, where a server would be overhead.
"""

from __future__ import annotations

import abc
import logging
from typing import Any, Sequence

from zerosearch.generation.types import SamplingParams
from zerosearch.search.sim_prompts import SimPrompt, chat_messages
from zerosearch.utils.seeding import stable_seed

log = logging.getLogger(__name__)


class ChatRenderer:
    """Renders a user message through a tokenizer's chat template (for servers that take raw text).

    A tokenizer without a chat template (a base model) gets the message as is."""

    def __init__(self, tokenizer_path: str | None = None, tokenizer: Any = None):
        if tokenizer is None:
            if not tokenizer_path:
                raise ValueError("this transport renders the chat template client-side and needs the "
                                 "simulator's tokenizer: set search.simulation.model_path")
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
        self.tokenizer = tokenizer
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        if not self.has_template:
            log.warning("tokenizer %s has no chat template: simulator prompts are sent as plain text",
                        tokenizer_path)

    def render(self, prompt: str | SimPrompt) -> str:
        """The chat (system message included) through the template; without one, the user message."""
        if not self.has_template:
            return prompt.user if isinstance(prompt, SimPrompt) else prompt
        return self.tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)


def _expect_str(value: Any, where: str) -> str:
    if value is None:  # some servers send null content for an empty generation
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{where} is {type(value).__name__}, expected a string")
    return value


class HttpTransport(abc.ABC):
    """One request format: `path`, `payload(prompt, sampling)` and `extract(json) -> text`.
    `extract` raises ValueError/KeyError/TypeError/IndexError on a malformed answer (-> bad_response)."""

    name: str = "http"
    path: str = "/"

    @abc.abstractmethod
    def payload(self, prompt: str | SimPrompt, sampling: SamplingParams, seed: int | None = None) -> dict[str, Any]:
        """The JSON body for one user prompt; `seed` (where the API takes one) makes the sample reproducible."""

    @abc.abstractmethod
    def extract(self, data: Any) -> str:
        """The generated text of a response body."""


def _openai_body(body: dict[str, Any], sampling: SamplingParams, model_name: str, seed: int | None) -> dict[str, Any]:
    """The sampling fields shared by the OpenAI-compatible chat and completions APIs."""
    body.update(temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_new_tokens)
    if model_name:
        body["model"] = model_name
    if sampling.stop_strings:
        body["stop"] = list(sampling.stop_strings)
    if seed is not None:
        body["seed"] = seed & 0x7FFF_FFFF  # vLLM and OpenAI take a per-request seed (int32-safe here)
    return body


class ChatTransport(HttpTransport):
    """The OpenAI-compatible chat API (the original's transport)."""

    name, path = "chat", "/v1/chat/completions"

    def __init__(self, model_name: str = ""):
        self.model_name = model_name

    def payload(self, prompt: str | SimPrompt, sampling: SamplingParams, seed: int | None = None) -> dict[str, Any]:
        return _openai_body({"messages": chat_messages(prompt)}, sampling, self.model_name, seed)

    def extract(self, data: Any) -> str:
        return _expect_str(data["choices"][0]["message"]["content"], "choices[0].message.content")


class CompletionsTransport(HttpTransport):
    """The OpenAI-compatible completions API, with the chat template rendered here."""

    name, path = "completions", "/v1/completions"

    def __init__(self, renderer: ChatRenderer, model_name: str = ""):
        self.renderer, self.model_name = renderer, model_name

    def payload(self, prompt: str | SimPrompt, sampling: SamplingParams, seed: int | None = None) -> dict[str, Any]:
        return _openai_body({"prompt": self.renderer.render(prompt)}, sampling, self.model_name, seed)

    def extract(self, data: Any) -> str:
        return _expect_str(data["choices"][0]["text"], "choices[0].text")


class SglangTransport(HttpTransport):
    """sglang's native `/generate`, with the chat template rendered here."""

    name, path = "sglang", "/generate"

    def __init__(self, renderer: ChatRenderer):
        self.renderer = renderer

    def payload(self, prompt: str | SimPrompt, sampling: SamplingParams, seed: int | None = None) -> dict[str, Any]:
        # no seed: sglang versions differ in whether sampling_params takes one, and an unknown key is a 400
        params: dict[str, Any] = {"temperature": sampling.temperature, "top_p": sampling.top_p,
                                  "max_new_tokens": sampling.max_new_tokens}
        if sampling.stop_strings:
            params["stop"] = list(sampling.stop_strings)
        return {"text": self.renderer.render(prompt), "sampling_params": params}

    def extract(self, data: Any) -> str:
        if isinstance(data, list):  # a batched /generate answers a list; we send one prompt
            data = data[0]
        return _expect_str(data["text"], "text")


class InProcessTransport:
    """A local Hugging Face causal LM, generating for a whole batch of prompts at once (left padding).

    Args:
        model_path: the simulator's folder (model + tokenizer with a chat template).
        batch_size: prompts per `generate` call.
        seed: seeds sampling, so a run is reproducible.
        cpu_kernels: on CPU, decode with the HF engine's `sdpa_gqa` attention and, for Qwen2/LLaMA, its fused
            decoder (fp32 logits within 1e-5 of transformers'; False: transformers' forward).
    """

    name = "inprocess"

    def __init__(self, model_path: str, batch_size: int = 16, seed: int = 0, device: str = "cpu",
                 cpu_kernels: bool = True):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not model_path:
            raise ValueError("the inprocess transport needs search.simulation.model_path")
        self.tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.renderer = ChatRenderer(tokenizer=self.tokenizer)
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).to(device).eval()
        if cpu_kernels and torch.device(device).type == "cpu":
            # the HF engine's CPU decode path (docs/ARCHITECTURE.md, "CPU decode kernels", "Fused decoder"):
            # in the toy run the simulator's decoding is about a third of a training step
            from zerosearch.generation.cpu_kernels import use_sdpa_gqa
            from zerosearch.generation.fused_decode import enable_fused_decode

            use_sdpa_gqa(self.model)
            enable_fused_decode(self.model)
        self.batch_size, self.device = batch_size, device
        self._generator_seed = seed
        self._calls = 0

    def generate(self, prompts: Sequence[str | SimPrompt], sampling: SamplingParams, seeds: Sequence[int] | None = None) -> list[str]:
        """Generated text (special tokens removed) for each user prompt. `seeds[i]` seeds prompt i's sample on
        its own (the same prompt and seed give the same text whatever else is in the batch)."""
        import torch

        from zerosearch.generation.sampler import StopChecker, sample_batch

        if seeds is None:
            seeds = [stable_seed(self._generator_seed, self._calls, i) for i in range(len(prompts))]
            self._calls += 1
        stops = StopChecker(self.tokenizer, sampling.stop_strings) if sampling.stop_strings else None
        eos = [i for i in {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} if i is not None]
        max_len = getattr(self.model.config, "max_position_embeddings", None)
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            ids = [self.tokenizer.encode(self.renderer.render(p), add_special_tokens=False)
                   for p in prompts[i:i + self.batch_size]]
            caps = [max(1, min(sampling.max_new_tokens, max_len - len(x))) if max_len else sampling.max_new_tokens for x in ids]
            with torch.inference_mode():
                res = sample_batch(self.model, self.tokenizer, ids, caps, temperature=sampling.temperature,
                                   top_p=sampling.top_p, stop_token_ids=eos, stop_checker=stops,
                                   row_seeds=list(seeds[i:i + self.batch_size]), pad_id=self.tokenizer.pad_token_id)
            out.extend(self.tokenizer.decode(r.token_ids, skip_special_tokens=True) for r in res)
        return out

    def close(self) -> None:
        self.model = None  # type: ignore[assignment]


def make_http_transport(kind: str, model_name: str = "", model_path: str | None = None) -> HttpTransport:
    """chat | completions | sglang -> its transport (completions and sglang load the tokenizer)."""
    if kind == "chat":
        return ChatTransport(model_name)
    if kind == "completions":
        return CompletionsTransport(ChatRenderer(model_path), model_name)
    if kind == "sglang":
        return SglangTransport(ChatRenderer(model_path))
    raise ValueError(f"simulation transport {kind!r}: must be one of chat, completions, sglang, inprocess")
