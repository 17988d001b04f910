"""QA rows: the record, the readers (jsonl, parquet, a dataset folder) and the parquet writer.

Two layouts are read:
- jsonl, one object a line, as in shared/data/qa: {"id", "question", "golden_answers": [...], "source"}
  (other keys are kept in `QARow.extra`);
- parquet in the ZeroSearch_dataset / Search-R1 layout: `id`, `question`, `golden_answers`, `data_source`,
  `prompt` = [{role: user, content}], `ability`, `reward_model` = {style: rule, ground_truth: {target}},
  `extra_info` = {split, index}. `write_parquet` writes exactly this.

Row ids are `<data_source>/<id in the source>` ("nq/nq_dev_0"), unique across sources, and serve as the
GRPO group id (the original used a dataset index, which collides when sources are mixed).

A malformed row stops reading with a `DataError` naming the file, the line (jsonl, 1-based) or row
(parquet, 0-based, as `extra_info.index`), the field and what is wrong; `skip_invalid=True` skips such
rows instead and logs how many, with the first reason. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from zerosearch.data.prompts import format_prompt, get_template, normalize_question

__all__ = ["DataError", "KNOWN_SOURCES", "QARow", "load_qa", "load_qa_dir", "source_from_filename",
           "write_parquet"]

log = logging.getLogger(__name__)

# The seven benchmark families of the ZeroSearch paper, as `data_source` names.
KNOWN_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
ABILITY = "fact-reasoning"


@dataclass(frozen=True)
class QARow:
    """One question with its gold answers.

    Attributes:
        id: unique across data sources: "<data_source>/<id in the source>"; the GRPO group id.
        question: the question as the source has it (prompts normalise it: stripped, ending in "?").
        golden_answers: every accepted answer.
        data_source: nq | triviaqa | popqa | hotpotqa | 2wikimultihopqa | musique | bamboogle | ...
        extra: whatever else the source row carried (source_id, split, index, ability, ...).
        prompt: the parquet row's `prompt` chat as ((role, content), ...), when it has one: the exact text
            a Search-R1 / ZeroSearch dataset trains on (used as is with `data.use_dataset_prompt`).
    """

    id: str
    question: str
    golden_answers: tuple[str, ...]
    data_source: str
    extra: dict[str, Any] = field(default_factory=dict, hash=False)
    prompt: Optional[tuple[tuple[str, str], ...]] = None

    def prompt_messages(self) -> Optional[list[dict[str, str]]]:
        """The stored prompt as chat messages [{role, content}, ...], or None when the row has none."""
        return None if self.prompt is None else [{"role": r, "content": c} for r, c in self.prompt]

    def __post_init__(self) -> None:
        if not isinstance(self.golden_answers, tuple):
            object.__setattr__(self, "golden_answers", tuple(self.golden_answers))

    @property
    def group_id(self) -> str:
        """The id rollouts of this question are grouped by (GRPO): the row id."""
        return self.id


class DataError(ValueError):
    """A data file or one of its rows is malformed. `where` is "line N" (jsonl) or "row N" (parquet)."""

    def __init__(self, path: os.PathLike | str, reason: str, where: Optional[str] = None,
                 field_name: Optional[str] = None):
        self.path, self.reason, self.where, self.field = str(path), reason, where, field_name
        parts = [self.path] + ([where] if where else []) + ([f"field '{field_name}'"] if field_name else [])
        super().__init__(": ".join(parts) + f": {reason}")


class _RowError(Exception):
    def __init__(self, field_name: Optional[str], reason: str):
        self.field, self.reason = field_name, reason


def source_from_filename(path: os.PathLike | str) -> Optional[str]:
    """The data source a file name names ("nq_open_dev.jsonl" -> "nq"), or None."""
    stem = Path(path).name.lower()
    for s in sorted(KNOWN_SOURCES, key=len, reverse=True):
        if re.match(rf"{re.escape(s)}(?![a-z0-9])", stem):
            return s
    return None


# ---------------------------------------------------------------------------------------------- checks

def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def _req_str(raw: dict, key: str) -> str:
    if key not in raw or raw[key] is None:
        raise _RowError(key, "missing")
    v = raw[key]
    if not isinstance(v, str):
        raise _RowError(key, f"expected a string, got {_type_name(v)}")
    if not v.strip():
        raise _RowError(key, "empty")
    return v


def _answers(v: Any, key: str) -> tuple[str, ...]:
    if v is None:
        raise _RowError(key, "missing")
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):  # a numpy array from a pandas-made file
        v = v.tolist()
    if not isinstance(v, (list, tuple)):
        raise _RowError(key, f"expected a list of strings, got {_type_name(v)}")
    if not v:
        raise _RowError(key, "empty list: a question needs at least one gold answer")
    for j, a in enumerate(v):
        if not isinstance(a, str):
            raise _RowError(f"{key}[{j}]", f"expected a string, got {_type_name(a)}")
        if not a.strip():
            raise _RowError(f"{key}[{j}]", "empty string")
    return tuple(v)


def _source_id(v: Any, key: str) -> str:
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _RowError(key, f"expected a string or integer, got {_type_name(v)}")
    s = str(v)
    if not s.strip():
        raise _RowError(key, "empty")
    return s


def _row_id(source: str, source_id: str) -> str:
    return source_id if source_id.startswith(f"{source}/") else f"{source}/{source_id}"


def _opt_str(raw: dict, key: str) -> Optional[str]:
    v = raw.get(key)
    if v is None:
        return None
    if not isinstance(v, str) or not v.strip():
        raise _RowError(key, f"expected a non-empty string, got {v!r}")
    return v


# ---------------------------------------------------------------------------------------------- jsonl

_JSONL_KEYS = ("id", "question", "golden_answers", "source")


def _jsonl_row(raw: Any, index: int, data_source: Optional[str], file_source: Optional[str]) -> QARow:
    if not isinstance(raw, dict):
        raise _RowError(None, f"expected a JSON object, got {_type_name(raw)}")
    question = _req_str(raw, "question")
    answers = _answers(raw.get("golden_answers"), "golden_answers")
    sid = _source_id(raw["id"], "id") if raw.get("id") is not None else str(index)
    source = data_source or _opt_str(raw, "source") or file_source
    extra = {"source_id": sid, **{k: v for k, v in raw.items() if k not in _JSONL_KEYS}}
    return QARow(_row_id(source, sid), question, answers, source, extra)


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, parsed object or a _RowError) for each non-blank line."""
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            where = f"line {n}"
            try:
                text = line.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                yield where, _RowError(None, f"not valid UTF-8 ({e.reason} at byte {e.start}: {line[e.start:e.start + 4]!r})")
                continue
            if not text.strip():
                continue
            try:
                yield where, json.loads(text)
            except json.JSONDecodeError as e:
                yield where, _RowError(None, f"invalid JSON ({e.msg} at column {e.colno})")


