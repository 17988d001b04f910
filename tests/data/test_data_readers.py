"""QA readers: jsonl and parquet layouts, ids unique across sources, malformed rows named precisely."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from zerosearch.data import DataError, QARow, load_qa, load_qa_dir, source_from_filename, write_parquet

GOOD = {"id": "q0", "question": "who wrote moby dick", "golden_answers": ["Herman Melville"], "source": "nq"}


def _jsonl(path: Path, lines: list) -> Path:
    """Write lines (dicts as JSON, str as text, bytes as they are) with a blank line after the first."""
    with open(path, "wb") as f:
        for i, line in enumerate(lines):
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write(line if isinstance(line, bytes) else line.encode())
            f.write(b"\n\n" if i == 0 else b"\n")
    return path


# Each malformed row sits on line 3 (line 2 is blank): (row, field named in the message, reason).
MALFORMED = {
    "missing question": ({"id": "q1", "golden_answers": ["x"]}, "question", "missing"),
    "empty question": ({"id": "q1", "question": "  ", "golden_answers": ["x"]}, "question", "empty"),
    "question wrong type": ({"id": "q1", "question": 42, "golden_answers": ["x"]}, "question",
                            "expected a string, got int"),
    "missing answers": ({"id": "q1", "question": "q?"}, "golden_answers", "missing"),
    "empty answers": ({"id": "q1", "question": "q?", "golden_answers": []}, "golden_answers", "empty list"),
    "non-list answers": ({"id": "q1", "question": "q?", "golden_answers": "x"}, "golden_answers",
                         "expected a list of strings, got str"),
    "answer wrong type": ({"id": "q1", "question": "q?", "golden_answers": ["x", 7]}, "golden_answers[1]",
                          "expected a string, got int"),
    "blank answer": ({"id": "q1", "question": "q?", "golden_answers": [" "]}, "golden_answers[0]", "empty string"),
    "id wrong type": ({"id": ["q1"], "question": "q?", "golden_answers": ["x"]}, "id",
                      "expected a string or integer, got list"),
    "source wrong type": ({"id": "q1", "question": "q?", "golden_answers": ["x"], "source": 3}, "source",
                          "expected a non-empty string"),
    "duplicate id": ({"id": "q0", "question": "q?", "golden_answers": ["x"]}, "id", "duplicate id 'nq/q0'"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_jsonl_row_names_file_line_field(tmp_path, case):
    row, field, reason = MALFORMED[case]
    path = _jsonl(tmp_path / "nq_bad.jsonl", [GOOD, row])
    with pytest.raises(DataError) as e:
        load_qa(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: line 3: field '{field}': "), msg
    assert reason in msg
    assert (e.value.path, e.value.where, e.value.field) == (str(path), "line 3", field)


@pytest.mark.parametrize("raw,reason", [
    (b'{"id": "q1", "question": "caf\xe9?", "golden_answers": ["x"]}', "not valid UTF-8"),
    (b'{"id": "q1", "question": ', "invalid JSON"),
    (b'[1, 2]', "expected a JSON object, got list"),
])
def test_unreadable_jsonl_line_names_file_and_line(tmp_path, raw, reason):
    path = _jsonl(tmp_path / "nq_bad.jsonl", [GOOD, raw])
    with pytest.raises(DataError, match=rf"^{path}: line 3: {reason}"):
        load_qa(path)


def test_skip_invalid_reports_count_and_first_reason(tmp_path, caplog):
    bad = [MALFORMED["missing question"][0], b"\xff\xfe", MALFORMED["empty answers"][0], "{oops"]
    ok = {**GOOD, "id": "q9"}
    path = _jsonl(tmp_path / "nq_mixed.jsonl", [GOOD, *bad, ok])
    with caplog.at_level(logging.WARNING, logger="zerosearch.data.qa"):
        rows = load_qa(path, skip_invalid=True)
    assert [r.id for r in rows] == ["nq/q0", "nq/q9"]
    assert f"{path}: skipped 4 malformed row(s); first: {path}: line 3: field 'question': missing" in caplog.text


def test_all_rows_invalid_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "nq_x.jsonl", [MALFORMED["empty answers"][0]])
    with pytest.raises(DataError, match="no valid rows"):
        load_qa(path, skip_invalid=True)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_qa(tmp_path / "missing.jsonl")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        load_qa(tmp_path / "x.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="broken.parquet: cannot read as parquet"):
        load_qa(tmp_path / "broken.parquet")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_qa(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="no .parquet files"):
        load_qa_dir(tmp_path / "nothing_here")


def test_shared_jsonl(shared_data):
    rows = load_qa(shared_data / "qa" / "nq_open_dev.jsonl")
    assert len(rows) == 3610
    r = rows[0]
    assert r == QARow("nq/nq_dev_0", "when was the last time anyone was on the moon",
                      ("14 December 1972 UTC", "December 1972"), "nq", {"source_id": "nq_dev_0"})
    assert r.group_id == r.id
    ctx = load_qa(shared_data / "qa" / "hotpotqa_dev_sub_with_context.jsonl")
    assert {"type", "level", "supporting_titles", "context_paragraph_ids"} <= set(ctx[0].extra)


def test_group_ids_unique_across_sources(tmp_path):
    """The same source id in two sources gives two row ids (the original's index collided)."""
    a = _jsonl(tmp_path / "nq_a.jsonl", [{**GOOD, "id": 0, "source": None}])
    b = _jsonl(tmp_path / "hotpotqa_b.jsonl", [{**GOOD, "id": 0, "source": None}])
    ids = [r.group_id for r in load_qa(a) + load_qa(b)]
    assert ids == ["nq/0", "hotpotqa/0"]


def test_data_source_resolution(tmp_path):
    no_source = {k: v for k, v in GOOD.items() if k != "source"}
    path = _jsonl(tmp_path / "triviaqa_test_x.jsonl", [no_source, {**GOOD, "id": "q1"}])
    assert [r.data_source for r in load_qa(path)] == ["triviaqa", "nq"]          # file name, then the row's
    assert {r.data_source for r in load_qa(path, data_source="popqa")} == {"popqa"}  # explicit wins
    odd = _jsonl(tmp_path / "my_questions.jsonl", [no_source])
    assert load_qa(odd)[0].id == "my_questions/q0"
    missing_id = _jsonl(tmp_path / "nq_noid.jsonl", [{"question": "q?", "golden_answers": ["x"]}])
    assert load_qa(missing_id)[0].id == "nq/0"                                   # row position


@pytest.mark.parametrize("name,source", [
    ("nq_open_dev.jsonl", "nq"), ("nq_test_sub1000_flashrag.jsonl", "nq"), ("triviaqa_test_sub1000", "triviaqa"),
    ("popqa_test_sub1000.jsonl", "popqa"), ("hotpotqa_dev_sub_with_context.jsonl", "hotpotqa"),
    ("2wikimultihopqa_dev.jsonl", "2wikimultihopqa"), ("musique_dev.jsonl", "musique"),
    ("bamboogle_test.jsonl", "bamboogle"), ("test_nq.parquet", None), ("nqx.jsonl", None),
])
def test_source_from_filename(name, source):
    assert source_from_filename(name) == source


def _search_r1_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def test_parquet_search_r1_layout_without_id_column(tmp_path):
    """Files made by Search-R1's preprocessing: answers in reward_model, the index in extra_info."""
    rows = [{"data_source": "nq", "prompt": [{"role": "user", "content": "..."}], "ability": "fact-reasoning",
             "reward_model": {"style": "rule", "ground_truth": {"target": ["Paris"]}},
             "extra_info": {"split": "train", "index": i}, "question": f"capital {i}?"} for i in range(3)]
    path = tmp_path / "train.parquet"
    pq.write_table(_search_r1_table(rows), path)
    got = load_qa(path)
    assert [r.id for r in got] == ["nq/0", "nq/1", "nq/2"]
    assert got[1].golden_answers == ("Paris",) and got[1].extra["split"] == "train"


@pytest.mark.parametrize("change,field,reason", [
    ({"question": None}, "question", "missing"),
    ({"golden_answers": []}, "golden_answers", "empty list"),
    ({"golden_answers": ["ok", ""]}, "golden_answers[1]", "empty string"),
])
def test_malformed_parquet_row_names_file_row_field(tmp_path, change, field, reason):
    good = QARow("nq/a", "q a?", ("x",), "nq")
    path = write_parquet([good, QARow("nq/b", "q b?", ("y",), "nq")], tmp_path / "test.parquet", "test")
    table = pq.read_table(path).to_pylist()
    table[1].update(change)
    pq.write_table(pa.Table.from_pylist(table, schema=pq.read_schema(path)), path)
    with pytest.raises(DataError) as e:
        load_qa(path)
    assert str(e.value).startswith(f"{path}: row 1: field '{field}': {reason}"), str(e.value)
    assert [r.id for r in load_qa(path, skip_invalid=True)] == ["nq/a"]


def test_write_parquet_layout(tmp_path):
    rows = [QARow("nq/a", "  who wrote moby dick ", ("Herman Melville",), "nq"),
            QARow("hotpotqa/b", "Is it?", ("yes",), "hotpotqa")]
    path = write_parquet(rows, tmp_path / "out" / "train.parquet", "train")
    table = pq.read_table(path)
    assert table.column_names == ["id", "question", "golden_answers", "data_source", "prompt", "ability",
                                  "reward_model", "extra_info"]
    first, second = table.to_pylist()
    assert first["id"] == "a" and first["question"] == "who wrote moby dick?"
    assert second["question"] == "Is it?"
    assert first["prompt"][0]["role"] == "user"
    assert first["prompt"][0]["content"].endswith("Question: who wrote moby dick?\n")
    assert first["reward_model"] == {"style": "rule", "ground_truth": {"target": ["Herman Melville"]}}
    assert second["extra_info"] == {"split": "train", "index": 1}
    assert first["ability"] == "fact-reasoning"
    back = load_qa(path)
    assert [(r.id, r.data_source, r.golden_answers) for r in back] == [(r.id, r.data_source, r.golden_answers)
                                                                        for r in rows]


def test_load_folder(tmp_path):
    write_parquet([QARow("nq/a", "a?", ("x",), "nq")], tmp_path / "train.parquet", "train")
    write_parquet([QARow("nq/b", "b?", ("y",), "nq")], tmp_path / "test.parquet", "test")
    write_parquet([QARow("nq/b", "b?", ("y",), "nq")], tmp_path / "test_nq.parquet", "test")
    assert sorted(load_qa_dir(tmp_path)) == ["test", "test_nq", "train"]
    assert [r.id for r in load_qa(tmp_path)] == ["nq/a", "nq/b"]
