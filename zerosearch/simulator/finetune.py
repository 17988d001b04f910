"""Fine-tuning a simulation LLM the ZeroSearch way.

1. Collect (query, documents) pairs from a real search engine: for each QA row, the query an agent would
   issue (the question itself, a field of the row, or the <search> queries of recorded agent trajectories)
   is sent to the engine (e.g. BM25 over a corpus).
2. Label each set useful or noisy: useful when its documents contain a gold answer of the row (ZeroSearch
   asked an LLM to judge; answer containment is the judge here, stated in the report). Noisy examples are
   documents retrieved for the row's query, or for another row's query, that hold no gold answer.
3. Supervised fine-tuning with the *same* prompt templates the trainer sends at run time (configs/prompts;
   default family simulate_sft_all_answers, which states top-k and the word count, so it fits any top-k;
   the toy simulator is trained on it) as input and the documents ("Doc 1: ...") as target; the loss is on the target.
4. Measure the result on held-out rows: the share of its useful outputs that contain the answer and the
   share of its noisy outputs that do (the second should be low).

Works on any corpus + QA set and any causal LM; `scripts/train_simulator.py` is the command line.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from zerosearch.search.sim_parsing import parse_documents
from zerosearch.search.sim_prompts import PromptSet, SimPrompt, chat_messages
from zerosearch.search.types import Document, SearchEngine, SearchRequest
from zerosearch.utils.text import contains_answer
from zerosearch.simulator.sft import SFTExample


@dataclass
class SimRow:
    """One training pair for the simulator: the prompt's inputs and the documents to write."""

    query: str
    question: str
    answers: list[str]
    documents: list[Document]
    noisy: bool


def _words(text: str, n: int) -> str:
    w = text.split()
    return " ".join(w[:n])


def target_text(docs: Sequence[Document], words: int) -> str:
    """The simulator's target: `Doc 1: (Title: t) text` lines, each text cut to `words` words."""
    return "\n".join(f"Doc {i + 1}: (Title: {d.title}) {_words(d.text, words)}" for i, d in enumerate(docs))


def collect_rows(rows: Sequence[tuple[str, str, Sequence[str]]], engine: SearchEngine, topk: int,
                 noisy_share: float = 0.5, seed: int = 0, batch: int = 256) -> list[SimRow]:
    """Query the engine and label the results.

    Args:
        rows: (query, question, gold answers) triples.
        engine: a real search engine; give it a larger top-k than `topk` so that answer-free documents of
            the same query are found for the noisy examples.
        topk: documents per example.
        noisy_share: target share of noisy examples (the rest useful), as far as the data allows.
    Returns:
        labelled examples; each row yields a useful example when its results contain an answer, and with
        probability noisy_share a noisy one (its own answer-free results, or another row's).
    """
    rng = random.Random(seed)
    results: list[list[Document]] = []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        res = engine.search([SearchRequest(query=q, row_id=f"sim-{s + i}") for i, (q, _, _) in enumerate(chunk)])
        results.extend(r.documents for r in res)
    out: list[SimRow] = []
    for i, ((query, question, answers), ranked) in enumerate(zip(rows, results)):
        docs = ranked[:topk]
        if any(contains_answer(d.text, answers) for d in docs):
            out.append(SimRow(query, question, list(answers), docs, noisy=False))
        if rng.random() < noisy_share:
            # answer-free documents: this query's own results (the engine returns more than topk) that lack
            # the answer, topped up from other rows' results
            noisy_docs = [d for d in ranked if not contains_answer(d.text, answers)]
            for _ in range(10):
                if len(noisy_docs) >= topk:
                    break
                other = results[rng.randrange(len(results))]
                noisy_docs += [d for d in other if not contains_answer(d.text, answers) and d not in noisy_docs]
            if noisy_docs:
                out.append(SimRow(query, question, list(answers), noisy_docs[:topk], noisy=True))
    rng.shuffle(out)
    return out


