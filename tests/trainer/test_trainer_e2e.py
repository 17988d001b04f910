"""Real end-to-end runs: Ray single controller, 2 FSDP2 workers over gloo, the tiny model, the in-process
simulated search in training and real BM25 retrieval at validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from trainer_fixtures import make_assets, run_overrides, teach_to_search

from zerosearch.config.store import compose_config, to_structured
from zerosearch.config.validate import validate_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory):
    from zerosearch.data.qa import load_qa

    a = make_assets(tmp_path_factory.mktemp("e2e"))
    # an agent that searches at every step, so every step has the engine's own noise draws to check
    teach_to_search(a["agent"], [r.question for r in load_qa(a["train"])])
    return a


@pytest.fixture(scope="module", autouse=True)
def _ray():
    import os

    os.environ.setdefault("WANDB_SILENT", "true")
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


def _train(overrides: list[str]) -> Path:
    from zerosearch.trainer.trainer import Trainer

    cfg = validate_config(to_structured(compose_config(overrides)))
    return Trainer(cfg).fit()


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def grpo_run(assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo") / "run"
    summary = _train(run_overrides(assets, out, "grpo", steps=3))
    return out, summary


def test_grpo_run_logs_reward_and_losses_every_step(grpo_run, capfd):
    out, summary = grpo_run
    rows = [r for r in _metrics(out) if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2, 3]
    for r in rows:
        for key in ("critic/score/mean", "actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "actor/entropy",
                    "env/searches/mean", "search/noise_prob", "timing_s/gen", "timing_s/update_actor",
                    "rollout/log_prob_diff_max"):
            assert key in r, key
        for key in ("actor/pg_loss", "actor/kl_loss", "actor/grad_norm", "actor/entropy", "critic/score/mean"):
            assert math.isfinite(r[key]), (key, r[key])
        assert r["actor/grad_norm"] > 0 and r["actor/skipped_steps"] == 0  # the update really happened
        assert 0.0 <= r["critic/score/mean"] <= 1.0 and r["actor/entropy"] > 0
    # the curriculum as the engine drew it (no longer written by the trainer): 0 at the first step,
    # END_THRESHOLD at the last; the share of documents drawn noisy follows (none at step 1)
    assert rows[0]["search/noise_prob"] == 0.0 and rows[-1]["search/noise_prob"] == pytest.approx(0.5)
    assert rows[0]["search/noise_share"] == 0.0 and all(r["search/requests"] > 0 for r in rows)
    # engine log-probs agree with the trainer's recomputation (weights were synced after every update)
    assert max(r["rollout/log_prob_diff_max"] for r in rows) < 1e-3


def test_grpo_run_writes_every_artefact(grpo_run):
    out, summary_path = grpo_run
    summary = json.loads(Path(summary_path).read_text())
    assert summary["steps"] == 3
    for key in ("initial_val", "final_val"):
        v = summary[key]
        assert {"cover_em", "em", "f1", "per_source"} <= set(v)
        assert v["n"] == 15 and v["per_source"]["toy"]["n"] == 15  # 15 rows, batch 4: the tail is scored too
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "wandb").glob("offline-run-*"))
    ckpts = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert ckpts == ["step_000002", "step_000003"]  # keep_last_k=2, nothing partial left
    assert (out / "checkpoints" / "step_000003" / "trainer_state.json").exists()


def test_exported_model_matches_the_trained_actor(grpo_run, assets):
    """The HF export loads with from_pretrained and generates the same greedy text as the actor's final
    weights read back from the sharded checkpoint."""
    import torch.distributed.checkpoint as dcp
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, _ = grpo_run
    exported = AutoModelForCausalLM.from_pretrained(out / "actor_hf").eval()
    tok = AutoTokenizer.from_pretrained(out / "actor_hf")
    actor = AutoModelForCausalLM.from_pretrained(assets["agent"]).eval()
    sd = {k: v.clone() for k, v in actor.state_dict().items()}
    dcp.load({"actor": {"model": sd}}, checkpoint_id=str(out / "checkpoints" / "step_000003" / "workers"))
    actor.load_state_dict(sd)
    start = AutoModelForCausalLM.from_pretrained(assets["agent"]).eval()
    ids = tok("What is the capital of", return_tensors="pt").input_ids
    kw = dict(max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        a, b, c = (m.generate(ids, **kw) for m in (exported, actor, start))
    assert torch.equal(a, b)
    assert any(not torch.equal(p, q) for p, q in zip(exported.state_dict().values(), start.state_dict().values()))


def test_ppo_run_with_critic(assets, tmp_path):
    out = tmp_path / "ppo"
    _train(run_overrides(assets, out, "ppo", steps=2) + ["trainer.val_before_train=false"])
    rows = [r for r in _metrics(out) if r["step"] > 0]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        for key in ("critic/vf_loss", "critic/values/mean", "actor/pg_loss", "actor/reward_kl_penalty",
                    "timing_s/values", "timing_s/update_critic"):
            assert key in r, key
        for key in ("critic/vf_loss", "critic/values/mean", "critic/grad_norm", "actor/pg_loss"):
            assert math.isfinite(r[key]), (key, r[key])
        assert r["critic/grad_norm"] > 0


@pytest.mark.slow  # two short runs, about a minute; CI runs it in .ci/run's slow pass
def test_continuous_batching_through_the_ray_workers_samples_what_whole_calls_sample(assets, tmp_path):
    """`rollout.async_batching=continuous` through the trainer (`dispatch.WorkerGroupStream` over the ranks'
    `RankStream`s, real Ray actors): the first step, before any update, rolls out the same trajectories as
    whole generate calls for the same seed (the same lengths, searches, stop reasons and rewards)."""
    firsts = {}
    for mode in ("call", "continuous"):
        out = tmp_path / mode
        _train(run_overrides(assets, out, "grpo", steps=1) + [
            "rollout.mode=async", f"rollout.async_batching={mode}", "trainer.save_freq=0", "trainer.test_freq=0",
            "trainer.val_before_train=false"])
        firsts[mode] = next(r for r in _metrics(out) if r["step"] == 1)
    same = [k for k in firsts["call"] if k.startswith(("response_length/", "env/", "critic/score", "prompt_length/"))]
    assert len(same) >= 6
    assert {k: firsts["continuous"][k] for k in same} == {k: firsts["call"][k] for k in same}
    # the continuous run did take engine steps, many more than whole calls
    assert firsts["continuous"]["rollout/generate_calls"] > firsts["call"]["rollout/generate_calls"]
