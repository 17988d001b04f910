"""Fast tests of the evaluation pieces: --rescore against the reference traces, the subset protocol, the
trajectories store, the report and --compare, the KEY value launcher, and checkpoint conversion."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import pytest

from zerosearch.data.qa import QARow
from zerosearch.eval import report, store
from zerosearch.eval.launch import to_argv
from zerosearch.eval.rescore import rescore
from zerosearch.testing.tiny_models import make_tiny_model
from zerosearch.eval.scoring import RowResult
from zerosearch.eval.subsets import BENCHMARKS, parse_datasets, resolve_dataset, select_subset, subset_positions
from zerosearch.config.launch_keys import LaunchError

TRACES = "traces/search_r1_eval_traces.jsonl"


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------------------------------------- rescore
def test_rescore_reproduces_the_reference_means(shared_data, tmp_path):
    src = shared_data / TRACES
    ref: dict[str, list[list[float]]] = defaultdict(lambda: [[], [], []])
    for line in src.read_text().splitlines():
        d = json.loads(line)
        for i, k in enumerate(("em", "acc", "f1")):
            ref[d["dataset"]][i].append(float(d["metric_score"][k]))
    rescore(src, tmp_path, log=lambda s: None)
    rows = _csv(tmp_path / "results.csv")
    by_ds = {r["dataset"]: r for r in rows}
    assert set(by_ds) == {*ref, "overall", "average"}
    for ds, (em, acc, f1) in ref.items():
        r = by_ds[ds]
        assert int(r["rows"]) == len(em)
        assert abs(float(r["em"]) - sum(em) / len(em)) < 1e-4, ds
        assert abs(float(r["cover_em"]) - sum(acc) / len(acc)) < 1e-4, ds
        assert abs(float(r["f1"]) - sum(f1) / len(f1)) < 1e-4, ds
    n = sum(len(v[0]) for v in ref.values())
    assert int(by_ds["overall"]["rows"]) == n == 5375
    all_acc = sum(sum(v[1]) for v in ref.values()) / n
    assert abs(float(by_ds["overall"]["cover_em"]) - all_acc) < 1e-4
    # the rescored rows are in the harness's layout, so they can be rescored again: same numbers
    again = tmp_path / "again"
    rescore(tmp_path / store.TRAJECTORIES, again, log=lambda s: None)
    assert _csv(again / "results.csv") == rows
    assert "| search_r1_eval_traces | 38.9 | 55.2 | 32.5 | 19.7 | 36.6 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.png").stat().st_size > 1000


def test_rescore_rejects_other_overrides(tmp_path):
    from zerosearch.config.validate import ConfigError

    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"dataset": "nq", "question": "q", "golden_answers": ["a"], "response": "<answer>a</answer>"}) + "\n")
    with pytest.raises(ConfigError, match="reward"):
        rescore(f, tmp_path / "o", ["rollout.max_turns=2"], log=lambda s: None)
    res = rescore(f, tmp_path / "o", ["reward.score=em"], log=lambda s: None)
    assert res["records"][0]["reward"] == 1.0


def test_validation_scores_with_the_eval_scoring_path():
    from zerosearch.eval import scoring
    from zerosearch.trainer import validation

    assert validation.score_trajectory is scoring.score_trajectory
    assert validation.summarize is scoring.summarize


# ---------------------------------------------------------------------------------------------- subsets
def _rows(n: int) -> list[QARow]:
    return [QARow(f"x/{i}", f"q{i}", ("a",), "x") for i in range(n)]


def test_subset_is_fixed_nested_and_in_file_order():
    rows = _rows(50)
    a = select_subset(rows, 10, 0, "nq")
    assert a == select_subset(rows, 10, 0, "nq")  # fixed
    assert [r.id for r in a] == sorted((r.id for r in a), key=lambda s: int(s.split("/")[1]))  # file order
    assert set(a) <= set(select_subset(rows, 20, 0, "nq"))  # a larger limit extends a smaller one
    assert a != select_subset(rows, 10, 1, "nq") and a != select_subset(rows, 10, 0, "hotpotqa")
    assert select_subset(rows, 50, 0, "nq") == rows == select_subset(rows, None, 0, "nq")
    assert subset_positions(5, 2, 0, "bamboogle") == subset_positions(5, 2, 0, "bamboogle")
    with pytest.raises(ValueError, match="limit"):
        subset_positions(5, 0, 0, "nq")


def test_the_seven_benchmarks_resolve_by_name(shared_data):
    assert parse_datasets("all") == list(BENCHMARKS)
    assert parse_datasets(["nq,bamboogle", "nq"]) == ["nq", "bamboogle"]
    for name in BENCHMARKS:
        ds, path = resolve_dataset(name)
        assert ds == name and path.is_file()
    with pytest.raises(ValueError, match="neither a benchmark"):
        resolve_dataset("no_such_benchmark")


# ---------------------------------------------------------------------------------------------- store
def _row(i: int, method: str = "agent", ds: str = "nq") -> dict:
    r = RowResult(f"nq/{i}", "nq", "q", ("a",), "a", 1.0, 1.0, 1.0, 1.0, 1, "<answer>a</answer>", 2)
    return store.row_to_json(method, ds, r, "prompt", [])


def test_store_drops_a_torn_last_line_and_round_trips(tmp_path):
    p = tmp_path / store.TRAJECTORIES
    store.append_rows(p, [_row(0), _row(1)])
    with open(p, "a") as f:
        f.write('{"method": "agent", "dataset": "nq", "id": "nq/2", "quest')  # killed mid-write
    assert [d["id"] for d in store.read_rows(p, repair=True)] == ["nq/0", "nq/1"]
    assert p.read_text().endswith("\n") and len(p.read_text().splitlines()) == 2
    m, ds, r = store.row_from_json(store.read_rows(p)[0])
    assert (m, ds, r.row_id, r.golden_answers, r.turns) == ("agent", "nq", "nq/0", ("a",), 2)
    p.write_text("not json\n" + json.dumps(_row(3)) + "\n")
    with pytest.raises(ValueError, match="line 1"):
        store.read_rows(p)


# ---------------------------------------------------------------------------------------------- report
def test_report_layout_and_compare(tmp_path):
    rows = [store.row_from_json(_row(i))[2] for i in range(3)]
    wrong = RowResult("hotpotqa/0", "hotpotqa", "q", ("b",), None, 0.0, 0.0, 0.0, 0.0, 0, "", 1, True)
    recs = report.records({"Agent (m)": {"nq": rows, "hotpotqa": [wrong]}})
    by = {(r["method"], r["dataset"]): r for r in recs}
    assert by[("Agent (m)", "overall")]["rows"] == 4 and by[("Agent (m)", "overall")]["cover_em"] == 0.75
    assert by[("Agent (m)", "average")]["cover_em"] == 0.5  # the paper's Avg.: mean over datasets
    assert by[("Agent (m)", "hotpotqa")]["truncated"] == 1
    a, b = tmp_path / "a", tmp_path / "b"
    report.write_report(a, recs)
    report.write_report(b, report.records({"Direct (m)": {"nq": [wrong]}}))
    md = (a / "results.md").read_text()
    assert "| Method | NQ | HotpotQA | Avg. |" in md and "| Agent (m) | 100.0 | 0.0 | 50.0 |" in md
    paths = report.compare([a, b], tmp_path / "ab")
    merged = _csv(paths["csv"])
    assert {r["method"] for r in merged} == {"Agent (m)", "Direct (m)"}
    assert "| Direct (m) | 0.0 | - | 0.0 |" in paths["md"].read_text()


# ---------------------------------------------------------------------------------------------- launcher
def test_eval_launcher_maps_keys(tmp_path):
    make_tiny_model(tmp_path / "m")  # MODEL_PATH is checked: a model folder with weights and a tokenizer
    argv = to_argv(["MODEL_PATH", str(tmp_path / "m"), "OUTPUT_DIR", str(tmp_path / "o"), "DATASETS", "nq,bamboogle",
                    "LIMIT", "5", "METHODS", "agent,rag", "SEARCH_ENGINE", "wiki", "TOPK", "3", "rollout.max_turns=2"])
    assert argv[:4] == ["--model", str(tmp_path / "m"), "--out", str(tmp_path / "o")]
    assert argv[4:10] == ["--datasets", "nq,bamboogle", "--limit", "5", "--methods", "agent,rag"]
    # SEARCH_ENGINE wiki without RETRIEVAL_URL or CORPUS_PATH: ZeroSearch's retriever, as for training
    assert argv[10:] == ["search.eval_engine=retrieval", "search.topk=3", "search.retrieval.protocol=zerosearch",
                         "rollout.max_turns=2"]
    with pytest.raises(LaunchError, match="OUTPUT_DIR is required"):
        to_argv(["MODEL_PATH", str(tmp_path / "m")])
    with pytest.raises(LaunchError, match="did you mean LIMIT"):
        to_argv(["LIMT", "3"])


# ---------------------------------------------------------------------------------------------- checkpoints
def test_checkpoint_folder_converts_to_the_runs_model(tmp_path):
    import torch
    import torch.distributed.checkpoint as dcp
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from zerosearch.config.schema import ZeroSearchConfig
    from zerosearch.eval.models import eval_config, resolve_model
    from zerosearch.testing.tiny_models import TinySpec, build_model, build_tokenizer

    tok = build_tokenizer(tmp_path / "base", vocab_size=300)
    spec = TinySpec(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1, intermediate_size=64)
    build_model(tmp_path / "base", tok, spec)
    trained = build_model(tmp_path / "other", tok, TinySpec(**{**spec.__dict__, "seed": 5}))
    run = tmp_path / "run"
    ckpt = run / "checkpoints" / "step_000002"
    ckpt.mkdir(parents=True)
    cfg = OmegaConf.structured(ZeroSearchConfig)
    cfg.model.path = str(tmp_path / "base")
    cfg.data.prompt_template = "compact"
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    # the trainer's layout: {"actor": {"model", "optim", "scheduler"}}; tied lm_head is not stored
    sd = {k: v for k, v in trained.state_dict().items() if k != "lm_head.weight"}
    dcp.save({"actor": {"model": sd, "optim": {"state": {}}, "scheduler": {"last_epoch": 2}}},
             checkpoint_id=str(ckpt / "workers"), no_dist=True)
    (ckpt / "trainer_state.json").write_text("{}")
    src = resolve_model(ckpt, tmp_path / "out")
    assert src.kind == "checkpoint" and src.run_config == run / "config.yaml"
    got = AutoModelForCausalLM.from_pretrained(src.hf_dir).state_dict()
    for k, v in trained.state_dict().items():
        assert torch.equal(got[k], v), k
    assert resolve_model(ckpt, tmp_path / "out").hf_dir == src.hf_dir  # converted once
    ecfg = eval_config(src, ["search.retrieval.corpus_path=/x"])
    assert ecfg.data.prompt_template == "compact" and ecfg.model.path == str(src.hf_dir)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model(tmp_path / "missing", tmp_path / "out")
