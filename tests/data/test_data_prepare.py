"""scripts/prepare_data.py: shared jsonl sets -> ZeroSearch_dataset parquet that load_qa reads back unchanged."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from zerosearch.data import TEMPLATES, format_prompt, load_qa, load_qa_dir, normalize_question
from zerosearch.data.prepare import main, prepare_dataset

REPO = Path(__file__).resolve().parents[2]
TRAIN = ["nq_open_dev", "hotpotqa_dev"]
TEST = ["nq_test_sub1000_flashrag", "bamboogle_test"]


@pytest.fixture(scope="module")
def dataset(shared_data, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The CLI run once, as a user runs it (a fresh interpreter, names resolved in the shared QA folder)."""
    out = tmp_path_factory.mktemp("ds") / "zerosearch_dataset"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare_data.py"), "--train", *TRAIN, "--test", *TEST,
         "--qa-dir", str(shared_data / "qa"), "--out", str(out)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_round_trip_unchanged(dataset, shared_data):
    out, _ = dataset
    splits = load_qa_dir(out)
    assert sorted(splits) == ["test", "test_bamboogle", "test_nq", "train"]
    for split, names in (("train", TRAIN), ("test", TEST)):
        original = [r for n in names for r in load_qa(shared_data / "qa" / f"{n}.jsonl")]
        back = splits[split]
        assert [r.id for r in back] == [r.id for r in original]
        assert [r.question for r in back] == [normalize_question(r.question) for r in original]
        assert [r.golden_answers for r in back] == [r.golden_answers for r in original]
        assert [r.data_source for r in back] == [r.data_source for r in original]
        assert all(r.extra["split"] == split for r in back)
    assert [r.id for r in splits["test_nq"]] == [r.id for r in splits["test"] if r.data_source == "nq"]
    ids = [r.group_id for s in ("train", "test") for r in splits[s]]
    assert len(ids) == len(set(ids)) == 3610 + 7405 + 1000 + 125


def test_prompt_column_is_the_plain_template(dataset):
    out, _ = dataset
    rows = pq.read_table(out / "test_bamboogle.parquet", columns=["question", "prompt"]).to_pylist()
    assert len(rows) == 125
    for r in rows[:5]:
        assert r["prompt"] == [{"role": "user", "content": format_prompt(r["question"], "search_r1")}]


def test_cli_prints_counts_and_warns_about_overlap(dataset):
    _, proc = dataset
    out = proc.stdout
    assert "train: 11015 rows" in out and "test: 1125 rows" in out
    assert "hotpotqa         7405" in out and "bamboogle        125" in out
    # nq_test_sub1000_flashrag is a subset of NQ-open dev: the script says so rather than leak silently
    assert "warning: 1000 test questions also appear in train (nq: 1000)" in out


def test_refuses_to_overwrite_without_force(tmp_path, shared_data, capsys):
    qa = str(shared_data / "qa")
    out = tmp_path / "ds"
    assert main(["--test", "bamboogle_test", "musique_dev", "--qa-dir", qa, "--out", str(out)]) == 0
    assert (out / "test_musique.parquet").exists()
    assert main(["--test", "bamboogle_test", "--qa-dir", qa, "--out", str(out)]) == 2
    assert "pass --force to overwrite" in capsys.readouterr().err
    assert main(["--test", "bamboogle_test", "--qa-dir", qa, "--out", str(out), "--force"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.parquet", "test_bamboogle.parquet"]  # no stale file


def test_max_rows_is_a_seeded_sample(tmp_path, shared_data):
    qa = shared_data / "qa"
    a = prepare_dataset(tmp_path / "a", ["hotpotqa_dev"], qa_dir=qa, max_rows=50, seed=1, echo=lambda s: None)
    prepare_dataset(tmp_path / "b", ["hotpotqa_dev"], qa_dir=qa, max_rows=50, seed=1, echo=lambda s: None)
    prepare_dataset(tmp_path / "c", ["hotpotqa_dev"], qa_dir=qa, max_rows=50, seed=2, echo=lambda s: None)
    assert a["train"]["hotpotqa"] == 50
    ids = {k: [r.id for r in load_qa(tmp_path / k / "train.parquet")] for k in "abc"}
    assert ids["a"] == ids["b"] != ids["c"]
    positions = [int(i.rsplit("_", 1)[1]) for i in ids["a"]]
    assert positions == sorted(positions)  # source order kept


def test_inputs_by_path_and_errors(tmp_path, shared_data, capsys):
    path = shared_data / "qa" / "bamboogle_test.jsonl"
    assert main(["--test", str(path), "--out", str(tmp_path / "p"), "--qa-dir", str(tmp_path)]) == 0
    assert main(["--test", "no_such_set", "--qa-dir", str(shared_data / "qa"), "--out", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err
    assert "no QA file 'no_such_set'" in err and "bamboogle_test" in err  # lists what there is
    assert main(["--out", str(tmp_path / "r")]) == 2
    # the same file twice in one split would give duplicate group ids
    assert main(["--test", "bamboogle_test", "bamboogle_test", "--qa-dir", str(shared_data / "qa"),
                 "--out", str(tmp_path / "s")]) == 2
    assert "duplicate id 'bamboogle/bamboogle_test_0'" in capsys.readouterr().err
