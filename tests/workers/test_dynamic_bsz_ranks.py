"""Token-packed micro-batches over FSDP2 ranks (real gloo, 2 processes): ranks whose rows differ in length
pack different numbers of micro-batches, yet every FSDP2 forward all-gathers parameters, so the counts must
agree or the ranks wait on each other forever. Before the fix this test hung in compute_log_prob."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
from zerosearch.rollout.collate import collate_trajectories
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.workers.batching import map_rows, micro_batches, response_logits, token_groups, token_log_probs


def _batch(lengths: list[int], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for i, n in enumerate(lengths):
        p = torch.randint(5, 300, (6,), generator=g).tolist()
        t = Trajectory(prompt_ids=p, item=PromptItem(p, f"r{i}"))
        t.extend(torch.randint(5, 300, (n,), generator=g).tolist(), 1)
        trajs.append(t)
    return collate_trajectories(trajs, pad_id=0)


# rank 0: four long rows (4 micro-batches of <= 60 tokens); rank 1: four short rows (1 micro-batch)
RANK_LENGTHS = {0: [40, 38, 36, 34], 1: [3, 4, 5, 6]}
MAX_TOKENS = 60


def test_min_groups_splits_the_largest_groups():
    batch = _batch([3, 4, 5, 6, 7, 8], seed=0)
    assert len(token_groups(batch, 1000)) == 1
    groups = token_groups(batch, 1000, min_groups=4)
    assert len(groups) == 4 and sorted(torch.cat(groups).tolist()) == list(range(6))
    with pytest.raises(ValueError, match="cannot cut 6 rows into 7 micro-batches"):
        token_groups(batch, 1000, min_groups=7)


def _rank(rank: int, port: int, model_dir: str, out: dict) -> None:
    from zerosearch.workers import fsdp

    fsdp.init_distributed(rank, 2, "127.0.0.1", port, "cpu")
    torch.manual_seed(0)
    model = fsdp.shard_model(fsdp.load_causal_lm(model_dir, torch.float32), torch.float32)
    batch = _batch(RANK_LENGTHS[rank], seed=rank)
    dev = torch.device("cpu")
    with torch.no_grad():
        (lp,) = map_rows(lambda mb: (token_log_probs(response_logits(model, mb, dev), mb["responses"]),), batch,
                         0, True, MAX_TOKENS, dev)
    n_micro = 0
    for micro in micro_batches(batch, 0, True, MAX_TOKENS, dev):  # forward + backward per micro-batch
        logits = response_logits(model, micro, dev)
        token_log_probs(logits, micro["responses"]).sum().backward()
        n_micro += 1
    out[rank] = (lp, n_micro, len(token_groups(batch, MAX_TOKENS)))
    torch.distributed.destroy_process_group()


def test_ranks_with_uneven_packing_run_the_same_number_of_passes(tmp_path):
    tok = build_tokenizer(tmp_path / "m", ["some text for merges"] * 5)
    spec = TinySpec(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    ref_model = build_model(tmp_path / "m", tok, spec).eval()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        out = manager.dict()
        procs = [ctx.Process(target=_rank, args=(r, port, str(tmp_path / "m"), out)) for r in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(180)
        hung = [p.pid for p in procs if p.is_alive()]
        for p in procs:
            if p.is_alive():
                p.kill()
        assert not hung, "ranks deadlocked: unequal numbers of FSDP2 forward passes"
        assert all(p.exitcode == 0 for p in procs)
        res = dict(out)
    assert res[0][2] == 4 and res[1][2] == 1  # packed alone, the ranks would differ
    assert res[0][1] == res[1][1] == 4  # both ran four passes
    for rank in (0, 1):  # and the log-probs are the unsharded model's
        batch = _batch(RANK_LENGTHS[rank], seed=rank)
        with torch.no_grad():
            want = token_log_probs(response_logits(ref_model, batch, torch.device("cpu")), batch["responses"])
        m = batch["response_mask"]
        assert torch.allclose(res[rank][0] * m, want * m, atol=1e-5)
