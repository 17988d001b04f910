"""Micro-batching and the SFT step on a real tiny model: micro-batched results equal whole-batch ones."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from zerosearch.algos import agg_loss
from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
from zerosearch.rollout.collate import collate_trajectories
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.workers.batching import loss_scale, map_rows, micro_batches, response_logits, token_log_probs, trim
from zerosearch.simulator.sft import SFTExample, collate_sft, sft_loss


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    tok = build_tokenizer(d, ["some text for merges"] * 5)
    m = build_model(d, tok, TinySpec(hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128))
    return m.eval()


def _batch(n: int = 9, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    trajs = []
    for i in range(n):
        p = torch.randint(5, 300, (int(torch.randint(3, 20, (1,), generator=g)),), generator=g).tolist()
        t = Trajectory(prompt_ids=p, item=PromptItem(p, f"r{i}"))
        t.extend(torch.randint(5, 300, (int(torch.randint(1, 15, (1,), generator=g)),), generator=g).tolist(), 1)
        if i % 2:  # an observation hole, then more policy tokens
            t.extend(torch.randint(5, 300, (7,), generator=g).tolist(), 0)
            t.extend(torch.randint(5, 300, (3,), generator=g).tolist(), 1)
        trajs.append(t)
    return collate_trajectories(trajs, pad_id=0)


def _log_probs(model, mb):
    return (token_log_probs(response_logits(model, mb, torch.device("cpu")), mb["responses"]),)


@torch.no_grad()
def test_dynamic_and_fixed_micro_batches_give_the_same_log_probs(model):
    batch = _batch()
    (whole,) = map_rows(lambda mb: _log_probs(model, mb), batch, 100, False, 0)
    (fixed,) = map_rows(lambda mb: _log_probs(model, mb), batch, 2, False, 0)
    (dyn,) = map_rows(lambda mb: _log_probs(model, mb), batch, 0, True, 40)
    m = batch["response_mask"]
    assert torch.allclose(whole * m, fixed * m, atol=1e-5) and torch.allclose(whole * m, dyn * m, atol=1e-5)


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "token-sum"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_weighted_micro_batches_reproduce_the_whole_batch_gradient(model, mode, dynamic):
    batch = _batch(seed=1)
    adv = torch.randn(batch["responses"].shape, generator=torch.Generator().manual_seed(2))

    def loss_of(mb, a):
        (lp,) = _log_probs(model, mb)
        return agg_loss(-a * lp, mb["response_mask"], mode)

    model.zero_grad()
    full, r = trim(dict(batch, adv=adv))
    loss_of(full, full["adv"]).backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    m = batch["response_mask"]
    g_tokens, g_seqs = float(m.sum()), float((m.sum(-1) > 0).sum())
    for micro in micro_batches(dict(batch, adv=adv), 3, dynamic, 40):
        micro, _ = trim(micro)
        (loss_of(micro, micro["adv"]) * loss_scale(mode, micro["response_mask"], g_tokens, g_seqs, 1)).backward()
    for p, g in zip(model.parameters(), ref):
        assert torch.allclose(p.grad, g, atol=1e-5, rtol=1e-4)


def test_sft_loss_is_masked_cross_entropy_over_full_logits(model):
    ex = [SFTExample([5, 6, 7, 8, 9, 10], [0, 0, 1, 1, 0, 1]), SFTExample([11, 12, 13], [0, 1, 1])]
    batch = collate_sft(ex, pad_id=0)
    loss, n = sft_loss(model, batch, torch.device("cpu"))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                   position_ids=batch["position_ids"]).logits[:, :-1]
    mask = batch["loss_mask"][:, 1:] > 0
    ref = F.cross_entropy(logits[mask], batch["input_ids"][:, 1:][mask])
    assert n == 5 and torch.allclose(loss, ref, atol=1e-6)
