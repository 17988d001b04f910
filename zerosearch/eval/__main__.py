"""`python -m zerosearch.eval`: the paper's table for a model, with any search engine.

    # the agent and the three baselines on 500-question subsets of the seven benchmarks, BM25 over a corpus
    python -m zerosearch.eval --model outputs/run/actor_hf --out eval/run --datasets all --limit 500 \\
        --methods agent,direct,cot,rag search.eval_engine=retrieval search.retrieval.corpus_path=wiki18.jsonl

    # a retrieval server, SerpApi (SERPAPI_API_KEY) or the simulation server instead
    ... search.retrieval.url=http://127.0.0.1:8000/retrieve
    ... search.eval_engine=google
    ... search.eval_engine=simulate_sft search.simulation.servers=host:6001 search.simulation.model_name=NAME

    python -m zerosearch.eval --rescore traces.jsonl --out eval/rescored     # score a file, no generation
    python -m zerosearch.eval --compare eval/run_a eval/run_b --out eval/ab   # one table from several folders

--model takes a Hugging Face folder, a training run folder or its actor_hf/ (evaluated under the run's
config.yaml), or a checkpoint folder checkpoints/step_N (converted once into --out). a.b=c arguments are
config overrides (zerosearch/config/schema.py). Re-running the same command continues an interrupted run.
Outputs in --out: results.md, results.csv, results.png, trajectories.jsonl, config.json.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m zerosearch.eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="the results folder (created; an existing one is continued)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--model", help="model folder, run folder, actor_hf/ or checkpoints/step_N")
    mode.add_argument("--rescore", metavar="FILE", help="score an existing trajectories file without generating")
    mode.add_argument("--compare", nargs="+", metavar="DIR", help="merge the results of several folders")
    p.add_argument("--datasets", default="all",
                   help="all, or a comma list of nq,triviaqa,popqa,hotpotqa,2wikimultihopqa,musique,bamboogle and/or "
                        "QA files (.jsonl / .parquet / dataset folders)")
    p.add_argument("--methods", default="agent", help="a comma list of agent,direct,cot,rag")
    p.add_argument("--limit", type=int, default=None, help="rows per dataset: a fixed seeded subset (default: all)")
    p.add_argument("--seed", type=int, default=0, help="seed of the --limit subsets")
    p.add_argument("--batch-size", type=int, default=None, help="questions per batch (default data.val_batch_size)")
    p.add_argument("--name", default=None, help="the model's name in the tables (default: its folder's)")
    p.add_argument("--engine", choices=("hf", "vllm"), default=None, help="generation engine (rollout.engine)")
    p.add_argument("--noise-prob", type=float, default=None,
                   help="simulated eval engine: probability of noisy documents (default: the curriculum's start)")
    p.add_argument("--method-name", default=None, help="--rescore: method name for rows without one (traces)")
    p.add_argument("--no-progress", action="store_true", help="plain progress lines instead of a bar")
    p.add_argument("overrides", nargs="*", help="config overrides a.b=c")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from zerosearch.config.validate import ConfigError

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: {bad[0]!r} is not an override a.b=c", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        if args.compare:
            from zerosearch.eval.report import compare

            paths = compare([Path(d) for d in args.compare], out)
            print(paths["md"].read_text())
        elif args.rescore:
            from zerosearch.eval.rescore import rescore

            res = rescore(Path(args.rescore), out, args.overrides, args.method_name)
            print(res["paths"]["md"].read_text())
        else:
            from zerosearch.eval.harness import EvalOptions, evaluate
            from zerosearch.eval.subsets import parse_datasets

            overrides = list(args.overrides) + ([f"rollout.engine={args.engine}"] if args.engine else [])
            opts = EvalOptions(model=args.model, out_dir=out, datasets=parse_datasets(args.datasets),
                               methods=[m.strip() for m in args.methods.split(",") if m.strip()], limit=args.limit,
                               seed=args.seed, batch_size=args.batch_size, name=args.name, overrides=overrides,
                               noise_prob=args.noise_prob, progress=False if args.no_progress else None)
            res = evaluate(opts)
            print(res["paths"]["md"].read_text())
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out / "results.md", flush=True)  # the last line: where the table is
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
