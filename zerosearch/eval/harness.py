"""The evaluation harness: methods x datasets through the training code path, resumable, every row scored.

    evaluate(EvalOptions(model="outputs/run/actor_hf", out_dir=Path("eval/run"), datasets=["nq", "bamboogle"],
                         methods=["agent", "rag"], limit=500, seed=0, overrides=["search.eval_engine=retrieval", ...]))

For each method and dataset, the pending rows (those not yet in trajectories.jsonl) go in batches through
`zerosearch.trainer.validation.run_validation`, the function validation during training calls: the same
`AgentLoop`, prompt rendering, search engine factory and score function (`reward.run_scorer`),
greedy unless rollout.val_temperature says otherwise. Each batch is appended to trajectories.jsonl and
fsynced before the next starts, so a killed run loses at most the batch in flight, and re-running the same
command continues where it stopped. results.csv / .md / .png are written from the file at the end.
"""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from zerosearch.config.schema import ZeroSearchConfig
from zerosearch.data.qa import QARow, load_qa
from zerosearch.eval import baselines, report, store
from zerosearch.eval.models import ModelSource, build_generation, eval_config, resolve_model
from zerosearch.eval.scoring import RowResult
from zerosearch.eval.subsets import ids_digest, resolve_dataset, select_subset
from zerosearch.search.types import SearchEngine, SearchRequest, SearchResult
from zerosearch.utils.failpoints import failpoint

CONFIG_JSON = "config.json"


@dataclass
class EvalOptions:
    """One evaluation. `overrides` are config overrides (a.b=c) on top of the model's run config."""

    model: str
    out_dir: Path
    datasets: list[str]
    methods: list[str] = field(default_factory=lambda: ["agent"])
    limit: int | None = None
    seed: int = 0
    batch_size: int | None = None  # None = data.val_batch_size
    name: str | None = None  # the model's name in the tables; None = its folder's
    overrides: list[str] = field(default_factory=list)
    noise_prob: float | None = None  # a simulated eval engine: force this noise probability
    progress: bool | None = None  # a tqdm bar; None = when stderr is a terminal


class RecordingSearch(SearchEngine):
    """Passes requests to an engine and keeps, per trajectory, the queries and the documents returned."""

    def __init__(self, inner: SearchEngine):
        self.inner = inner
        self.name = inner.name
        self.calls: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.errors = 0

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        results = self.inner.search(requests)
        for q, res in zip(requests, results):
            self.errors += res.error is not None
            self.calls[q.row_id].append({"query": q.query, "error": res.error,
                                         "documents": [{"title": d.title, "text": d.text} for d in res.documents]})
        return results

    def pop(self, uid: str) -> list[dict[str, Any]]:
        return self.calls.pop(uid, [])

    def pop_metrics(self) -> dict[str, float]:
        return self.inner.pop_metrics()

    def close(self) -> None:
        self.inner.close()


class NoSearch(SearchEngine):
    """The engine of a run without a searching method: a search reaching it is a bug."""

    name = "none"

    def search(self, requests: Sequence[SearchRequest]) -> list[SearchResult]:
        raise RuntimeError("a method without search sent a search request")


def fingerprint(cfg: ZeroSearchConfig, src: ModelSource, noise_prob: float | None) -> dict[str, Any]:
    """What makes two runs' rows comparable: a result folder holds rows of one fingerprint only. Where
    servers listen, time-outs and batch sizes are left out (a restarted server may use another port)."""
    s, r = cfg.search, cfg.rollout
    return {
        "model": str(src.hf_dir), "engine": r.engine, "dtype": cfg.model.dtype,
        "prompt_template": cfg.data.prompt_template, "chat_template": cfg.data.chat_template,
        "rollout": {k: getattr(r, k) for k in ("val_temperature", "max_turns", "max_response_length", "max_obs_length",
                                               "max_total_length", "invalid_action_text", "max_query_chars")},
        "search": {"eval_engine": "retrieval" if s.eval_engine == "wiki" else s.eval_engine, "topk": s.topk,
                   "retrieval": {"kind": "server" if s.retrieval.url else "local", "method": s.retrieval.method,
                                 "corpus_path": s.retrieval.corpus_path if not s.retrieval.url else None,
                                 "dense_model": s.retrieval.dense_model},
                   "simulation": {k: getattr(s.simulation, k) for k in ("model_name", "model_path", "prompt_family",
                                                                        "temperature", "words_per_doc")}
                   if s.eval_engine.startswith("simulate") else None,
                   "noise_prob": noise_prob},
        "reward": asdict(cfg.reward),
    }


