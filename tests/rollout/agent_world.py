"""The world of the agent-loop tests (test_agent_loop.py, test_agent_loop_async.py): a real tiny model, the
real HF engine and real BM25 search. To get specific (good and bad) model outputs from a *real* model, the
fixture overfits the tiny model on chosen responses with the framework's own SFT step; greedy decoding then
reproduces them. The `world` fixture (tests/rollout/conftest.py) is session-scoped: fitted once per run.
"""

from __future__ import annotations

import json

import torch

from zerosearch.config.schema import RolloutConfig
from zerosearch.generation.hf_engine import HFEngine
from zerosearch.rollout.actions import parse_action
from zerosearch.rollout.types import PromptItem
from zerosearch.search.formatting import format_observation
from zerosearch.search.retrieval import RetrievalEngine
from zerosearch.search.types import SearchRequest
from zerosearch.simulator.sft import SFTExample, SFTRunner
from zerosearch.testing.tiny_models import make_tiny_model

CORPUS = [
    {"id": "0", "contents": '"Alvora"\nAlvora is a country whose capital is Bemtis.'},
    {"id": "1", "contents": '"Corrun"\nCorrun is a country whose capital is Dalvek.'},
    {"id": "2", "contents": '"Esk"\nEsk is a river in the north.'},
]
MAX_OBS = 40
# prompt -> list of policy turns; between turns the loop inserts the real observation
SCRIPTS = {
    "Q1 search then answer?": ["<search> Alvora </search>", "<answer> Bemtis </answer><|im_end|>"],
    "Q2 answer at once?": ["<answer> Dalvek </answer><|im_end|>"],
    "Q3 unclosed tag?": ["<search> Alvora<|im_end|>"],
    "Q4 empty query?": ["<search>  </search>"],
    "Q5 tags in query?": ["<search> Corrun <answer> x </search>", "<answer> Dalvek </answer><|im_end|>"],
    "Q6 search twice?": ["<search> Alvora </search>", "<search> Corrun </search>", "<answer> Dalvek </answer><|im_end|>"],
}


def _loop_cfg(**kw) -> RolloutConfig:
    return RolloutConfig(**{"max_turns": 3, "max_response_length": 32, "max_obs_length": MAX_OBS,
                              "max_total_length": 512, **kw})


def build_agent_world(root):
    """Yields {"tok", "engine", "search"}; closes the search engine afterwards."""
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    search = RetrievalEngine(str(corpus), topk=1)
    texts = list(SCRIPTS) + [t for turns in SCRIPTS.values() for t in turns] + [r["contents"] for r in CORPUS]
    model_dir = make_tiny_model(root / "model", "tiny", texts=texts * 5)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    examples = []
    for prompt, turns in SCRIPTS.items():
        ids, mask = enc(prompt), [0] * len(enc(prompt))
        for i, turn in enumerate(turns):
            t_ids = enc(turn)
            ids, mask = ids + t_ids, mask + [1] * len(t_ids)
            action, _ = parse_action(turn)
            if i + 1 < len(turns) and action.kind == "search":
                res = search.search([SearchRequest(query=action.content)])[0]
                o_ids = enc(format_observation(res.documents, enc, MAX_OBS))
                ids, mask = ids + o_ids, mask + [0] * len(o_ids)
        examples.append(SFTExample(ids, mask))
    torch.manual_seed(0)
    SFTRunner(model, tok.pad_token_id, lr=1e-2, total_steps=250, batch_size=len(examples), warmup_steps=10,
              schedule="constant").train(examples, log_every=0)
    model.eval()
    yield {"tok": tok, "engine": HFEngine(model, tok), "search": search}
    search.close()


def _items(tok, prompts) -> list[PromptItem]:
    return [PromptItem(tok.encode(p, add_special_tokens=False), f"row{i}", p, ("Bemtis", "Dalvek"), "test")
            for i, p in enumerate(prompts)]
