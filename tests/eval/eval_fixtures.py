"""A tiny agent for the evaluation tests: a random Qwen2 fitted, in a few single-threaded steps, to open every
answer with the same search, so a run really sends queries (a random tiny model never closes a tag)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

SEARCH_TURN = "<search> capital city </search>"


def teach_constant_search(model_dir: Path, questions: Sequence[str], template: str = "compact", steps: int = 20) -> None:
    """Fit the model in `model_dir` (in place) to answer every prompt with SEARCH_TURN. One thread: on a
    shared 2-core machine torch's thread pool spins and costs ten times more."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch.data.prompts import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    target = tok(SEARCH_TURN, add_special_tokens=False).input_ids
    rows = [(p + target, [-100] * len(p) + target) for p in (encode_prompt(tok, q, template) for q in questions)]
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r, _ in rows])[:, None]).long()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(model_dir)
