"""`python -m zerosearch.infer`: ask a trained agent questions, with any search engine, and read its
trajectory turn by turn (the original's inference.py).

    python -m zerosearch.infer --model outputs/run/actor_hf --question "Who wrote Moby-Dick?" \\
        search.eval_engine=retrieval search.retrieval.corpus_path=wiki18.jsonl
    python -m zerosearch.infer --model outputs/run/actor_hf search.eval_engine=google     # interactive

--model takes what `python -m zerosearch.eval` takes (a model folder, a run folder or its actor_hf/, a
checkpoint folder); a run's model answers under the run's config.yaml. The search engine is
search.eval_engine (retrieval: local index or search.retrieval.url; google; simulate_sft / simulate_prompt,
which are conditioned on --answer when given). Decoding is greedy (rollout.val_temperature).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, TextIO

os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # before transformers is imported


class Agent:
    """A model, its config, tokenizer, generation and search engines, and the agent loop over them."""

    def __init__(self, model: str, overrides: list[str], work_dir: Path):
        from zerosearch.eval.models import build_generation, eval_config, resolve_model
        from zerosearch.reward import run_scorer
        from zerosearch.rollout.agent_loop import AgentLoop
        from zerosearch.search.factory import build_search_engine

        self.cfg = eval_config(resolve_model(model, work_dir), overrides)
        self.engine, self.tokenizer = build_generation(self.cfg)
        self.search = build_search_engine(self.cfg, role="eval")
        self.loop = AgentLoop(self.engine, self.search, self.tokenizer, self.cfg.rollout)
        self.score_fn = run_scorer(self.cfg)

    def ask(self, question: str, answers: tuple[str, ...] = (), n: int = 0) -> Any:
        """One greedy trajectory for `question` (answers, when given, condition a simulator and are scored)."""
        from zerosearch.data.qa import QARow
        from zerosearch.eval.baselines import build_items
        from zerosearch.generation.types import SamplingParams
        from zerosearch.utils.seeding import stable_seed

        row = QARow(f"infer/{n}", question, answers, "infer")
        items = build_items("agent", [row], self.tokenizer, self.cfg)
        t = self.cfg.rollout.val_temperature
        params = SamplingParams(temperature=t, seed=None if t <= 0 else stable_seed(self.cfg.trainer.seed, "infer", n))
        return self.loop.run(items, 1, params)[0]

    def close(self) -> None:
        self.search.close()
        close = getattr(self.engine, "close", None)
        if close is not None:
            close()


def print_trajectory(traj: Any, out: TextIO = sys.stdout, score_fn: Callable | None = None) -> None:
    """The response turn by turn: each policy turn, then the observation the environment inserted."""
    from zerosearch.reward import extract_answer
    from zerosearch.rollout.actions import split_response

    for i, turn in enumerate(split_response(traj.response_text), 1):
        print(f"--- turn {i} ---", file=out)
        print(turn.text.strip(), file=out)
        if turn.observation is not None:
            print(f"--- search results after turn {i} ---", file=out)
            print(turn.observation.strip(), file=out)
    s = traj.stats
    line = (f"=== answer: {extract_answer(traj.response_text)!r} ({s.turns} turns, {s.searches} searches, "
            f"ended: {s.stop_reason}{', truncated' if s.truncated else ''})")
    if score_fn is not None and traj.item.golden_answers:
        _, m = score_fn(traj.response_text, traj.item.golden_answers)
        line += f" cover-EM {m['cover_em']:.0f} EM {m['em']:.0f} F1 {m['f1']:.2f}"
    print(line, file=out, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zerosearch.infer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder, run folder, actor_hf/ or checkpoints/step_N")
    p.add_argument("--question", default=None, help="one question (default: read questions from stdin, one a line)")
    p.add_argument("--answer", action="append", default=[], help="a gold answer (repeatable): scored, and given to a simulator")
    p.add_argument("--work-dir", default=None, help="where a checkpoint is converted (default: a temporary folder)")
    p.add_argument("overrides", nargs="*", help="config overrides a.b=c")
    args = p.parse_args(argv)
    from zerosearch.config.validate import ConfigError

    with tempfile.TemporaryDirectory(prefix="zs_infer_") as tmp:
        try:
            agent = Agent(args.model, args.overrides, Path(args.work_dir or tmp))
        except (ConfigError, ValueError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            if args.question is not None:
                print_trajectory(agent.ask(args.question, tuple(args.answer)), score_fn=agent.score_fn)
                return 0
            interactive = sys.stdin.isatty()
            n = 0
            while True:
                if interactive:
                    print("question (empty line or Ctrl-D to quit)> ", end="", flush=True)
                line = sys.stdin.readline()
                if not line.strip():
                    return 0
                print_trajectory(agent.ask(line.strip(), tuple(args.answer), n), score_fn=agent.score_fn)
                n += 1
        finally:
            agent.close()


if __name__ == "__main__":
    raise SystemExit(main())
