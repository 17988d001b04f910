"""scripts/train_simulator.py as users run it: any corpus + QA set + base model -> a simulator folder and a
report of how often its useful and noisy outputs contain the answer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer
from zerosearch.toy.world import build_world

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "train_simulator.py"), *args], capture_output=True,
                          text=True, timeout=600)


def test_fine_tunes_saves_and_reports(tmp_path):
    world = build_world(n_sft=30, n_rl=30, n_test=5, questions_per_test_country=2, seed=4)
    paths = world.save(tmp_path / "world")
    texts = [r["contents"] for r in world.corpus()] + [q.question for qs in world.questions.values() for q in qs]
    tok = build_tokenizer(tmp_path / "base", texts * 2, vocab_size=400)
    build_model(tmp_path / "base", tok, TinySpec(vocab_size=400, hidden_size=64, num_layers=2, num_heads=4,
                                                 num_kv_heads=2, intermediate_size=128))
    r = _run("--base-model", str(tmp_path / "base"), "--corpus", str(paths["corpus"]), "--qa", str(paths["rl"]),
             "--out", str(tmp_path / "sim"), "--topk", "1", "--words", "12", "--steps", "20", "--batch-size", "8",
             "--lr", "3e-3", "--eval-rows", "12", "--max-rows", "60")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "sim" / "simulator_report.json").read_text())
    assert report["steps"] == 20 and report["useful"] > 0 and report["noisy"] > 0
    assert report["examples"] == report["useful"] + report["noisy"]
    q = report["heldout"]  # held-out rows whose BM25 results hold an answer (so a useful example exists)
    assert 0 < q["n"] <= 12 and 0.0 <= q["useful_has_answer"] <= 1.0 and 0.0 <= q["noisy_has_answer"] <= 1.0
    assert "[simulator] held-out: useful outputs contain the answer" in r.stdout
    # the folder is a HF model that loads and differs from the base it started from
    sim = AutoModelForCausalLM.from_pretrained(tmp_path / "sim")
    base = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    assert any((a != b).any() for a, b in zip(sim.state_dict().values(), base.state_dict().values()))
    assert (tmp_path / "sim" / "tokenizer.json").exists() or (tmp_path / "sim" / "tokenizer_config.json").exists()


def test_missing_inputs_are_named(tmp_path):
    r = _run("--base-model", str(tmp_path / "nope"), "--corpus", "c.jsonl", "--qa", "q.jsonl", "--out", str(tmp_path))
    assert r.returncode == 2 and f"error: {tmp_path / 'nope'} does not exist" in r.stderr
