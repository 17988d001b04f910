"""Checkpoint integrity: every checkpoint carries a manifest (size and sha256 of each file) written last,
inside the atomic rename; a truncated or corrupt file is named; `resume=auto` falls back to the newest
checkpoint that verifies, and a folder whose checkpoints all fail is refused, never trained over from 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from zerosearch.trainer.checkpoint import MANIFEST, STATE, CheckpointError, CheckpointManager, verify


def _writer(payload: bytes):
    def save_workers(path: str) -> None:
        os.makedirs(path)
        with open(os.path.join(path, "__0_0.distcp"), "wb") as f:
            f.write(payload)
        with open(os.path.join(path, ".metadata"), "wb") as f:
            f.write(b"meta" * 10)
    return save_workers


def _three(tmp_path) -> CheckpointManager:
    mgr = CheckpointManager(tmp_path, keep_last_k=3)
    for step in (1, 2, 3):
        mgr.save(step, _writer(bytes([step]) * 1000), {"step": step, "loader": {}})
    return mgr


def test_the_manifest_lists_every_file_with_size_and_hash_and_verifies(tmp_path):
    mgr = _three(tmp_path)
    files = json.loads((mgr.path(3) / MANIFEST).read_text())["files"]
    assert sorted(files) == [STATE, "workers/.metadata", "workers/__0_0.distcp"]
    assert files["workers/__0_0.distcp"][0] == 1000 and len(files["workers/__0_0.distcp"][1]) == 64
    assert verify(mgr.path(3))["step"] == 3
    logs: list[str] = []
    path, state = mgr.resumable(logs.append)
    assert path == mgr.path(3) and state["step"] == 3 and logs == []


@pytest.mark.parametrize("damage, named, why", [
    (lambda p: os.truncate(p / "workers" / "__0_0.distcp", 10), "workers/__0_0.distcp", "truncated or corrupt: 10 bytes"),
    (lambda p: (p / "workers" / "__0_0.distcp").write_bytes(b"\xff" * 1000), "workers/__0_0.distcp", "sha256 differs"),
    (lambda p: os.truncate(p / STATE, 5), STATE, "truncated or corrupt"),
    (lambda p: (p / STATE).unlink(), STATE, "is missing"),
    (lambda p: (p / MANIFEST).unlink(), MANIFEST, "is missing"),
    (lambda p: (p / "workers" / ".metadata").unlink(), "workers/.metadata", "is missing"),
])
def test_a_damaged_checkpoint_names_the_file_and_auto_resume_falls_back(tmp_path, damage, named, why):
    mgr = _three(tmp_path)
    damage(mgr.path(3))
    with pytest.raises(CheckpointError) as e:
        verify(mgr.path(3))
    assert str(mgr.path(3) / named) in str(e.value) and why in str(e.value)
    logs: list[str] = []
    path, state = mgr.resumable(logs.append)
    assert path == mgr.path(2) and state["step"] == 2
    assert logs[0].startswith(f"[checkpoint] WARNING: skipping {mgr.path(3)}: ") and named in logs[0]
    assert logs[1] == f"[checkpoint] falling back to {mgr.path(2)}, the newest checkpoint that verifies"


def test_a_truncated_state_file_without_a_manifest_check_is_still_named(tmp_path):
    mgr = _three(tmp_path)
    (mgr.path(3) / STATE).write_text('{"step": 3, "loa')
    with pytest.raises(CheckpointError, match=f"{mgr.path(3) / STATE} is truncated or corrupt"):
        CheckpointManager.read_state(mgr.path(3))


def test_a_folder_whose_checkpoints_all_lost_their_state_is_refused(tmp_path):
    mgr = _three(tmp_path)
    for _, p in mgr.folders():
        (p / STATE).unlink()
    with pytest.raises(CheckpointError) as e:
        mgr.resumable(lambda _: None)
    msg = str(e.value)
    assert "holds 3 checkpoint(s) and none can be loaded" in msg and "Refusing to start over from step 0" in msg
    assert "trainer.resume=disable" in msg and all(str(mgr.path(s) / STATE) in msg for s in (1, 2, 3))
    assert CheckpointManager(tmp_path / "fresh").resumable() is None  # no checkpoint at all: a new run


def test_the_manifest_is_written_last_inside_the_tmp_folder(tmp_path, monkeypatch):
    """Killed before the rename, the folder is still `.tmp` (never read); after it, the manifest is there."""
    mgr = CheckpointManager(tmp_path)
    seen = {}

    def fp(name: str, step: int) -> None:
        if name == "checkpoint_before_rename":
            tmp = mgr.path(step).with_name(mgr.path(step).name + ".tmp")
            seen["manifest_before_rename"] = (tmp / MANIFEST).exists()
            seen["newest_file"] = max(tmp.rglob("*"), key=lambda f: f.stat().st_mtime_ns).name

    monkeypatch.setattr("zerosearch.trainer.checkpoint.failpoint", fp)
    mgr.save(1, _writer(b"x" * 10), {"step": 1})
    assert seen == {"manifest_before_rename": True, "newest_file": MANIFEST}


def test_the_cli_refuses_a_folder_of_broken_checkpoints_before_anything_starts(tmp_path):
    """Through `python -m zerosearch.train`: one error line naming the files, exit 1, no traceback, and in
    seconds (before the model, data or Ray are touched)."""
    from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer

    tok = build_tokenizer(tmp_path / "tok", ["who wrote what where"] * 20, vocab_size=300)
    build_model(tmp_path / "agent", tok, TinySpec(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                                                  num_kv_heads=1, intermediate_size=64))
    tok.save_pretrained(tmp_path / "agent")
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"id": "q1", "question": "who?", "golden_answers": ["me"]}) + "\n")
    out = tmp_path / "run"
    mgr = CheckpointManager(out, keep_last_k=3)
    for step in (1, 2):
        mgr.save(step, _writer(b"x" * 100), {"step": step})
        (mgr.path(step) / STATE).unlink()
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "zerosearch.train", f"model.path={tmp_path / 'agent'}",
                          f"data.train_files=[{train}]", "search.eval_engine=retrieval",
                          "search.retrieval.url=http://127.0.0.1:9/retrieve", "search.simulation.transport=inprocess",
                          f"search.simulation.model_path={tmp_path / 'agent'}", "trainer.device=cpu",
                          f"trainer.output_dir={out}"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "WANDB_MODE": "disabled"})
    assert res.returncode == 1, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith(f"error: {out / 'checkpoints'} holds 2 checkpoint(s) and none can be loaded")
    assert str(mgr.path(2) / STATE) in res.stderr and "Refusing to start over from step 0" in res.stderr
    assert time.perf_counter() - t0 < 60
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001", "step_000002"]  # untouched
