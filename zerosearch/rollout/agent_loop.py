"""The multi-turn agent loop over token ids: generate -> parse action -> search -> append observation.

For a batch of prompts x n samples, each trajectory, turn after turn:
  1. generates until `</search>`, `</answer>` or end-of-sequence (engine stop strings / ids), keeping the
     sampled ids and their log-probs;
  2. its action is parsed: a search, an answer, or an invalid action (which gets a short corrective
     observation and is counted);
  3. a search is sent to the search engine, tied to its row;
  4. the result is formatted within `max_obs_length` tokens and appended as ids with loss mask 0.
After `max_turns` turns a final turn must answer: a search there is not sent (the original still sent
those requests and threw the results away). A trajectory that would outgrow `max_total_length` ends
cleanly, marked truncated; the prompt (and so the question) is never cut.

Those rules are `turns.TurnRules`, written once. Two drivers apply them (`rollout.mode`):
  sync   every live trajectory generates in one call, then the turn's searches go out together, then
         the next turn starts (the engine idles while the slowest search of the turn runs);
  async  `async_scheduler.AsyncScheduler`: a trajectory whose search returned goes back to generation
         while others still wait; the engine generates for whatever trajectories are ready.
With per-trajectory seeds both give every trajectory the same ids, masks and stop reasons (log-probs
bitwise when the engine computes each sequence on its own; tests/rollout/test_agent_loop_async.py).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from zerosearch.config.schema import RolloutConfig
from zerosearch.generation.types import GenerationEngine, SamplingParams
from zerosearch.rollout.turns import RolloutTiming, TurnRules, is_live, turn_params
from zerosearch.rollout.types import PromptItem, Trajectory
from zerosearch.search.types import SearchEngine, SearchRequest


class AgentLoop:
    """Runs rollouts of an agent against a search engine.

    Args:
        engine: generates turns (HF, vLLM, or a proxy over Ray workers).
        search: answers searches (simulated in training, real at evaluation).
        tokenizer: the agent's tokenizer (decodes turns, encodes observations).
        cfg: the rollout section of the run config (budgets, texts, mode; `zerosearch.config.schema.RolloutConfig`).
    """

    def __init__(self, engine: GenerationEngine, search: SearchEngine, tokenizer: Any, cfg: RolloutConfig):
        self.engine, self.search, self.tokenizer, self.cfg = engine, search, tokenizer, cfg
        self.stop_token_ids = tuple(sorted({i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id,
                                                        tokenizer.convert_tokens_to_ids("<|im_end|>"))
                                            if isinstance(i, int) and i >= 0 and i != tokenizer.unk_token_id}))
        self._invalid_ids = tokenizer.encode(cfg.invalid_action_text, add_special_tokens=False)
        self.timing: dict[str, float] = {}
        self._scheduler: Any = None  # the async driver, made on first use

    def run(self, items: Sequence[PromptItem], n: int, params: SamplingParams, *, step: int = 0,
            noise_prob: float | None = None) -> list[Trajectory]:
        """Roll out every item n times. Returns trajectories item-major: item0 s0..s(n-1), item1 s0, ...

        Args:
            params: sampling of every turn (stop strings and ids are added here).
            step: training step, passed to the search engine (curriculum noise).
            noise_prob: force this noise probability (validation at fixed noise); None = curriculum.

        After the call, `timing` holds gen / search / rollout seconds and the engine's idle share.
        """
        cfg = self.cfg
        rules = TurnRules(cfg, self.tokenizer, self._invalid_ids, step, noise_prob)
        trajs = rules.start(items, n, cfg.max_total_length)
        params = turn_params(params, cfg, self.stop_token_ids)
        t0 = time.perf_counter()
        if cfg.mode == "async":
            if self._scheduler is None:
                from zerosearch.rollout.async_scheduler import AsyncScheduler

                self._scheduler = AsyncScheduler(self.engine, self.search, cfg)
            timing = self._scheduler.run(rules, trajs, params)
        elif cfg.mode == "sync":
            timing = self._run_sync(rules, trajs, params)
        else:
            raise ValueError(f"rollout.mode={cfg.mode!r}: must be sync or async")
        timing.rollout = time.perf_counter() - t0
        rules.finish(trajs)
        self.timing = timing.as_dict()
        return trajs

    def _run_sync(self, rules: TurnRules, trajs: list[Trajectory], params: SamplingParams) -> RolloutTiming:
        """Turn by turn: all live trajectories generate together, then all their searches go out together."""
        timing = RolloutTiming()
        live = list(range(len(trajs)))
        while live:
            caps = {i: rules.generation_cap(trajs[i]) for i in live}
            gen_rows = [i for i in live if caps[i] > 0]
            if not gen_rows:
                break
            seeds = None if params.seed is None else [rules.seed(params, trajs[i]) for i in gen_rows]
            t0 = time.perf_counter()
            outs = self.engine.generate([trajs[i].prompt_ids + trajs[i].response_ids for i in gen_rows], params,
                                        [caps[i] for i in gen_rows], seeds)
            timing.gen += time.perf_counter() - t0
            timing.generate_calls += 1
            searching: list[int] = []
            requests: list[SearchRequest] = []
            for i, out in zip(gen_rows, outs):
                req = rules.after_generation(trajs[i], out)
                if req is not None:
                    searching.append(i)
                    requests.append(req)
            if requests:
                t0 = time.perf_counter()
                results = self.search.search(requests)
                timing.search += time.perf_counter() - t0
                timing.searches += len(requests)
                for i, res in zip(searching, results):
                    rules.after_search(trajs[i], res)
            live = [i for i in gen_rows if is_live(trajs[i])]
        return timing
