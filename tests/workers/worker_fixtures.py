"""Shared set-up for in-process worker tests: a real one-rank gloo group (FSDP2 runs on it unchanged), a tiny
model on disk, a worker config, and a rollout-shaped batch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from zerosearch.rollout.collate import collate_trajectories
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer

# head size 32: also what vLLM's CPU attention accepts
SPEC = TinySpec(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, intermediate_size=128)


@pytest.fixture(scope="module")
def one_rank_group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A one-rank gloo process group for the module's tests (a file store: no port to race for)."""
    import torch.distributed as dist

    if dist.is_initialized():
        pytest.fail("a process group is already initialised in this test process")
    store = tmp_path_factory.mktemp("pg") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def tiny_model_dir(root: Path, spec: TinySpec = SPEC) -> Path:
    tok = build_tokenizer(root, ["some text for merges, questions and answers"] * 5, vocab_size=400)
    build_model(root, tok, spec)
    return root


def worker_config(model_dir: Path, *overrides: str):
    """A validated config for CPU workers on `model_dir` (no data needed: paths are not checked; the
    retrieval URL is never contacted)."""
    from zerosearch.run import load_config

    return load_config([f"model.path={model_dir}", "trainer.device=cpu", "rollout.engine=hf", "rollout.n=2",
                        "data.train_batch_size=4", "actor.ppo_mini_batch_size=4",
                        "search.retrieval.url=http://127.0.0.1:9/retrieve", *overrides], check_paths=False)


def rollout_batch(n_rows: int, seed: int = 0, lengths: tuple[int, int] = (3, 12)) -> dict[str, torch.Tensor]:
    """Collated trajectories of random ids (prompt 6 tokens, responses of `lengths` tokens) plus advantages,
    values and returns: what an update reads besides the log-probs."""
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for i in range(n_rows):
        p = torch.randint(5, 300, (6,), generator=g).tolist()
        t = Trajectory(prompt_ids=p, item=PromptItem(p, f"r{i}"))
        n = int(torch.randint(lengths[0], lengths[1] + 1, (1,), generator=g))
        t.extend(torch.randint(5, 300, (n,), generator=g).tolist(), 1)
        trajs.append(t)
    batch = collate_trajectories(trajs, pad_id=0)
    mask = batch["response_mask"].float()
    sign = torch.where(torch.arange(n_rows) % 2 == 0, 1.0, -1.0)[:, None]
    batch["advantages"] = sign * mask
    batch["values"] = torch.zeros_like(mask)
    batch["returns"] = sign * mask
    return batch