# ---------------------------------------------------------------------------------------------- parquet

_PARQUET_KEYS = ("id", "question", "golden_answers", "data_source", "prompt", "ability", "reward_model",
                 "extra_info")


def _prompt(v: Any) -> Optional[tuple[tuple[str, str], ...]]:
    """A `prompt` column value ([{role, content}, ...]) as ((role, content), ...); None when absent."""
    if v is None:
        return None
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        v = v.tolist()
    if not isinstance(v, (list, tuple)) or not v:
        raise _RowError("prompt", f"expected a non-empty list of {{role, content}} messages, got {v!r}"[:200])
    out = []
    for j, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise _RowError(f"prompt[{j}]", f"expected {{role: str, content: str}}, got {m!r}"[:200])
        out.append((m["role"], m["content"]))
    if not out[0][1].strip():
        raise _RowError("prompt[0].content", "empty")
    return tuple(out)


def _parquet_row(raw: dict, index: int, data_source: Optional[str], file_source: Optional[str]) -> QARow:
    question = _req_str(raw, "question")
    if raw.get("golden_answers") is not None:
        answers = _answers(raw["golden_answers"], "golden_answers")
    else:  # older files carry the answers only in the reward model's ground truth
        rm = raw.get("reward_model")
        target = ((rm or {}).get("ground_truth") or {}).get("target") if isinstance(rm, dict) else None
        answers = _answers(target, "golden_answers")
    info = raw.get("extra_info") if isinstance(raw.get("extra_info"), dict) else {}
    if raw.get("id") is not None:
        sid = _source_id(raw["id"], "id")
    elif info.get("index") is not None:
        sid = _source_id(info["index"], "extra_info.index")
    else:
        sid = str(index)
    source = data_source or _opt_str(raw, "data_source") or file_source
    extra: dict[str, Any] = {"source_id": sid}
    if raw.get("ability") is not None:
        extra["ability"] = raw["ability"]
    extra.update({k: v for k, v in info.items() if v is not None})
    extra.update({k: v for k, v in raw.items() if k not in _PARQUET_KEYS})
    return QARow(_row_id(source, sid), question, answers, source, extra, _prompt(raw.get("prompt")))


