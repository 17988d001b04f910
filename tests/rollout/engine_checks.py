"""Checks shared by the engine tests (HFEngine and VLLMEngine)."""

from __future__ import annotations

import torch

TEXTS = ["Answer the given question.", "Doc 1(Title: Paris) Paris is the capital and most populous city",
         "<think> who wrote the novel about the whale? </think>", "The year 1969, the river",
         "What is the capital of the country? Which river flows through the city? When was it founded?", "Q"]


def left_padded_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask [B, L] of TEXTS, whose lengths differ (so the mask is not all ones)."""
    prompts = [tokenizer.encode(t) for t in TEXTS]
    L = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), L), tokenizer.pad_token_id or 0)
    mask = torch.zeros((len(prompts), L), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, L - len(p):] = torch.tensor(p)
        mask[i, L - len(p):] = 1
    assert not bool(mask.all())
    return ids, mask


def recompute_log_probs(model: torch.nn.Module, prompt: list[int], response: list[int], temperature: float
                        ) -> torch.Tensor:
    """log softmax(logits / T) of each response token, from one forward over prompt + response."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1:-1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(response)[:, None]).squeeze(-1)


def stop_cases(tokenizer, prompts, outs, k: int = 6):
    """For each greedy output, a stop string that its first k tokens complete (its last 3 characters)."""
    cases = []
    for p, o in zip(prompts, outs):
        text = tokenizer.decode(o.token_ids[:k])
        if len(text.strip()) >= 3:
            cases.append((p, o, text[-3:]))
    assert len(cases) >= 3, "the tiny model's greedy outputs give too few stop strings"
    return cases


def check_stop_string_output(tokenizer, out, full_ids: list[int], stop: str) -> None:
    """`out` stopped at the first token that completes `stop`, kept it, and is a prefix of the full output."""
    assert out.finish_reason == "stop" and out.stop == stop
    n = len(out.token_ids)
    assert out.token_ids == full_ids[:n]
    assert stop in tokenizer.decode(out.token_ids)  # kept
    assert stop not in tokenizer.decode(out.token_ids[:-1])  # and completed by the last token, not earlier