def render_chat(tokenizer: Any, prompt: str | SimPrompt) -> list[int]:
    """The prompt ids exactly as the simulator sees them at run time (chat template + generation prompt,
    the family's system message included)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(chat_messages(prompt), tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(prompt.user if isinstance(prompt, SimPrompt) else prompt, add_special_tokens=False)


def sft_examples(sim_rows: Sequence[SimRow], tokenizer: Any, prompts: PromptSet, topk: int, words: int,
                 max_length: int | None = None) -> list[SFTExample]:
    """Prompt ids (loss 0) + target documents and end-of-turn (loss 1)."""
    eos = tokenizer.eos_token_id
    out = []
    for r in sim_rows:
        prompt = prompts.prompt(noisy=r.noisy, query=r.query, question=r.question, answers=r.answers, topk=topk,
                                words=words)
        p_ids = render_chat(tokenizer, prompt)
        t_ids = tokenizer.encode(target_text(r.documents, words), add_special_tokens=False) + [eos]
        ids = p_ids + t_ids
        if max_length and len(ids) > max_length:
            continue
        out.append(SFTExample(ids, [0] * len(p_ids) + [1] * len(t_ids)))
    return out


def evaluate_simulator(generate: Callable[[list[SimPrompt]], list[str]], sim_rows: Sequence[SimRow], prompts: PromptSet,
                       topk: int, words: int) -> dict[str, float]:
    """Ask the simulator for useful and for noisy documents on held-out rows; report how often each
    contains a gold answer (useful should, noisy should not) and how often its output parsed."""
    useful_prompts = [prompts.prompt(noisy=False, query=r.query, question=r.question, answers=r.answers, topk=topk,
                                     words=words) for r in sim_rows]
    noisy_prompts = [prompts.prompt(noisy=True, query=r.query, question=r.question, answers=r.answers, topk=topk,
                                    words=words) for r in sim_rows]
    useful_out, noisy_out = generate(useful_prompts), generate(noisy_prompts)

    def share(texts: list[str]) -> tuple[float, float]:
        hit = parsed = 0
        for r, t in zip(sim_rows, texts):
            docs = parse_documents(t, topk)
            parsed += bool(docs)
            hit += any(contains_answer(d.text, r.answers) for d in docs)
        n = max(len(texts), 1)
        return hit / n, parsed / n

    u_hit, u_parsed = share(useful_out)
    n_hit, n_parsed = share(noisy_out)
    return {"useful_has_answer": u_hit, "noisy_has_answer": n_hit, "useful_parsed": u_parsed,
            "noisy_parsed": n_parsed, "n": float(len(sim_rows))}


def queries_for(rows: Sequence[Any], query_field: str | None) -> list[tuple[str, str, Sequence[str]]]:
    """(query, question, answers) per QA row: the row's `query_field` (from its extra fields) as the query,
    or the question itself."""
    out = []
    for r in rows:
        q = r.extra.get(query_field) if query_field else r.question
        if not q:
            raise ValueError(f"row {r.id!r} has no field {query_field!r} to use as the query")
        out.append((str(q), r.question, list(r.golden_answers)))
    return out


def train_simulator(*, base_model: str, out_dir: str | Path, corpus: str, qa_files: Sequence[str],
                    query_field: str | None = None, family: str = "simulate_sft_all_answers", prompt_dir: str | None = None,
                    topk: int = 1, words: int = 40, steps: int = 600, batch_size: int = 32, lr: float = 3e-3,
                    max_rows: int | None = None, eval_rows: int = 200, max_length: int = 512,
                    temperature: float = 0.8, max_tokens: int = 96, seed: int = 0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """The whole pipeline: collect, label, fine-tune, measure. Saves the simulator (model + tokenizer) and
    `simulator_report.json` into out_dir and returns the report."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zerosearch.data.qa import load_qa
    from zerosearch.search.retrieval import RetrievalEngine
    from zerosearch.generation.types import SamplingParams
    from zerosearch.search.sim_transports import InProcessTransport
    from zerosearch.simulator.sft import SFTRunner

    t0 = time.perf_counter()
    rows = [r for f in qa_files for r in load_qa(f)]
    random.Random(seed).shuffle(rows)
    if max_rows:
        rows = rows[:max_rows + eval_rows]
    if len(rows) <= eval_rows:
        raise ValueError(f"need more than eval_rows={eval_rows} QA rows, got {len(rows)}")
    triples = queries_for(rows, query_field)
    with RetrievalEngine(corpus, topk=topk + 4) as engine:
        sim_rows = collect_rows(triples[eval_rows:], engine, topk, seed=seed)
        eval_sim = collect_rows(triples[:eval_rows], engine, topk, noisy_share=0.0, seed=seed + 1)
    n_noisy = sum(r.noisy for r in sim_rows)
    log(f"[simulator] {len(sim_rows)} training examples ({len(sim_rows) - n_noisy} useful, {n_noisy} noisy) "
        f"from {len(triples) - eval_rows} rows; {len(eval_sim)} held-out rows for evaluation")
    prompts = PromptSet.load(family, prompt_dir)
    tok = AutoTokenizer.from_pretrained(base_model, padding_side="left")
    examples = sft_examples(sim_rows, tok, prompts, topk, words, max_length)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    runner = SFTRunner(model, tok.pad_token_id, lr=lr, total_steps=steps, batch_size=batch_size,
                       warmup_steps=min(50, steps // 10), seed=seed)
    history = runner.train(examples, log_every=max(1, steps // 5), log=log)
    out = runner.save(out_dir, tok)
    transport = InProcessTransport(str(out), batch_size=64, seed=seed)
    sampling = SamplingParams(temperature=temperature, max_new_tokens=max_tokens, stop_strings=(f"Doc {topk + 1}",))
    quality = evaluate_simulator(lambda ps: transport.generate(ps, sampling), eval_sim, prompts, topk, words)
    transport.close()
    report = {"base_model": base_model, "family": family, "examples": len(examples), "useful": len(sim_rows) - n_noisy,
              "noisy": n_noisy, "steps": steps, "final_loss": history[-1]["loss"], "heldout": quality,
              "judge": "answer containment (a gold answer in the documents) stands in for ZeroSearch's LLM judge",
              "wall_time_s": time.perf_counter() - t0}
    write_report(Path(out) / "simulator_report.json", report)
    log(f"[simulator] held-out: useful outputs contain the answer {quality['useful_has_answer']:.1%}, "
        f"noisy outputs {quality['noisy_has_answer']:.1%} ({quality['n']:.0f} rows)")
    return report


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(report, indent=1, default=str))
