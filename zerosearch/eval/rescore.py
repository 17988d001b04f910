"""`--rescore FILE`: score an existing trajectories file without generating, through the same scoring path.

Two layouts are read, line by line:
- this harness's trajectories.jsonl (`zerosearch.eval.store`): method, dataset, id, question,
  golden_answers, response, searches, turns, truncated, ...;
- Search-R1 / FlashRAG evaluation traces (shared/data/traces): dataset, run, id, question, golden_answers,
  response, stop_reason, metric_score. Searches and turns are read from the response text
  (`rollout.actions.split_response`); a row stopped on length counts as truncated.
Every row is scored again with `reward.score_fn_from_config(cfg.reward)` (the training score) and
written in this harness's layout, with results.csv / .md / .png beside it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

from zerosearch.config.schema import RewardConfig
from zerosearch.eval import report, store
from zerosearch.eval.scoring import RowResult, score_response


def _trace_counts(response: str) -> tuple[int, int]:
    """(searches, turns) of a whole response text: observations inserted, policy turns."""
    from zerosearch.rollout.actions import split_response

    turns = split_response(response)
    return sum(t.observation is not None for t in turns), len(turns)


def rescore_row(d: dict[str, Any], score_fn: Any, default_method: str) -> tuple[str, str, RowResult]:
    """(method, dataset, scored row) of one line of either layout."""
    missing = [k for k in ("dataset", "question", "golden_answers", "response") if k not in d]
    if missing:
        raise ValueError(f"row {d.get('id')!r} lacks {', '.join(missing)} (expected this harness's trajectories.jsonl "
                         "or Search-R1 traces with dataset, question, golden_answers, response)")
    golds = [d["golden_answers"]] if isinstance(d["golden_answers"], str) else list(d["golden_answers"])
    if "scores" in d:  # our layout: the counts were recorded while generating
        method, searches, turns, truncated = d["method"], d["searches"], d.get("turns", 0), d.get("truncated", False)
        stop, row_id = d.get("stop_reason", ""), d["id"]
    else:
        method = default_method
        searches, turns = _trace_counts(d["response"])
        stop = d.get("stop_reason", "")
        truncated = stop == "length"
        row_id = f"{d['run']}/{d['id']}" if d.get("run") else str(d.get("id", ""))
    r = score_response(row_id, d.get("data_source", d["dataset"]), d["question"], golds, d["response"], score_fn,
                       searches=searches, turns=turns, truncated=truncated, stop_reason=stop)
    return method, d["dataset"], r


def reward_config(overrides: Sequence[str]) -> RewardConfig:
    """The reward section with `reward.*` overrides applied (the only settings scoring reads)."""
    from omegaconf import OmegaConf

    from zerosearch.config.validate import ConfigError

    bad = [o for o in overrides if not o.startswith("reward.") or "=" not in o]
    if bad:
        raise ConfigError([f"{o}: --rescore takes only reward.* overrides (e.g. reward.score=em)" for o in bad])
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RewardConfig),
                                 OmegaConf.from_dotlist([o.removeprefix("reward.") for o in overrides]))
        return OmegaConf.to_object(merged)  # type: ignore[return-value]
    except Exception as e:  # noqa: BLE001 - OmegaConf's key/type errors, as one line
        raise ConfigError([" ".join(str(e).split())[:300]]) from None


def rescore(path: Path, out_dir: Path, overrides: Sequence[str] = (), method: str | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every row of `path` again and write trajectories.jsonl and the report into `out_dir`.

    Args:
        overrides: config overrides; only the reward section matters (e.g. reward.score=em).
        method: the method name for rows that carry none (traces); default the file's stem.
    """
    from zerosearch.reward import score_fn_from_config

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--rescore {path}: no such file")
    reward = reward_config(overrides)
    score_fn = score_fn_from_config(reward)
    rows = store.read_rows(path)
    if not rows:
        raise ValueError(f"--rescore {path}: no rows")
    groups: dict[str, dict[str, list[RowResult]]] = {}
    lines = []
    for n, d in enumerate(rows, 1):
        try:
            m, ds, r = rescore_row(d, score_fn, method or path.stem)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}: line {n}: {e}") from None
        groups.setdefault(m, {}).setdefault(ds, []).append(r)
        lines.append(store.row_to_json(m, ds, r, d.get("prompt", ""), d.get("documents") or []))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (store.TRAJECTORIES + ".tmp")  # the input may be out_dir's own trajectories.jsonl
    tmp.unlink(missing_ok=True)
    store.append_rows(tmp, lines)
    os.replace(tmp, out_dir / store.TRAJECTORIES)
    (out_dir / "config.json").write_text(json.dumps({"rescore": str(path.resolve()), "rows": len(rows),
                                                     "reward": asdict(reward)}, indent=1))
    recs = report.records(groups)
    paths = report.write_report(out_dir, recs, f"Rescored from `{path}` ({len(rows)} rows), reward {reward.score}.")
    log(f"[eval] rescored {len(rows)} rows of {path} -> {paths['md']}")
    return {"records": recs, "paths": paths}