def _check_fingerprint(path: Path, fp: dict[str, Any]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    if old.get("fingerprint") != fp:
        a, b = _flat(old.get("fingerprint", {})), _flat(fp)
        diff = [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise ValueError(f"{path.parent} holds results of another configuration ({'; '.join(diff[:6])}); use another "
                         "--out folder (or delete this one) to evaluate this configuration")
    return old


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


class Progress:
    """A tqdm bar with ETA on a terminal; otherwise one plain line per batch (logs stay readable)."""

    def __init__(self, total: int, enabled: bool | None, log: Callable[[str], None]):
        self.total, self.done, self.t0, self.log = total, 0, time.perf_counter(), log
        tty = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if tty and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="row", desc="eval", dynamic_ncols=True)

    def update(self, n: int, what: str) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.set_postfix_str(what)
            self.bar.update(n)
            return
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done) if self.done else 0.0
        self.log(f"[eval] {self.done}/{self.total} rows ({what}) {el:.0f}s elapsed, ETA {eta:.0f}s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def method_label(method: str, name: str) -> str:
    return f"{baselines.METHOD_TITLES[method]} ({name})"


def evaluate(opts: EvalOptions, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or continue) an evaluation and write its report. Returns {"records", "paths", "config"}."""
    out = Path(opts.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = baselines.check_methods(opts.methods)
    src = resolve_model(opts.model, out)
    cfg = eval_config(src, opts.overrides)
    name = opts.name or src.label
    selected: dict[str, list[QARow]] = {}
    ds_info: dict[str, Any] = {}
    for spec in opts.datasets:
        ds, path = resolve_dataset(spec)
        rows = load_qa(path, skip_invalid=cfg.data.skip_invalid_rows)
        selected[ds] = select_subset(rows, opts.limit, opts.seed, ds)
        ds_info[ds] = {"path": str(path), "rows_in_file": len(rows), "evaluated": len(selected[ds]),
                       "ids_sha256": ids_digest(selected[ds])}
    fp = fingerprint(cfg, src, opts.noise_prob)
    old = _check_fingerprint(out / CONFIG_JSON, fp)
    batch_size = opts.batch_size or cfg.data.val_batch_size
    conf = {"name": name, "model": {"given": src.given, "kind": src.kind, "hf_dir": str(src.hf_dir),
                                    "run_config": str(src.run_config) if src.run_config else None},
            "fingerprint": fp, "methods": methods, "datasets": ds_info, "limit": opts.limit, "seed": opts.seed,
            "batch_size": batch_size, "subset_protocol": "zerosearch.eval.subsets", "command": sys.argv,
            "history": old.get("history", []) + [time.strftime("%Y-%m-%dT%H:%M:%S")],
            "config": json.loads(json.dumps(asdict(cfg), default=str))}
    (out / CONFIG_JSON).write_text(json.dumps(conf, indent=1))

    traj_path = out / store.TRAJECTORIES
    existing = store.read_rows(traj_path, repair=True)
    done = {store.row_key(d) for d in existing}
    if len(done) != len(existing):
        raise ValueError(f"{traj_path} holds a row more than once; it was not written by this harness alone")
    pending = {(m, ds): [r for r in rows if (m, ds, r.id) not in done] for m in methods for ds, rows in selected.items()}
    total = sum(len(v) for v in pending.values())
    if existing:
        log(f"[eval] resuming in {out}: {len(existing)} rows on disk, {total} to go")
    if total:
        search_errors = _generate(cfg, pending, batch_size, opts, traj_path, total, log)
        if search_errors:
            log(f"[eval] warning: {search_errors} searches failed and got the fallback document (see 'error' in "
                f"the rows' documents of {traj_path})")
    return write_results(out, cfg, methods, selected, name)


def _generate(cfg: ZeroSearchConfig, pending: dict[tuple[str, str], list[QARow]],
              batch_size: int, opts: EvalOptions, traj_path: Path, total: int, log: Callable[[str], None]) -> int:
    from zerosearch.reward import run_scorer
    from zerosearch.rollout.agent_loop import AgentLoop
    from zerosearch.search.factory import build_search_engine
    from zerosearch.trainer import validation

    engine, tok = build_generation(cfg)
    wanted = any(baselines.uses_search(m) and rows for (m, _), rows in pending.items())
    search: SearchEngine = RecordingSearch(build_search_engine(cfg, role="eval")) if wanted else NoSearch()
    score_fn = run_scorer(cfg)  # the trainer's scorer, so the scores are validation's
    progress = Progress(total, opts.progress, log)
    n_batch = 0
    try:
        for (method, ds), rows in pending.items():
            loop = AgentLoop(engine, search, tok, baselines.rollout_config(method, cfg.rollout))
            for s in range(0, len(rows), batch_size):
                chunk = rows[s:s + batch_size]
                items = baselines.build_items(method, chunk, tok, cfg, search)
                _, results, _ = validation.run_validation(loop, items, len(items), score_fn, cfg.rollout.val_temperature,
                                                          noise_prob=opts.noise_prob, step=0, seed=cfg.trainer.seed)
                lines = []
                for it, r in zip(items, results):
                    calls = search.pop(f"{r.row_id}#0") if isinstance(search, RecordingSearch) else []
                    if method == "rag":  # its one retrieval happened before the loop: count it as the row's search
                        r = replace(r, searches=len(calls))
                    lines.append(store.row_to_json(method, ds, r, tok.decode(it.prompt_ids), calls))
                store.append_rows(traj_path, lines)
                n_batch += 1
                failpoint("eval_after_batch", n_batch)  # crash tests: killed with this batch on disk
                progress.update(len(chunk), f"{method}/{ds}")
    finally:
        progress.close()
        search.close()
        close = getattr(engine, "close", None)
        if close is not None:
            close()
    return search.errors if isinstance(search, RecordingSearch) else 0


def write_results(out: Path, cfg: ZeroSearchConfig, methods: Sequence[str], selected: dict[str, list[QARow]],
                  name: str) -> dict[str, Any]:
    """Check that every selected row is on disk exactly once, then write results.csv / .md / .png."""
    rows = store.read_rows(out / store.TRAJECTORIES)
    wanted = {(m, ds, r.id) for m in methods for ds, rs in selected.items() for r in rs}
    groups: dict[str, dict[str, list[RowResult]]] = {method_label(m, name): {} for m in methods}
    seen: set[tuple[str, str, str]] = set()
    for d in rows:
        key = store.row_key(d)
        if key not in wanted:
            continue  # a row of another --limit / --seed / dataset choice made in this folder
        if key in seen:
            raise ValueError(f"row {key} appears twice in {out / store.TRAJECTORIES}")
        seen.add(key)
        method, ds, r = store.row_from_json(d)
        groups[method_label(method, name)].setdefault(ds, []).append(r)
    missing = wanted - seen
    if missing:
        raise RuntimeError(f"{len(missing)} selected rows are not in {out / store.TRAJECTORIES} (first: {sorted(missing)[0]})")
    recs = report.records(groups)
    s = cfg.search
    engine = s.eval_engine
    if engine in ("retrieval", "wiki"):
        where = f"server {s.retrieval.url}" if s.retrieval.url else f"{s.retrieval.method} over {s.retrieval.corpus_path}"
        engine = f"retrieval ({where})"
    header = (f"Model `{cfg.model.path}`; search engine: {engine}, top-{s.topk}; "
              f"{'greedy' if cfg.rollout.val_temperature <= 0 else f'temperature {cfg.rollout.val_temperature}'} decoding; "
              f"up to {cfg.rollout.max_turns} searches; reward {cfg.reward.score}. Rows per dataset: "
              + ", ".join(f"{ds} {len(rs)}" for ds, rs in selected.items()) + ".")
    paths = report.write_report(out, recs, header)
    return {"records": recs, "paths": paths, "config": cfg}
