"""The training-operations parts on their own: the prompt stream, the checkpoint folder, the tracker."""

from __future__ import annotations

import json
import os

import pytest

from zerosearch.trainer.checkpoint import CheckpointManager
from zerosearch.trainer.data_loader import PromptLoader
from zerosearch.trainer.tracking import Tracker, console_line

# ---------------------------------------------------------------------------- PromptLoader


def test_loader_covers_every_row_each_epoch_and_spills_into_the_next():
    loader = PromptLoader(list(range(10)), batch_size=4, seed=3)
    batches = [loader.next_batch() for _ in range(5)]  # 20 rows: exactly two epochs
    assert all(len(b) == 4 for b in batches)
    flat = [x for b in batches for x in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert flat[:10] != flat[10:]  # a new permutation per epoch
    assert flat[:10] != list(range(10))  # shuffled


def test_loader_order_depends_only_on_the_seed():
    a, b, c = (PromptLoader(list(range(50)), 8, seed=s) for s in (1, 1, 2))
    assert [a.next_batch() for _ in range(9)] == [b.next_batch() for _ in range(9)]
    assert a.next_batch() != c.next_batch()


def test_loader_resumes_from_its_state_exactly():
    a = PromptLoader(list(range(13)), 5, seed=7)
    for _ in range(4):
        a.next_batch()
    state = json.loads(json.dumps(a.state_dict()))  # it travels as JSON in trainer_state.json
    b = PromptLoader(list(range(13)), 5, seed=7)
    b.load_state_dict(state)
    assert [a.next_batch() for _ in range(6)] == [b.next_batch() for _ in range(6)]


def test_loader_refuses_changed_data_and_bad_sizes():
    a = PromptLoader(list(range(13)), 5, seed=7)
    with pytest.raises(ValueError, match="over 13 rows with 12 rows: the training data changed"):
        PromptLoader(list(range(12)), 5, seed=7).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="no training rows"):
        PromptLoader([], 5, seed=7)
    with pytest.raises(ValueError, match="batch_size must be > 0, got 0"):
        PromptLoader([1], 0, seed=7)


def test_loader_without_shuffle_keeps_file_order():
    assert PromptLoader(list(range(5)), 3, seed=1, shuffle=False).next_batch() == [0, 1, 2]

# ---------------------------------------------------------------------------- CheckpointManager


def _writer(payload: str):
    def save_workers(path: str) -> None:
        os.makedirs(path)
        with open(os.path.join(path, "shard.bin"), "w") as f:
            f.write(payload)
    return save_workers


def test_checkpoints_are_written_whole_and_the_last_k_kept(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last_k=2)
    assert mgr.latest() is None and mgr.complete() == []
    for step in (1, 2, 3):
        p = mgr.save(step, _writer(f"s{step}"), {"step": step})
        assert p.name == f"step_{step:06d}" and not p.with_name(p.name + ".tmp").exists()
    assert [s for s, _ in mgr.complete()] == [2, 3]
    assert mgr.latest() == mgr.path(3) and CheckpointManager.read_state(mgr.latest()) == {"step": 3}
    assert (mgr.latest() / "workers" / "shard.bin").read_text() == "s3"
    # re-saving a step replaces it
    mgr.save(3, _writer("again"), {"step": 3, "again": True})
    assert CheckpointManager.read_state(mgr.path(3))["again"] is True


def test_a_checkpoint_that_died_mid_write_is_ignored_then_removed(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last_k=3)
    mgr.save(1, _writer("ok"), {"step": 1})

    def dies(path: str) -> None:
        os.makedirs(path)
        raise KeyboardInterrupt("killed while writing shards")

    with pytest.raises(KeyboardInterrupt):
        mgr.save(2, dies, {"step": 2})
    (mgr.root / "step_000004").mkdir()  # a folder without trainer_state.json is not a checkpoint either
    assert mgr.latest() == mgr.path(1)
    assert [p.name for p in mgr.clean_partial()] == ["step_000002.tmp"]
    assert sorted(p.name for p in mgr.root.iterdir()) == ["step_000001", "step_000004"]


def test_keep_last_k_zero_keeps_everything(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last_k=0)
    for step in range(1, 5):
        mgr.save(step, _writer("x"), {"step": step})
    assert [s for s, _ in mgr.complete()] == [1, 2, 3, 4]

# ---------------------------------------------------------------------------- Tracker


def test_console_line_shows_what_is_there_in_a_fixed_order():
    line = console_line(3, 10, {"actor/pg_loss": -0.01234, "critic/score/mean": 0.5, "search/noise_prob": 0.25,
                                "actor/entropy": float("nan"), "other": 1.0})
    assert line == "step 3/10 | reward 0.500 | noise 0.25 | pg -0.0123"


def test_tracker_writes_jsonl_tensorboard_and_an_offline_wandb_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    tr = Tracker(["console", "jsonl", "tensorboard", "wandb"], tmp_path, "proj", "exp", config={"a": 1},
                 total_steps=4, wandb_mode="offline", progress_bar=True)
    for step in (1, 2):
        tr.log({"critic/score/mean": 0.1 * step, "flag": True, "text": "skip", "timing_s/step": 1.5}, step)
    tr.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"step": 1, "critic/score/mean": 0.1, "timing_s/step": 1.5},
                    {"step": 2, "critic/score/mean": 0.2, "timing_s/step": 1.5}]
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("step 1/4 | reward 0.100 | s 1.5 | eta ")  # no terminal here: ETA in the line
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ev = EventAccumulator(str(tmp_path / "tensorboard"))
    ev.Reload()
    assert [(s.step, round(s.value, 6)) for s in ev.Scalars("critic/score/mean")] == [(1, 0.1), (2, 0.2)]
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_a_resumed_tracker_appends_and_keeps_the_wandb_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    ids = []
    for step in (1, 2):
        tr = Tracker(["jsonl", "wandb"], tmp_path, "proj", "exp", total_steps=2, start_step=step - 1,
                     wandb_mode="offline", progress_bar=False)
        tr.log({"x": float(step)}, step)
        ids.append(tr._wandb.id)
        tr.close()
    assert ids[0] == ids[1] == (tmp_path / ".wandb_id").read_text()
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
