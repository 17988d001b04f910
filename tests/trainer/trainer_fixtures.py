"""A small world, a tiny agent and a tiny simulator on disk, and config overrides for short real runs."""

from __future__ import annotations

from pathlib import Path

from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
from zerosearch.toy.world import build_world


# operational metrics that legitimately differ between two runs of the same training (wall times and shares
# of them, cache state after a restart); everything else must be equal to the last digit on CPU
VOLATILE = ("timing_s/", "search/latency", "search/cache_hits", "search/generations", "search/deadline",
            "search/server_skips", "search/retries", "val/search/latency", "val/search/cache_hits",
            "val/search/generations", "rollout/engine_idle_share", "rollout/generate_calls")


def metrics_by_step(run: Path) -> dict[int, dict[str, float]]:
    """The last metrics.jsonl line of each step (a resumed run repeats the steps after its checkpoint),
    without the VOLATILE keys: what two runs of the same training must agree on."""
    import json

    out: dict[int, dict[str, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        out[row["step"]] = {k: v for k, v in row.items() if not k.startswith(VOLATILE)}
    return out


def make_assets(root: Path) -> dict[str, Path]:
    """World files, an agent model and a simulator model (random weights, the world's tokenizer)."""
    world = build_world(n_sft=20, n_rl=40, n_test=5, questions_per_test_country=3, seed=3)
    paths = world.save(root / "world")
    texts = [r["contents"] for r in world.corpus()] + [q.question for qs in world.questions.values() for q in qs]
    tok = build_tokenizer(root / "tok", texts * 3, vocab_size=500)
    spec = TinySpec(vocab_size=500, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2, intermediate_size=128)
    for name, seed in (("agent", 1), ("simulator", 2)):
        build_model(root / name, tok, TinySpec(**{**spec.__dict__, "seed": seed}))
        tok.save_pretrained(root / name)
    return {"corpus": paths["corpus"], "train": paths["rl"], "val": paths["test"], "agent": root / "agent",
            "simulator": root / "simulator"}


def run_overrides(a: dict[str, Path], out: Path, algorithm: str = "grpo", steps: int = 3) -> list[str]:
    """A short real run: 2 CPU workers, 4 questions x 4 samples a step, in-process simulated search in
    training, BM25 retrieval at validation."""
    return [
        f"algorithm={algorithm}", "search=simulate_sft",
        f"model.path={a['agent']}", f"data.train_files=[{a['train']}]", f"data.val_files=[{a['val']}]",
        "data.train_batch_size=4", "data.val_batch_size=4", "data.max_prompt_length=400",
        "rollout.n=4", "rollout.max_turns=2", "rollout.max_response_length=12", "rollout.max_obs_length=48",
        "rollout.max_total_length=600",
        "search.topk=1", "search.cache_train=true", "search.simulation.transport=inprocess",
        f"search.simulation.model_path={a['simulator']}", "search.simulation.max_tokens=24",
        "search.eval_engine=retrieval", f"search.retrieval.corpus_path={a['corpus']}",
        "actor.ppo_mini_batch_size=2", "actor.micro_batch_size_per_worker=4", "actor.lr=1e-3",
        "critic.micro_batch_size_per_worker=4", "ref.micro_batch_size_per_worker=8",
        "trainer.device=cpu", "trainer.cpu_workers=2", f"trainer.total_steps={steps}", "trainer.seed=7",
        f"trainer.output_dir={out}", "trainer.save_freq=1", "trainer.test_freq=2", "trainer.keep_last_k=2",
        "curriculum.start_threshold=0.0", "curriculum.end_threshold=0.5",
        "logging.backends=[console,jsonl,tensorboard,wandb]", "logging.wandb_mode=offline",
        "logging.progress_bar=false",
    ]


def teach_to_search(model_dir: Path, questions: list[str], template: str = "zerosearch", steps: int = 80) -> None:
    """Fit the tiny agent in `model_dir` (in place) to answer every prompt with `<search> question </search>`,
    so a short run from it really sends queries (a random tiny model never closes a search tag)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch.data.prompts import encode_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = []
    for q in questions:
        prompt = encode_prompt(tok, q, template)
        target = tok(f"<search> {q} </search>", add_special_tokens=False).input_ids
        rows.append((prompt + target, [-100] * len(prompt) + target))
    width = max(len(ids) for ids, _ in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    mask = (torch.arange(width)[None] < torch.tensor([len(r) for r, _ in rows])[:, None]).long()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(model_dir)