def _iter_parquet(path: Path) -> Iterator[tuple[str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file, reported as such
        raise DataError(path, f"cannot read as parquet ({type(e).__name__}: {e})") from e
    for i, raw in enumerate(table.to_pylist()):
        yield f"row {i}", raw


# ---------------------------------------------------------------------------------------------- readers

def _read(path: Path, rows: Iterable[tuple[str, Any]], make, data_source: Optional[str],
          skip_invalid: bool) -> list[QARow]:
    file_source = source_from_filename(path) or path.stem
    out: list[QARow] = []
    seen: dict[str, str] = {}
    skipped: list[DataError] = []
    for index, (where, raw) in enumerate(rows):
        try:
            if isinstance(raw, _RowError):
                raise raw
            row = make(raw, index, data_source, file_source)
            if row.id in seen:
                raise _RowError("id", f"duplicate id {row.id!r} (first at {seen[row.id]})")
        except _RowError as e:
            err = DataError(path, e.reason, where, e.field)
            if not skip_invalid:
                raise err from None
            skipped.append(err)
            continue
        seen[row.id] = where
        out.append(row)
    if skipped:
        log.warning("%s: skipped %d malformed row(s); first: %s", path, len(skipped), skipped[0])
    if not out:
        raise DataError(path, "no valid rows" if skipped else "no rows")
    return out


def load_qa(path: os.PathLike | str, *, data_source: Optional[str] = None,
            skip_invalid: bool = False) -> list[QARow]:
    """Read QA rows from a .jsonl file, a .parquet file or a dataset folder (see `load_qa_dir`).

    Args:
        path: the file or folder.
        data_source: set every row's data source (default: the row's own `source` / `data_source`, else
            the source the file name names, else the file name).
        skip_invalid: skip malformed rows (logging their count and the first reason) instead of raising.

    Raises:
        DataError: naming file, line/row and field, for the first malformed row (or a missing file).
    """
    p = Path(path)
    if p.is_dir():
        splits = load_qa_dir(p, data_source=data_source, skip_invalid=skip_invalid)
        return [r for name in ("train", "test") for r in splits.get(name, [])]
    if not p.exists():
        raise DataError(p, "no such file")
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        return _read(p, _iter_jsonl(p), _jsonl_row, data_source, skip_invalid)
    if suffix == ".parquet":
        return _read(p, _iter_parquet(p), _parquet_row, data_source, skip_invalid)
    raise DataError(p, f"unsupported file type {suffix or '(none)'!r}: expected .jsonl, .parquet or a folder "
                       "holding train.parquet / test.parquet")


def load_qa_dir(path: os.PathLike | str, *, data_source: Optional[str] = None,
                skip_invalid: bool = False) -> dict[str, list[QARow]]:
    """Read every parquet file of a dataset folder: {"train": [...], "test": [...], "test_nq": [...], ...}.

    `load_qa(folder)` returns train then test from this (the per-source test files repeat test.parquet).
    """
    p = Path(path)
    files = sorted(p.glob("*.parquet"))
    if not files:
        raise DataError(p, "no .parquet files: expected train.parquet and/or test.parquet (ZeroSearch_dataset "
                           "layout; scripts/prepare_data.py writes one)")
    return {f.stem: load_qa(f, data_source=data_source, skip_invalid=skip_invalid) for f in files}


# ---------------------------------------------------------------------------------------------- writer

def _parquet_schema():
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()),
        ("question", pa.string()),
        ("golden_answers", pa.list_(pa.string())),
        ("data_source", pa.string()),
        ("prompt", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()),
                                    ("ground_truth", pa.struct([("target", pa.list_(pa.string()))]))])),
        ("extra_info", pa.struct([("split", pa.string()), ("index", pa.int64())])),
    ])


def write_parquet(rows: Iterable[QARow], path: os.PathLike | str, split: str, *,
                  template: str = "search_r1") -> Path:
    """Write rows as a ZeroSearch_dataset parquet file (parent folders are created).

    The question is stripped and given a "?"; `prompt` holds the agent instruction rendered as plain text
    (no chat template: the trainer applies the model's own at load time), from `template` (default
    `search_r1`, the instruction of the original datasets); `extra_info.index` is the
    position in this file; `id` is the id within the source (the reader prefixes the data source again).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    get_template(template)  # an unknown template fails before any file is written
    cols: dict[str, list] = {name: [] for name in _parquet_schema().names}
    for i, r in enumerate(rows):
        prefix = f"{r.data_source}/"
        cols["id"].append(r.id[len(prefix):] if r.id.startswith(prefix) else r.id)
        cols["question"].append(normalize_question(r.question))
        cols["golden_answers"].append(list(r.golden_answers))
        cols["data_source"].append(r.data_source)
        cols["prompt"].append([{"role": "user", "content": format_prompt(r.question, template)}])
        cols["ability"].append(ABILITY)
        cols["reward_model"].append({"style": "rule", "ground_truth": {"target": list(r.golden_answers)}})
        cols["extra_info"].append({"split": split, "index": i})
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(cols, schema=_parquet_schema()), out)
    return out
