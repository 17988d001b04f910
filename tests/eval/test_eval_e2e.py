"""End to end on CPU: a tiny agent (taught to search) over all seven benchmark files (--limit 2) and the wiki-18
passages, the agent and the three baselines, with BM25 in process (through the CLI, killed with SIGKILL and
resumed) and through a real retrieval server subprocess."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from server_process import running_server
from eval_fixtures import teach_constant_search

from zerosearch.eval import store
from zerosearch.eval.harness import EvalOptions, evaluate
from zerosearch.eval.subsets import BENCHMARKS, resolve_dataset, select_subset
from zerosearch.data.qa import load_qa
from zerosearch.search.index import open_index
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

REPO = Path(__file__).resolve().parents[2]
WIKI = "corpus/wiki18_passages_searchr1_traces.jsonl"
METHODS = ["agent", "direct", "cot", "rag"]
LIMIT = 2
BUDGETS = ["data.prompt_template=compact", "data.max_prompt_length=400", "rollout.max_turns=1",
           "rollout.max_response_length=12", "rollout.max_obs_length=64", "rollout.max_total_length=600",
           "search.topk=2"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, shared_data):
    """A tiny agent that searches, the seven subsets, and one BM25 index of the corpus."""
    root = tmp_path_factory.mktemp("eval_e2e")
    subsets = {ds: select_subset(load_qa(resolve_dataset(ds)[1]), LIMIT, 0, ds) for ds in BENCHMARKS}
    questions = [r.question for rows in subsets.values() for r in rows]
    model = make_tiny_model(root / "agent", TinySpec(vocab_size=700, hidden_size=64, num_layers=1, num_heads=2,
                                                     num_kv_heads=1, intermediate_size=128))
    teach_constant_search(model, questions)
    index_dir = root / "bm25"
    open_index(shared_data / WIKI, "bm25", index_dir=index_dir).close()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model on a shared 2-core machine: a spinning thread pool only costs
    yield {"model": model, "index_dir": index_dir, "corpus": shared_data / WIKI, "root": root,
           "rows": {ds: len(rs) for ds, rs in subsets.items()}}
    torch.set_num_threads(threads)


def _check_complete(out: Path, rows_per_ds: dict[str, int]) -> list[dict]:
    rows = store.read_rows(out / store.TRAJECTORIES)
    keys = Counter(store.row_key(d) for d in rows)
    assert max(keys.values()) == 1, "a row was written twice"
    assert len(rows) == len(METHODS) * sum(rows_per_ds.values())
    with open(out / "results.csv") as f:
        recs = {(r["method"], r["dataset"]): r for r in csv.DictReader(f)}
    for m in ("Agent", "Direct", "CoT", "RAG"):
        for ds, n in rows_per_ds.items():
            assert int(recs[(f"{m} (agent)", ds)]["rows"]) == n
        assert int(recs[(f"{m} (agent)", "overall")]["rows"]) == sum(rows_per_ds.values())
    for name in ("results.md", "results.png", "config.json"):
        assert (out / name).stat().st_size > 0
    return rows


def test_cli_local_bm25_killed_and_resumed(world, tmp_path):
    out = tmp_path / "local"
    cmd = [sys.executable, "-m", "zerosearch.eval", "--model", str(world["model"]), "--out", str(out),
           "--datasets", "all", "--limit", str(LIMIT), "--methods", ",".join(METHODS), "--no-progress",
           "search.eval_engine=retrieval", f"search.retrieval.corpus_path={world['corpus']}",
           f"search.retrieval.index_dir={world['index_dir']}", *BUDGETS]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ZS_FAILPOINT": "eval_after_batch:9"}
    first = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == -9, first.stderr[-2000:]
    assert len(store.read_rows(out / store.TRAJECTORIES)) == 9 * LIMIT  # 9 batches of one dataset's 2 rows
    with open(out / store.TRAJECTORIES, "a") as f:
        f.write('{"method": "cot", "dataset": "nq", "id": "nq/')  # as if killed in the middle of a write
    env.pop("ZS_FAILPOINT")
    second = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "resuming" in second.stdout and second.stdout.strip().endswith("results.md")
    rows = _check_complete(out, world["rows"])
    agent = [d for d in rows if d["method"] == "agent"]
    assert sum(d["searches"] for d in agent) > 0  # the taught agent really searched the corpus
    assert all(d["documents"] and d["documents"][0]["documents"] for d in agent if d["searches"])
    assert all(d["searches"] == 0 for d in rows if d["method"] in ("direct", "cot"))
    assert all(d["searches"] == 1 and "<information>" in d["prompt"] for d in rows if d["method"] == "rag")
    # the same evaluation again: every row is on disk, so nothing is generated (no model is even loaded)
    res = evaluate(EvalOptions(model=str(world["model"]), out_dir=out, datasets=list(BENCHMARKS), methods=METHODS,
                               limit=LIMIT, progress=False, overrides=cmd[cmd.index("search.eval_engine=retrieval"):]),
                   log=lambda s: None)
    assert len(store.read_rows(out / store.TRAJECTORIES)) == len(rows) and res["records"]


def test_retrieval_server_subprocess(world, tmp_path):
    from server_process import free_port

    port = free_port()
    cmd = [sys.executable, "-m", "zerosearch.search.retrieval_server", "--corpus", str(world["corpus"]),
           "--index-dir", str(world["index_dir"]), "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    with running_server(cmd, url, tmp_path / "server.log", 120, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO):
        res = evaluate(EvalOptions(model=str(world["model"]), out_dir=tmp_path / "server", datasets=list(BENCHMARKS),
                                   methods=METHODS, limit=LIMIT, progress=False,
                                   overrides=["search.eval_engine=retrieval", f"search.retrieval.url={url}/retrieve",
                                              *BUDGETS]), log=lambda s: None)
    rows = _check_complete(tmp_path / "server", world["rows"])
    assert json.loads((tmp_path / "server" / "config.json").read_text())["fingerprint"]["search"]["retrieval"]["kind"] == "server"
    searched = [d for d in rows if d["searches"]]
    assert searched and all(c["error"] is None and c["documents"] for d in searched for c in d["documents"])
    assert res["records"][-1]["dataset"] == "average"


def test_infer_prints_the_trajectory_turn_by_turn(world, capsys):
    from zerosearch.infer import main

    rc = main(["--model", str(world["model"]), "--question", "What is the capital of France?", "--answer", "Paris",
               "search.eval_engine=retrieval", f"search.retrieval.corpus_path={world['corpus']}",
               f"search.retrieval.index_dir={world['index_dir']}", *BUDGETS])
    out = capsys.readouterr().out
    assert rc == 0
    assert "--- turn 1 ---\n<search> capital" in out  # the taught search
    assert "--- search results after turn 1 ---" in out and "Doc 1(Title:" in out  # BM25's documents
    assert "=== answer:" in out and "1 searches" in out and "cover-EM" in out


@pytest.mark.vllm
def test_vllm_engine_gives_the_hf_engines_first_turns(world, tmp_path):
    """The same evaluation through vLLM's offline engine (CPU backend: head size 32) and through transformers:
    every row scored, and greedy first turns (the taught search) identical."""
    from zerosearch.rollout.actions import split_response

    common = dict(model=str(world["model"]), datasets=["bamboogle", "nq"], methods=["agent"], limit=LIMIT,
                  progress=False)
    ov = ["search.eval_engine=retrieval", f"search.retrieval.corpus_path={world['corpus']}",
          f"search.retrieval.index_dir={world['index_dir']}", *BUDGETS]
    firsts = {}
    for engine in ("hf", "vllm"):
        extra = ["rollout.engine=vllm", "rollout.gpu_memory_utilization=0.1", "rollout.enforce_eager=true"] \
            if engine == "vllm" else []
        evaluate(EvalOptions(out_dir=tmp_path / engine, overrides=ov + extra, **common), log=lambda s: None)
        rows = store.read_rows(tmp_path / engine / store.TRAJECTORIES)
        assert len(rows) == 2 * LIMIT
        firsts[engine] = {d["id"]: split_response(d["response"])[0].text for d in rows}
    assert firsts["vllm"] == firsts["hf"]
