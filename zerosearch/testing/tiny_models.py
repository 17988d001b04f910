"""Tiny local models for tests, demos and the toy world (no hub needed).

`build_tokenizer` trains a byte-level BPE with exactly the normalizer, split regex and decoder that
transformers 5 rebuilds for any `qwen2` model (`Qwen2Tokenizer`), so ids are identical after
`AutoTokenizer.from_pretrained`. The agent tags are added tokens (one id each, visible when decoding) and
the tokenizer carries a ChatML chat template. `build_model` saves a Qwen2 causal LM with random weights.
`make_tiny_model` does both into one folder, reusing it when it already holds the same specification.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

AGENT_TAGS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
              "<answer>", "</answer>")
CHAT_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# ChatML, as Qwen2 models use: <|im_start|>role\ncontent<|im_end|>\n ...
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# A few hundred words of ordinary English and agent-format text, so a default tokenizer has sensible merges
# for prompts, tags and answers even when the caller gives no corpus.
_DEFAULT_TEXT = """
Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get
new information. After reasoning, if you find you lack some knowledge, you can call a search engine by
<search> query </search> and it will return the top searched results between <information> and
</information>. You can search as many times as you want. If you find no further external knowledge needed,
you can directly provide the answer inside <answer> and </answer>, without detailed illustrations.
For example, <answer> Beijing </answer>. Question: who wrote the novel about the whale?
Doc 1(Title: Moby-Dick) Moby-Dick is an 1851 novel by American writer Herman Melville.
Doc 2(Title: Paris) Paris is the capital and most populous city of France, on the river Seine.
The year 1969, the river Nile, the language English, the founder of the company, the capital city.
What is the capital of the country? Which river flows through the city? When was it founded?
"""


@dataclass(frozen=True)
class TinySpec:
    """Architecture of a tiny Qwen2 model. Sizes: tiny ~0.5 M, small ~3 M, medium ~30 M parameters."""

    vocab_size: int = 600
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 8
    num_kv_heads: int = 4
    intermediate_size: int = 384
    max_position_embeddings: int = 2048
    tie_word_embeddings: bool = True
    seed: int = 0

    @classmethod
    def preset(cls, name: str, **overrides: object) -> "TinySpec":
        presets = {
            "tiny": dict(),
            "small": dict(vocab_size=1000, hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4,
                          intermediate_size=768),
            "medium": dict(vocab_size=4000, hidden_size=512, num_layers=8, num_heads=8, num_kv_heads=4,
                           intermediate_size=1536),
        }
        if name not in presets:
            raise ValueError(f"unknown tiny model preset {name!r}; known: {', '.join(presets)}")
        return cls(**{**presets[name], **overrides})  # type: ignore[arg-type]


def _qwen2_pretokenizer():
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    pre = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    return normalizers.NFC(), pre, decoders.ByteLevel()


def build_tokenizer(out_dir: str | os.PathLike, texts: Iterable[str] | None = None, vocab_size: int = 600,
                    extra_tokens: Iterable[str] = ()):
    """Train a byte-level BPE on `texts` and save it as a Qwen2 tokenizer in `out_dir`.

    Returns the loaded `Qwen2Tokenizer` (left padding, ChatML chat template, eos `<|im_end|>`,
    pad `<|endoftext|>`), whose ids equal those of `AutoTokenizer.from_pretrained(out_dir)`.
    """
    from tokenizers import Tokenizer, models, trainers
    from tokenizers import AddedToken
    from transformers.models.qwen2.tokenization_qwen2 import Qwen2Tokenizer
    from tokenizers.pre_tokenizers import ByteLevel

    normalizer, pre, decoder = _qwen2_pretokenizer()
    bpe = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                               fuse_unk=False, byte_fallback=False))
    bpe.normalizer, bpe.pre_tokenizer, bpe.decoder = normalizer, pre, decoder
    n_reserved = len(CHAT_SPECIAL_TOKENS) + len(AGENT_TAGS) + len(tuple(extra_tokens))
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - n_reserved, 256 + 1), min_frequency=2, show_progress=False,
        initial_alphabet=ByteLevel.alphabet(), special_tokens=list(CHAT_SPECIAL_TOKENS))
    corpus = list(texts) if texts is not None else []
    bpe.train_from_iterator([_DEFAULT_TEXT, *corpus], trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in state["merges"]]
    tok = Qwen2Tokenizer(vocab=state["vocab"], merges=merges, unk_token="<|endoftext|>", eos_token="<|im_end|>",
                         pad_token="<|endoftext|>", padding_side="left", chat_template=CHATML_TEMPLATE)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in CHAT_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False, single_word=False)
                    for t in (*AGENT_TAGS, *extra_tokens)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return tok


def build_model(out_dir: str | os.PathLike, tokenizer, spec: TinySpec = TinySpec()):
    """Save a randomly initialised Qwen2ForCausalLM sized by `spec` (vocab from the tokenizer) in `out_dir`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads, max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_word_embeddings, rms_norm_eps=1e-6, rope_theta=10000.0,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir, safe_serialization=True)
    return model


def _spec_key(spec: TinySpec, texts: list[str] | None) -> str:
    h = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    for t in texts or ():
        h.update(t.encode())
    return h.hexdigest()[:16]


def make_tiny_model(out_dir: str | os.PathLike, spec: TinySpec | str = "tiny", texts: Iterable[str] | None = None,
                    ) -> Path:
    """Build (or reuse) a tokenizer + random Qwen2 model in `out_dir`; returns the folder.

    The folder is reused when a previous call wrote the same spec and texts (a stamp file records them),
    so tests and demos pay the ~1 s build once.
    """
    spec = TinySpec.preset(spec) if isinstance(spec, str) else spec
    texts_list = list(texts) if texts is not None else None
    out = Path(out_dir)
    stamp = out / "zerosearch_tiny.json"
    key = _spec_key(spec, texts_list)
    if stamp.exists() and json.loads(stamp.read_text()).get("key") == key and (out / "config.json").exists():
        return out
    tok = build_tokenizer(out, texts_list, vocab_size=spec.vocab_size)
    build_model(out, tok, spec)
    stamp.write_text(json.dumps({"key": key, "spec": asdict(spec)}))
    return out
